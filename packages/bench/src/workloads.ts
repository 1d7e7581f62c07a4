import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Isolation } from '../../../src/core/kinds.js';

/**
 * The harness's workloads, after SeBS and FunctionBench: the same function under every backend
 * that can run it. Inputs are generated inside the function from a seed, so that what is timed is
 * the function and not the transfer of its input. The WebAssembly builds (examples/wasm) compute
 * the same results as the JavaScript ones from the same parameters.
 */
export interface Workload {
  name: string;
  description: string;
  kind: 'nodejs:20' | 'wasm';
  /** JavaScript source, or a base64 module for wasm. */
  code: () => string;
  params: Record<string, unknown>;
  memoryMb: number;
  timeoutMs: number;
  /** Backends that cannot run it, and why. */
  unsupported?: Partial<Record<Isolation, string>>;
  /** Measured only in full runs (its cold start is long on emulated backends). */
  fullOnly?: Partial<Record<Isolation, string>>;
}

const example = (path: string) => () =>
  readFileSync(fileURLToPath(new URL(`../../../examples/${path}`, import.meta.url))).toString('base64');

export const HELLO_JS = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';

// A small deterministic generator every workload shares (no Math.random: results are comparable).
const PRNG =
  'function prng(seed) { let s = seed >>> 0 || 1; return () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 4294967296; }';

const JSON_TRANSFORM = `${PRNG}
function main(params) {
  const random = prng(params.seed);
  const records = Array.from({ length: params.records }, (_, i) => ({ id: i, user: 'user' + Math.floor(random() * 500), amount: Math.round(random() * 10000) / 100, tags: ['a', 'b', 'c', 'd'].filter(() => random() > 0.5), ts: 1700000000000 + i * 1000 }));
  const text = JSON.stringify(records);
  const parsed = JSON.parse(text);
  const byUser = {};
  for (const r of parsed) { if (r.amount < 5) continue; const u = (byUser[r.user] ??= { count: 0, total: 0 }); u.count++; u.total += r.amount; }
  const top = Object.entries(byUser).sort((a, b) => b[1].total - a[1].total).slice(0, 5).map(([user, v]) => ({ user, ...v }));
  return { bytes: text.length, users: Object.keys(byUser).length, top: JSON.parse(JSON.stringify(top)) };
}`;

// LZ77 with a hash of 3-byte prefixes: a compressor in plain JavaScript, so that every backend,
// the isolate included, runs the same code.
const COMPRESSION = `${PRNG}
function main(params) {
  const random = prng(params.seed);
  const words = ['function', 'serverless', 'isolation', 'container', 'snapshot', 'latency', 'memory', 'the', 'a', 'of'];
  let text = '';
  while (text.length < params.bytes) text += words[Math.floor(random() * words.length)] + (random() < 0.1 ? '\\n' : ' ');
  const input = new TextEncoder().encode(text);
  const out = [];
  const table = new Int32Array(1 << 15).fill(-1);
  let i = 0;
  while (i < input.length) {
    const h = i + 2 < input.length ? ((input[i] << 10) ^ (input[i + 1] << 5) ^ input[i + 2]) & 32767 : -1;
    const candidate = h >= 0 ? table[h] : -1;
    if (h >= 0) table[h] = i;
    let length = 0;
    if (candidate >= 0 && i - candidate < 65535) while (length < 258 && i + length < input.length && input[candidate + length] === input[i + length]) length++;
    if (length >= 4) { out.push(0xff, (i - candidate) >> 8, (i - candidate) & 255, length - 4); i += length; }
    else { out.push(input[i]); i++; }
  }
  return { input: input.length, output: out.length, ratio: Math.round((out.length / input.length) * 1000) / 1000 };
}`;

export const GRAPH_JS = `${PRNG}
function main(params) {
  const random = prng(params.seed);
  const n = params.nodes;
  const edges = Array.from({ length: n }, () => []);
  for (let e = 0; e < params.edges; e++) { const a = Math.floor(random() * n); const b = Math.floor(random() * n); edges[a].push(b); edges[b].push(a); }
  const depth = new Int32Array(n).fill(-1); depth[0] = 0; const queue = [0];
  for (let q = 0; q < queue.length; q++) for (const next of edges[queue[q]]) if (depth[next] < 0) { depth[next] = depth[queue[q]] + 1; queue.push(next); }
  let rank = new Float64Array(n).fill(1 / n);
  for (let it = 0; it < params.iterations; it++) {
    const next = new Float64Array(n).fill(0.15 / n);
    for (let v = 0; v < n; v++) { const share = (0.85 * rank[v]) / Math.max(1, edges[v].length); for (const w of edges[v]) next[w] += share; }
    rank = next;
  }
  let best = 0; for (let v = 1; v < n; v++) if (rank[v] > rank[best]) best = v;
  return { reached: queue.length, maxDepth: Math.max(...depth), topNode: best, topRank: Math.round(rank[best] * 1e6) / 1e6 };
}`;

// A thumbnail: bilinear downscaling of an RGBA image, as an image-resize function does after decoding.
const THUMBNAIL = `${PRNG}
function main(params) {
  const random = prng(params.seed);
  const w = params.width, h = params.height, tw = params.thumb, th = params.thumb;
  const src = new Uint8ClampedArray(w * h * 4);
  for (let i = 0; i < src.length; i++) src[i] = ((i >> 2) % w + (random() * 32)) & 255;
  const dst = new Uint8ClampedArray(tw * th * 4);
  for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) {
    const sx = (x * (w - 1)) / (tw - 1), sy = (y * (h - 1)) / (th - 1), x0 = Math.floor(sx), y0 = Math.floor(sy), x1 = Math.min(w - 1, x0 + 1), y1 = Math.min(h - 1, y0 + 1), fx = sx - x0, fy = sy - y0;
    for (let c = 0; c < 4; c++) {
      const a = src[(y0 * w + x0) * 4 + c], b = src[(y0 * w + x1) * 4 + c], d = src[(y1 * w + x0) * 4 + c], e = src[(y1 * w + x1) * 4 + c];
      dst[(y * tw + x) * 4 + c] = (a * (1 - fx) + b * fx) * (1 - fy) + (d * (1 - fx) + e * fx) * fy;
    }
  }
  let checksum = 0; for (const v of dst) checksum = (checksum * 31 + v) >>> 0;
  return { width: tw, height: th, checksum };
}`;

// Mixed CPU and I/O, after the workload of the WebAssembly study the wasm backend answers: hashes
// generated bytes (FNV-1a, `rounds` times), writes them to a scratch file in `chunk`-byte writes and
// reads them back. The AssemblyScript build (examples/wasm/assemblyscript/scratch.ts) writes to the
// wasm run's in-memory /tmp; this one to the sandbox's temporary directory (a container's /tmp tmpfs).
const SCRATCH_JS = `${PRNG}
function main(params) {
  const fs = require('fs');
  const random = prng(params.seed);
  const { rounds, bytes, chunk } = params;
  const fnv = (data, hash) => { let h = hash; for (let i = 0; i < data.length; i++) h = Math.imul(h ^ data[i], 16777619) >>> 0; return h; };
  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = random() * 256;
  let hash = 2166136261;
  for (let r = 0; r < rounds; r++) hash = fnv(data, hash);
  const path = require('os').tmpdir() + '/isola-scratch-' + process.pid + '.bin';
  const out = fs.openSync(path, 'w');
  for (let offset = 0; offset < bytes; offset += chunk) fs.writeSync(out, data, offset, Math.min(chunk, bytes - offset));
  fs.closeSync(out);
  const back = new Uint8Array(bytes);
  const input = fs.openSync(path, 'r');
  let read = 0;
  while (read < bytes) { const got = fs.readSync(input, back, read, Math.min(chunk, bytes - read), null); if (got === 0) break; read += got; }
  fs.closeSync(input);
  fs.unlinkSync(path);
  return { bytes, hash, readBack: read === bytes && fnv(back, 2166136261) === fnv(data, 2166136261) };
}`;

/** The mixed workload's parameters: 64 KB hashed ten times, then written and read in 4 KB pieces. */
export const SCRATCH_PARAMS = { seed: 7, rounds: 10, bytes: 65536, chunk: 4096 };

const FIB_JS =
  'function main(params) { let a = 0n, b = 1n; for (let i = 0; i < params.n; i++) [a, b] = [b, a + b]; return { n: params.n, fib: a.toString() }; }';

const ML_BUILD = fileURLToPath(new URL('../../../examples/ml/build/classify.cjs', import.meta.url));

/** Builds the ML example's bundle if it is not built yet. */
export async function ensureMlBundle(): Promise<string> {
  if (!existsSync(ML_BUILD)) {
    const { buildClassifier } = (await import(fileURLToPath(new URL('../../../examples/ml/build.mjs', import.meta.url)))) as {
      buildClassifier: () => Promise<string>;
    };
    await buildClassifier();
  }
  return ML_BUILD;
}

const NO_NODE = 'needs Node.js APIs (the isolate has none)';

export const WORKLOADS: Workload[] = [
  {
    name: 'hello',
    description: 'returns a greeting',
    kind: 'nodejs:20',
    code: () => HELLO_JS,
    params: { name: 'bench' },
    memoryMb: 256,
    timeoutMs: 60_000,
  },
  {
    name: 'hello',
    description: 'returns a greeting (AssemblyScript, reactor ABI)',
    kind: 'wasm',
    code: example('wasm/greet.wasm'),
    params: { name: 'bench' },
    memoryMb: 64,
    timeoutMs: 60_000,
  },
  {
    name: 'json',
    description: 'builds, serialises, parses and aggregates 2,000 records',
    kind: 'nodejs:20',
    code: () => JSON_TRANSFORM,
    params: { seed: 7, records: 2000 },
    memoryMb: 256,
    timeoutMs: 60_000,
  },
  {
    name: 'compression',
    description: 'LZ77-compresses 64 KB of text',
    kind: 'nodejs:20',
    code: () => COMPRESSION,
    params: { seed: 7, bytes: 65536 },
    memoryMb: 256,
    timeoutMs: 60_000,
  },
  {
    name: 'compression',
    description: 'LZ77-compresses 64 KB of text (AssemblyScript, reactor ABI)',
    kind: 'wasm',
    code: example('wasm/compression.wasm'),
    params: { seed: 7, bytes: 65536 },
    memoryMb: 64,
    timeoutMs: 60_000,
  },
  {
    name: 'graph',
    description: 'BFS and 10 PageRank iterations on 5,000 nodes and 20,000 edges',
    kind: 'nodejs:20',
    code: () => GRAPH_JS,
    params: { seed: 7, nodes: 5000, edges: 20000, iterations: 10 },
    memoryMb: 256,
    timeoutMs: 60_000,
  },
  {
    name: 'graph',
    description: 'BFS and 10 PageRank iterations on 5,000 nodes and 20,000 edges (AssemblyScript, reactor ABI)',
    kind: 'wasm',
    code: example('wasm/graph.wasm'),
    params: { seed: 7, nodes: 5000, edges: 20000, iterations: 10 },
    memoryMb: 64,
    timeoutMs: 60_000,
  },
  {
    name: 'thumbnail',
    description: 'bilinear thumbnail (64x64) of a 512x512 RGBA image',
    kind: 'nodejs:20',
    code: () => THUMBNAIL,
    params: { seed: 7, width: 512, height: 512, thumb: 64 },
    memoryMb: 256,
    timeoutMs: 60_000,
  },
  {
    name: 'thumbnail',
    description: 'bilinear thumbnail (64x64) of a 512x512 RGBA image (AssemblyScript, reactor ABI)',
    kind: 'wasm',
    code: example('wasm/thumbnail.wasm'),
    params: { seed: 7, width: 512, height: 512, thumb: 64 },
    memoryMb: 64,
    timeoutMs: 60_000,
  },
  {
    name: 'fib',
    description: 'Fibonacci of 78 with big integers',
    kind: 'nodejs:20',
    code: () => FIB_JS,
    params: { n: 78 },
    memoryMb: 256,
    timeoutMs: 60_000,
  },
  {
    name: 'fib',
    description: 'Fibonacci of 78 (Rust, reactor ABI; exact as a string, like the JavaScript version)',
    kind: 'wasm',
    code: example('wasm/fib.wasm'),
    params: { n: 78 },
    memoryMb: 64,
    timeoutMs: 60_000,
  },
  {
    name: 'scratch',
    description: 'mixed CPU and I/O: hashes 64 KB ten times, writes it to a scratch file in 4 KB writes and reads it back',
    kind: 'nodejs:20',
    code: () => SCRATCH_JS,
    params: SCRATCH_PARAMS,
    memoryMb: 256,
    timeoutMs: 60_000,
    unsupported: { isolate: NO_NODE },
    fullOnly: {
      microvm: 'hashing and file I/O under an emulated CPU (TCG) take seconds a call',
      vm: 'hashing and file I/O under an emulated CPU (TCG) take seconds a call',
    },
  },
  {
    name: 'scratch',
    description: "mixed CPU and I/O, writing to the run's in-memory /tmp (AssemblyScript, reactor ABI)",
    kind: 'wasm',
    code: example('wasm/scratch.wasm'),
    params: SCRATCH_PARAMS,
    memoryMb: 64,
    timeoutMs: 60_000,
  },
  {
    name: 'ml',
    description: 'MobileNetV2 image classification (nsfwjs on TensorFlow.js, WebAssembly backend)',
    kind: 'nodejs:20',
    code: () => readFileSync(ML_BUILD, 'utf8'),
    params: { seed: 3 },
    memoryMb: 512,
    timeoutMs: 300_000,
    unsupported: { isolate: NO_NODE },
    fullOnly: {
      microvm: 'loading the model under an emulated CPU (TCG) takes about 40 s',
      vm: 'loading the model under an emulated CPU (TCG) takes about 40 s',
    },
  },
];

export const WORKLOAD_NAMES = [...new Set(WORKLOADS.map((w) => w.name))];
