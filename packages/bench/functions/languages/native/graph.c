#include <math.h>
#include <stdint.h>

#include "actionloop.h"

static uint32_t state;

static double next_random(void) {
  state = state * 1664525u + 1013904223u;
  return state / 4294967296.0;
}

static void graph(const char *line, FILE *result) {
  state = (uint32_t)number_field(line, "seed", 0);
  if (state == 0) state = 1;
  long n = number_field(line, "nodes", 1), m = number_field(line, "edges", 0);
  long iterations = number_field(line, "iterations", 0);
  if (n < 1) n = 1;
  if (m < 0) m = 0;
  int *from = malloc(sizeof(int) * m), *to = malloc(sizeof(int) * m), *degree = calloc(n, sizeof(int));
  for (long e = 0; e < m; e++) {
    from[e] = (int)floor(next_random() * n);
    to[e] = (int)floor(next_random() * n);
    degree[from[e]]++;
    degree[to[e]]++;
  }
  /* Adjacency lists in one array, each list in the order the edges were drawn. */
  long *start = calloc(n + 1, sizeof(long));
  for (long v = 0; v < n; v++) start[v + 1] = start[v] + degree[v];
  long *fill = calloc(n, sizeof(long));
  int *adjacent = malloc(sizeof(int) * 2 * (m > 0 ? m : 1));
  for (long e = 0; e < m; e++) {
    adjacent[start[from[e]] + fill[from[e]]++] = to[e];
    adjacent[start[to[e]] + fill[to[e]]++] = from[e];
  }
  int *depth = malloc(sizeof(int) * n), *queue = malloc(sizeof(int) * n);
  for (long v = 0; v < n; v++) depth[v] = -1;
  depth[0] = 0;
  queue[0] = 0;
  long length = 1;
  for (long q = 0; q < length; q++) {
    int v = queue[q];
    for (long i = start[v]; i < start[v + 1]; i++) {
      int next = adjacent[i];
      if (depth[next] < 0) {
        depth[next] = depth[v] + 1;
        queue[length++] = next;
      }
    }
  }
  double *rank = malloc(sizeof(double) * n), *next = malloc(sizeof(double) * n);
  for (long v = 0; v < n; v++) rank[v] = 1.0 / n;
  for (long it = 0; it < iterations; it++) {
    for (long v = 0; v < n; v++) next[v] = 0.15 / n;
    for (long v = 0; v < n; v++) {
      double share = (0.85 * rank[v]) / (degree[v] > 1 ? degree[v] : 1);
      for (long i = start[v]; i < start[v + 1]; i++) next[adjacent[i]] += share;
    }
    double *swap = rank;
    rank = next;
    next = swap;
  }
  long best = 0;
  int max_depth = -1;
  for (long v = 1; v < n; v++)
    if (rank[v] > rank[best]) best = v;
  for (long v = 0; v < n; v++)
    if (depth[v] > max_depth) max_depth = depth[v];
  fprintf(result, "{\"reached\": %ld, \"maxDepth\": %d, \"topNode\": %ld, \"topRank\": %.17g}", length, max_depth, best,
          floor(rank[best] * 1e6 + 0.5) / 1e6);
  free(from), free(to), free(degree), free(start), free(fill), free(adjacent), free(depth), free(queue), free(rank), free(next);
}

int main(void) { return action_loop(graph); }
