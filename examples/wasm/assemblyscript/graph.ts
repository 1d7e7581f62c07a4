// The graph workload in AssemblyScript: BFS and PageRank on the same generated graph as the
// JavaScript version (adjacency kept in insertion order, so the floating-point sums agree).
//   build: npx asc graph.ts -o graph.wasm --runtime stub -O3 --noAssert
import { integerField, Prng, paramError, paramErrorResult, result } from './params';

export { isola_alloc } from './params';

export function isola_handle(pointer: usize, length: i32): u64 {
  const params = String.UTF8.decodeUnsafe(pointer, <usize>length);
  const random = new Prng(<u32>integerField(params, 'seed', 1, 0, 4294967295));
  const n = <i32>integerField(params, 'nodes', 5000, 1, 1000000);
  const edgeCount = <i32>integerField(params, 'edges', 20000, 0, 5000000);
  const iterations = <i32>integerField(params, 'iterations', 10, 0, 1000);
  if (paramError.length > 0) return paramErrorResult();
  // Compressed adjacency: count degrees, then place each endpoint in the order it was added.
  const from = new Int32Array(edgeCount);
  const to = new Int32Array(edgeCount);
  const degree = new Int32Array(n);
  for (let e = 0; e < edgeCount; e++) {
    const a = <i32>Math.floor(random.next() * <f64>n);
    const b = <i32>Math.floor(random.next() * <f64>n);
    from[e] = a;
    to[e] = b;
    degree[a]++;
    degree[b]++;
  }
  const start = new Int32Array(n + 1);
  for (let v = 0; v < n; v++) start[v + 1] = start[v] + degree[v];
  const fill = new Int32Array(n);
  const adjacent = new Int32Array(edgeCount * 2);
  for (let e = 0; e < edgeCount; e++) {
    const a = from[e];
    const b = to[e];
    adjacent[start[a] + fill[a]++] = b;
    adjacent[start[b] + fill[b]++] = a;
  }
  const depth = new Int32Array(n).fill(-1);
  depth[0] = 0;
  const queue = new Int32Array(n);
  let tail = 1;
  for (let q = 0; q < tail; q++) {
    const v = queue[q];
    for (let k = start[v]; k < start[v + 1]; k++) {
      const next = adjacent[k];
      if (depth[next] < 0) {
        depth[next] = depth[v] + 1;
        queue[tail++] = next;
      }
    }
  }
  let rank = new Float64Array(n).fill(1.0 / <f64>n);
  for (let it = 0; it < iterations; it++) {
    const next = new Float64Array(n).fill(0.15 / <f64>n);
    for (let v = 0; v < n; v++) {
      const share = (0.85 * rank[v]) / <f64>max(1, degree[v]);
      for (let k = start[v]; k < start[v + 1]; k++) next[adjacent[k]] += share;
    }
    rank = next;
  }
  let best = 0;
  for (let v = 1; v < n; v++) if (rank[v] > rank[best]) best = v;
  let maxDepth = -1;
  for (let v = 0; v < n; v++) if (depth[v] > maxDepth) maxDepth = depth[v];
  const topRank = Math.round(rank[best] * 1e6) / 1e6;
  return result(`{"reached":${tail},"maxDepth":${maxDepth},"topNode":${best},"topRank":${topRank}}`);
}
