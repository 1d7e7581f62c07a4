/*
 * A WASI command module in C: the parameters arrive as JSON on stdin, the result goes to stdout as
 * JSON, and whatever goes to stderr is recorded in the activation's logs. Action parameters are
 * also in the environment (here GREETING).
 *   build: clang --target=wasm32-wasi -O2 -s -o wordcount.wasm wordcount.c
 *
 * `{"text": "a b c"}` gives `{"words":3,...}`; without a `text`, or with one that is not a string,
 * it answers with an error result.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t skip_space(const char *json, size_t i) {
  while (json[i] == ' ' || json[i] == '\t' || json[i] == '\n' || json[i] == '\r') i++;
  return i;
}

/* The index just after the string that starts at i, or 0 when it does not end. */
static size_t skip_string(const char *json, size_t i) {
  for (i++; json[i]; i++) {
    if (json[i] == '\\') {
      if (!json[++i]) return 0;
    } else if (json[i] == '"') {
      return i + 1;
    }
  }
  return 0;
}

/* The index just after the value that starts at i, or 0. */
static size_t skip_value(const char *json, size_t i) {
  if (json[i] == '"') return skip_string(json, i);
  if (json[i] == '{' || json[i] == '[') {
    int depth = 0;
    while (json[i]) {
      if (json[i] == '"') {
        i = skip_string(json, i);
        if (!i) return 0;
        continue;
      }
      if (json[i] == '{' || json[i] == '[') depth++;
      else if ((json[i] == '}' || json[i] == ']') && --depth == 0) return i + 1;
      i++;
    }
    return 0;
  }
  size_t start = i;
  while (json[i] && !strchr(",}] \t\n\r", json[i])) i++;
  return i > start ? i : 0;
}

/*
 * The raw JSON text of a top-level field's value (not a key or a value nested in another), without
 * a JSON library: enough for an example. NULL when absent.
 */
static const char *top_level_field(const char *json, const char *field, size_t *length) {
  size_t i = skip_space(json, 0);
  if (json[i] != '{') return NULL;
  i++;
  for (;;) {
    i = skip_space(json, i);
    if (json[i] != '"') return NULL;
    size_t key_end = skip_string(json, i);
    if (!key_end) return NULL;
    int match = key_end - i - 2 == strlen(field) && strncmp(json + i + 1, field, strlen(field)) == 0;
    i = skip_space(json, key_end);
    if (json[i] != ':') return NULL;
    size_t start = skip_space(json, i + 1);
    size_t end = skip_value(json, start);
    if (!end) return NULL;
    if (match) {
      *length = end - start;
      return json + start;
    }
    i = skip_space(json, end);
    if (json[i] != ',') return NULL;
    i++;
  }
}

/* Prints text as the body of a JSON string. */
static void print_escaped(const char *text, size_t length) {
  for (size_t i = 0; i < length; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c == '"' || c == '\\') printf("\\%c", c);
    else if (c < 0x20) printf("\\u%04x", c);
    else putchar(c);
  }
}

int main(void) {
  static char input[1 << 20];
  size_t n = fread(input, 1, sizeof input - 1, stdin);
  input[n] = '\0';
  size_t length = 0;
  const char *text = top_level_field(input, "text", &length);
  if (!text || length < 2 || text[0] != '"') {
    printf("{\"error\":\"wordcount needs the parameter text, a string; got ");
    if (text) print_escaped(text, length < 40 ? length : 40);
    else printf("none");
    printf(".\"}\n");
    return 0;
  }
  /* The string's body, escapes and all: an escape sequence is never a space. */
  text++;
  length -= 2;
  int words = 0, in_word = 0;
  size_t characters = 0;
  for (size_t i = 0; i < length; i++) {
    int space = isspace((unsigned char)text[i]);
    if (text[i] == '\\') {
      /* \n, \t and \r are white space; other escapes stand for one character of a word. */
      char escaped = text[i + 1];
      space = escaped == 'n' || escaped == 't' || escaped == 'r';
      i += escaped == 'u' ? 5 : 1;
    }
    /* UTF-8 continuation bytes are part of the character before them. */
    if (((unsigned char)text[i] & 0xC0) != 0x80) characters++;
    if (space) in_word = 0;
    else if (!in_word) { in_word = 1; words++; }
  }
  fprintf(stderr, "counted %d words in %zu characters\n", words, characters);
  const char *greeting = getenv("GREETING");
  printf("{\"words\":%d,\"characters\":%zu,\"greeting\":\"", words, characters);
  if (greeting) print_escaped(greeting, strlen(greeting));
  printf("\",\"language\":\"C\"}\n");
  return 0;
}
