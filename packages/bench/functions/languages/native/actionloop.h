/*
 * OpenWhisk's ActionLoop protocol for a native function: one JSON line per activation on stdin,
 * the result as one JSON line on fd 3, then the end-of-activation sentinel on stdout and stderr.
 * Includes a minimal reader for the flat parameters these functions take.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SENTINEL "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"

/* The value of `key` inside the request's "value" object: a pointer just past its colon. */
static const char *field(const char *line, const char *key) {
  const char *value = strstr(line, "\"value\"");
  if (!value) return NULL;
  char quoted[128];
  snprintf(quoted, sizeof quoted, "\"%s\"", key);
  const char *at = strstr(value, quoted);
  if (!at) return NULL;
  at += strlen(quoted);
  while (*at == ' ' || *at == ':') at++;
  return at;
}

static long number_field(const char *line, const char *key, long fallback) {
  const char *at = field(line, key);
  return at ? strtol(at, NULL, 10) : fallback;
}

/* A JSON string field, unescaped for the simple escapes; empty when absent or not a string. */
static void string_field(const char *line, const char *key, char *out, size_t size) {
  const char *at = field(line, key);
  size_t n = 0;
  if (at && *at == '"') {
    for (at++; *at && *at != '"' && n + 1 < size; at++) {
      if (*at == '\\' && at[1]) at++;
      out[n++] = *at;
    }
  }
  out[n] = '\0';
}

/* Writes `text` as the body of a JSON string. */
static void json_string(FILE *out, const char *text) {
  for (const unsigned char *c = (const unsigned char *)text; *c; c++) {
    if (*c == '"' || *c == '\\') fprintf(out, "\\%c", *c);
    else if (*c < 0x20) fprintf(out, "\\u%04x", *c);
    else fputc(*c, out);
  }
}

/* Serves activations until stdin closes; `run` writes one JSON object (no newline). */
static int action_loop(void (*run)(const char *line, FILE *result)) {
  FILE *result = fdopen(3, "w");
  if (!result) {
    perror("fd 3");
    return 1;
  }
  if (getenv("__OW_WAIT_FOR_ACK")) {
    fputs("{\"ok\": true}\n", result);
    fflush(result);
  }
  char *line = NULL;
  size_t capacity = 0;
  while (getline(&line, &capacity, stdin) > 0) {
    run(line, result);
    fputc('\n', result);
    fflush(result);
    fputs(SENTINEL "\n", stdout);
    fputs(SENTINEL "\n", stderr);
    fflush(stdout);
    fflush(stderr);
  }
  free(line);
  return 0;
}
