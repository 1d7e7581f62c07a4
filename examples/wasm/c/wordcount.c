/*
 * A WASI command module in C: the parameters arrive as JSON on stdin, the result goes to stdout as
 * JSON, and whatever goes to stderr is recorded in the activation's logs. Action parameters are
 * also in the environment (here GREETING).
 *   build: clang --target=wasm32-wasi -O2 -s -o wordcount.wasm wordcount.c
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The string value of a top-level field, without a JSON library: enough for an example. */
static const char *string_field(const char *json, const char *field, size_t *length) {
  char key[64];
  snprintf(key, sizeof key, "\"%s\"", field);
  const char *at = strstr(json, key);
  if (!at) return NULL;
  const char *open = strchr(strchr(at + strlen(key), ':'), '"');
  if (!open) return NULL;
  const char *close = strchr(open + 1, '"');
  if (!close) return NULL;
  *length = (size_t)(close - open - 1);
  return open + 1;
}

int main(void) {
  static char input[1 << 20];
  size_t n = fread(input, 1, sizeof input - 1, stdin);
  input[n] = '\0';
  size_t length = 0;
  const char *text = string_field(input, "text", &length);
  int words = 0, in_word = 0;
  for (size_t i = 0; text && i < length; i++) {
    if (isspace((unsigned char)text[i])) in_word = 0;
    else if (!in_word) { in_word = 1; words++; }
  }
  fprintf(stderr, "counted %d words in %zu characters\n", words, length);
  const char *greeting = getenv("GREETING");
  printf("{\"words\":%d,\"characters\":%zu,\"greeting\":\"%s\",\"language\":\"C\"}\n", words, length, greeting ? greeting : "");
  return 0;
}
