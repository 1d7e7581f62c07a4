/*
 * The resources benchmark's CPU and memory kernels in C, for the wasm backend (a WASI command:
 * parameters as JSON on stdin, the result as JSON on stdout) and bare on the host (the same file
 * compiled natively), so that wasm's figures are against the same code run bare. The same work
 * as the JavaScript function's: xorshift32 steps for `ms` milliseconds, copies of a 64 MiB buffer
 * for `ms` milliseconds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MIB (1024 * 1024)
#define COPY_BYTES (64 * MIB)

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

/* Million xorshift32 steps per second. */
static double cpu(double ms) {
  uint32_t x = 2463534242u;
  double steps = 0, elapsed, start = now_ms();
  while ((elapsed = now_ms() - start) < ms) {
    for (int i = 0; i < 100000; i++) {
      x ^= x << 13;
      x ^= x >> 17;
      x ^= x << 5;
    }
    steps += 100000;
  }
  if (x == 0) return -1; /* keeps the loop's result alive */
  return steps / (elapsed / 1000) / 1e6;
}

/* Where each copy's destination is published: the copies cannot be optimised away as unread. */
static uint8_t *volatile copied;

/* GB/s copied from one 64 MiB buffer to another. */
static double memory(double ms) {
  uint8_t *a = malloc(COPY_BYTES), *b = malloc(COPY_BYTES);
  if (!a || !b) return -1;
  memset(a, 7, COPY_BYTES);
  memset(b, 1, COPY_BYTES);
  double copies = 0, elapsed, start = now_ms();
  while ((elapsed = now_ms() - start) < ms) {
    /* A copy of a constant size: with bulk memory, wasm's memory.copy, as a native memcpy. */
    __builtin_memcpy(b, a, COPY_BYTES);
    copied = b;
    copies++;
  }
  int landed = b[12345] == 7;
  free(a);
  free(b);
  return landed ? copies * COPY_BYTES / (elapsed / 1000) / 1e9 : -1;
}

int main(void) {
  static char input[4096];
  size_t length = fread(input, 1, sizeof input - 1, stdin);
  input[length] = 0;
  const char *ms_at = strstr(input, "\"ms\":");
  double ms = ms_at ? atof(ms_at + 5) : 1000;
  int want_cpu = strstr(input, "\"cpu\"") != NULL, want_memory = strstr(input, "\"memory\"") != NULL;
  printf("{");
  if (want_cpu) printf("\"cpu\":%.3f", cpu(ms));
  if (want_memory) printf("%s\"memory\":%.3f", want_cpu ? "," : "", memory(ms));
  printf("}\n");
  return 0;
}
