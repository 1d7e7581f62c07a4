/**
 * Where an idle Python instance under wasm (Pyodide) spends its memory. The server's PSS by what
 * holds it (WebAssembly linear memory, code V8 compiled, other anonymous memory: the JavaScript
 * heaps, malloc, thread stacks; mapped files), before and after IDLE new functions have each
 * answered once and stay idle. Beside it, in this process: what a worker thread with
 * the same resource limits costs doing nothing, and what one costs that has compiled Pyodide's
 * WebAssembly module (whether V8 shares the compiled code between threads). Writes
 * packages/bench/results/python-memory.{json,md}.
 *
 *   npm run bench:python-memory [-- --quick]
 */

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { findPyodide } from '../../../src/sandbox/wasm/python-sandbox.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { type MemoryBreakdown, memoryBreakdownMib, round } from '../src/pss.js';
import { pause } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const IDLE = quick ? 3 : 6;
const log = (message: string) => process.stderr.write(`${message}\n`);

const FUNCTION = `
def main(args):
    return {'greeting': 'Hello ' + args.get('name', 'world')}
`;

const KINDS: (keyof MemoryBreakdown)[] = ['wasmLinear', 'jitCode', 'otherAnonymous', 'files'];

function perInstance(before: MemoryBreakdown, after: MemoryBreakdown, n: number): MemoryBreakdown & { total: number } {
  const out = Object.fromEntries(KINDS.map((k) => [k, round((after[k] - before[k]) / n)])) as unknown as MemoryBreakdown;
  return { ...out, total: round(KINDS.reduce((sum, k) => sum + (after[k] - before[k]), 0) / n) };
}

type Variant = 'empty' | 'module' | 'pyodide';

/** What a worker reports of its own isolate once it is ready. */
interface WorkerHeap {
  heapUsedMb: number;
  heapTotalMb: number;
  externalMb: number;
  arrayBuffersMb: number;
  codeSpaceMb: number;
  linearMemoryMb?: number;
}

const REPORT_HEAP = `
const v8 = require('node:v8');
const report = (linear) => {
  const usage = process.memoryUsage();
  const mb = (x) => Math.round((x / 1048576) * 10) / 10;
  const code = v8.getHeapSpaceStatistics().filter((s) => s.space_name.includes('code')).reduce((sum, s) => sum + s.space_used_size, 0);
  parentPort.postMessage({ heapUsedMb: mb(usage.heapUsed), heapTotalMb: mb(usage.heapTotal), externalMb: mb(usage.external), arrayBuffersMb: mb(usage.arrayBuffers), codeSpaceMb: mb(code), ...(linear ? { linearMemoryMb: mb(linear) } : {}) });
};`;

/**
 * Starts `n` worker threads in this process (the Python sandbox's resource limits), each doing
 * nothing, holding Pyodide's module compiled (its bytes in shared memory, as the backend hands
 * them over), or running Pyodide started from nothing; this process's memory per thread, and what
 * the first worker says of its own isolate.
 */
async function bareWorkers(
  n: number,
  variant: Variant,
  pyodideDir: string,
): Promise<{ perThread: MemoryBreakdown & { total: number }; heap: WorkerHeap }> {
  let workerData: unknown;
  let body: string;
  if (variant === 'module') {
    const file = readFileSync(join(pyodideDir, 'pyodide.asm.wasm'));
    const shared = new Uint8Array(new SharedArrayBuffer(file.length));
    shared.set(file);
    workerData = shared;
    body = `const { workerData, parentPort } = require('node:worker_threads');${REPORT_HEAP}
globalThis.kept = new WebAssembly.Module(workerData); report(); setInterval(() => {}, 1 << 30);`;
  } else if (variant === 'pyodide') {
    workerData = { url: pathToFileURL(join(pyodideDir, 'pyodide.mjs')).href, indexURL: `${pyodideDir}/` };
    body = `const { workerData, parentPort } = require('node:worker_threads');${REPORT_HEAP}
import(workerData.url).then(async ({ loadPyodide }) => {
  const py = await loadPyodide({ indexURL: workerData.indexURL });
  py.runPython('import json, sys; json.dumps({"ready": sys.version})');
  globalThis.kept = py;
  report(py._module.HEAP8.length);
  setInterval(() => {}, 1 << 30);
});`;
  } else body = `const { parentPort } = require('node:worker_threads');${REPORT_HEAP}\nreport(); setInterval(() => {}, 1 << 30);`;
  await pause(1000);
  const before = memoryBreakdownMib(process.pid);
  const workers: Worker[] = [];
  const heaps: WorkerHeap[] = [];
  try {
    for (let i = 0; i < n; i++) {
      // Pyodide's own heap is past the V8 limits of a Python sandbox's worker only while it starts from nothing.
      const worker = new Worker(body, {
        eval: true,
        workerData,
        ...(variant === 'pyodide' ? {} : { resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 16 } }),
      });
      workers.push(worker);
      heaps.push(
        await new Promise<WorkerHeap>((resolve, reject) => {
          worker.once('message', resolve);
          worker.once('error', reject);
        }),
      );
    }
    await pause(1000);
    return { perThread: perInstance(before, memoryBreakdownMib(process.pid), n), heap: heaps[0] as WorkerHeap };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

async function main() {
  const started = Date.now();
  const pyodide = findPyodide();
  if (!pyodide) throw new Error('npm pyodide is not installed');
  const server = await ServerProcess.start({
    env: { ISOLA_BACKENDS: 'wasm', ISOLA_PREWARM: 'wasm:0', ISOLA_LOG_LEVEL: 'error' },
  });
  let idle: MemoryBreakdown & { total: number };
  try {
    const call = async (name: string) => {
      const deployed = await server.deploy(name, FUNCTION, {
        exec: { kind: 'python:3' },
        limits: { memory: 256, timeout: 300_000 },
        annotations: [{ key: 'isolation', value: 'wasm' }],
      });
      if (deployed.status !== 200) throw new Error(`deploy: ${JSON.stringify(deployed.body)}`);
      const record = (await server.invokeToEnd<{ response: { status: string } }>(name, {}, 600_000)).body;
      if (record.response.status !== 'success') throw new Error(`${name}: ${JSON.stringify(record.response)}`);
    };
    // The first start makes Pyodide's snapshot; the second is an ordinary one. Neither is counted.
    await call('python-first');
    await call('python-second');
    await pause(1000);
    const pid = server.pid as number;
    const before = memoryBreakdownMib(pid);
    for (let i = 0; i < IDLE; i++) await call(`python-idle-${i}`);
    await pause(1000);
    idle = perInstance(before, memoryBreakdownMib(pid), IDLE);
  } finally {
    await server.dispose();
  }
  log(`per idle Python instance: ${JSON.stringify(idle)}`);
  const workers = {} as Record<Variant, Awaited<ReturnType<typeof bareWorkers>>>;
  for (const variant of ['empty', 'module', 'pyodide'] as const) {
    workers[variant] = await bareWorkers(variant === 'pyodide' ? 2 : IDLE, variant, pyodide);
    log(`per worker, ${variant}: ${JSON.stringify(workers[variant])}`);
  }

  const host = hostInfo();
  const tookS = Math.round((Date.now() - started) / 1000);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(
    join(outDir, 'python-memory.json'),
    `${JSON.stringify({ host, tookS, idleInstances: IDLE, perIdleInstance: idle, workers }, null, 2)}\n`,
  );
  const row = (name: string, b: MemoryBreakdown & { total: number }) =>
    `| ${name} | ${b.total} | ${b.wasmLinear} | ${b.jitCode} | ${b.otherAnonymous} | ${b.files} |`;
  writeFileSync(
    join(outDir, 'python-memory.md'),
    [
      '# Where an idle Python instance under wasm spends its memory (npm run bench:python-memory)',
      '',
      `Host: ${JSON.stringify(host)}. Took ${tookS} s.`,
      '',
      `PSS in MB per instance, from /proc/<pid>/smaps before and after ${IDLE} of them, by what holds it: WebAssembly linear memory (read-write mappings followed by their guard region), code V8 compiled (anonymous executable mappings), other anonymous memory (JavaScript heaps, malloc, thread stacks) and mapped files.`,
      '',
      '| what | total | linear memory | compiled code | other anonymous | files |',
      '| --- | ---: | ---: | ---: | ---: | ---: |',
      row('an idle python:3 instance under wasm (the server)', idle),
      row('an empty worker thread, same resource limits', workers.empty.perThread),
      row("a worker thread holding Pyodide's module compiled (its bytes in shared memory)", workers.module.perThread),
      row('a worker thread running Pyodide started from nothing (2 of them)', workers.pyodide.perThread),
      '',
      "What each worker's own isolate reports (`process.memoryUsage()` and V8's code spaces inside it), MB:",
      '',
      '| worker | JavaScript heap used / total | external (of which array buffers) | JavaScript code | Pyodide linear memory |',
      '| --- | ---: | ---: | ---: | ---: |',
      ...(['empty', 'module', 'pyodide'] as const).map((v) => {
        const h = workers[v].heap;
        return `| ${v} | ${h.heapUsedMb} / ${h.heapTotalMb} | ${h.externalMb} (${h.arrayBuffersMb}) | ${h.codeSpaceMb} | ${h.linearMemoryMb ?? '–'} |`;
      }),
      '',
    ].join('\n'),
  );
  log(`wrote ${join(outDir, 'python-memory.json')} and .md`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
