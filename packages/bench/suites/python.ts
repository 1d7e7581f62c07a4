/**
 * Python through WebAssembly (python:3 on isolation wasm: CPython compiled by Pyodide, one
 * interpreter per instance restored from a memory snapshot) against CPython on the process-like
 * backends (process, container, microvm restored from its base snapshot), the same function
 * through the API in one run, the backends taken in turns: a cold start of a new function, a warm
 * call, and a CPU-bound workload timed inside the function. Writes packages/bench/results/python.{json,md}.
 *
 *   npm run bench:python [-- --quick]
 */

import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../../../src/core/types.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { pssMib, round } from '../src/pss.js';
import { ratio, summarize, time } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const N = { cold: quick ? 2 : 6, warm: quick ? 20 : 60, cpu: quick ? 2 : 5, pooled: quick ? 2 : 5 };
/** The pause before each pooled start, for the pool to make its next blank sandbox (a VM restore takes seconds under TCG). */
const REFILL_MS: Record<string, number> = { wasm: 1500, process: 1500, container: 2000, microvm: 8000 };
const BACKENDS = ['wasm', 'process', 'container', 'microvm'] as const;
type Target = (typeof BACKENDS)[number];
const log = (message: string) => process.stderr.write(`${message}\n`);

// hello, and a pure-Python CPU workload (primes by trial division, then a dict and string churn)
// that reports its own time, so that the platform's path does not count.
const FUNCTION = `
import time

def work(n):
    primes = [p for p in range(2, n) if all(p % d for d in range(2, int(p ** 0.5) + 1))]
    words = {}
    for i in range(n):
        key = 'k%d' % (i % 997)
        words[key] = words.get(key, '') [-50:] + str(i)
    return len(primes), len(words)

def main(args):
    if args.get('op') == 'cpu':
        started = time.perf_counter()
        result = work(int(args.get('n', 60000)))
        return {'ms': (time.perf_counter() - started) * 1000, 'result': list(result)}
    return {'greeting': 'Hello ' + args.get('name', 'world')}
`;

let functions = 0;
/** Idle instances per backend whose memory is measured (process tree of the server). */
const IDLE = quick ? 3 : 6;
const MEMORY_BACKENDS = ['wasm', 'process'] as const;

/** PSS of a process and all its descendants, MiB. */
function treePssMib(root: number): number {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {}
  }
  const tree = new Set([root]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const [pid, parent] of parents) {
      if (tree.has(parent) && !tree.has(pid)) {
        tree.add(pid);
        grew = true;
      }
    }
  }
  return [...tree].reduce((sum, pid) => sum + pssMib(pid), 0);
}

async function deploy(server: ServerProcess, isolation: Target, name: string): Promise<void> {
  const res = await server.deploy(name, FUNCTION, {
    exec: { kind: 'python:3' },
    limits: { memory: 256, timeout: 300_000 },
    annotations: [{ key: 'isolation', value: isolation }],
  });
  if (res.status !== 200) throw new Error(`deploy under ${isolation}: ${JSON.stringify(res.body)}`);
}

async function call(server: ServerProcess, name: string, params: Record<string, unknown>): Promise<ActivationRecord> {
  const record = (await server.invokeToEnd<ActivationRecord>(name, params, 600_000)).body;
  if (record.response.status !== 'success') throw new Error(`${name}: ${JSON.stringify(record.response)}`);
  return record;
}

/** A new function under the isolation, and the time of its first (cold) call through the API. */
async function coldStart(server: ServerProcess, isolation: Target): Promise<number> {
  const name = `${isolation}-cold-${++functions}`;
  await deploy(server, isolation, name);
  return time(() => call(server, name, { name: 'cold' }));
}

async function main() {
  const started = Date.now();
  const samples = Object.fromEntries(
    BACKENDS.map((b) => [b, { cold: [] as number[], pooled: [] as number[], warm: [] as number[], cpu: [] as number[] }]),
  ) as Record<Target, { cold: number[]; pooled: number[]; warm: number[]; cpu: number[] }>;
  const firstMs: Partial<Record<Target, number>> = {};
  const idleMb: Partial<Record<Target, number>> = {};
  const poolHits: Partial<Record<Target, number>> = {};
  const server = await ServerProcess.start({
    env: {
      ISOLA_BACKENDS: BACKENDS.join(','),
      ISOLA_PREWARM: BACKENDS.map((b) => `${b}:0`).join(','),
      ISOLA_LOG_LEVEL: 'error',
    },
  });
  try {
    // The first start of each builds what later ones reuse (Pyodide's snapshot, the Python
    // image, the microVM's base snapshot): reported apart, not in the cold starts.
    for (const isolation of BACKENDS) {
      log(`${isolation}: first start (builds its snapshot or image)`);
      firstMs[isolation] = await coldStart(server, isolation);
    }
    for (let i = 0; i < N.cold; i++) {
      for (const isolation of i % 2 === 0 ? BACKENDS : [...BACKENDS].reverse()) {
        const ms = await coldStart(server, isolation);
        samples[isolation].cold.push(ms);
        log(`${isolation} cold ${i + 1}: ${Math.round(ms)} ms`);
      }
    }
    for (const isolation of BACKENDS) {
      await deploy(server, isolation, `${isolation}-warm`);
      await call(server, `${isolation}-warm`, {});
    }
    for (let i = 0; i < N.warm; i++) {
      for (const isolation of BACKENDS) {
        samples[isolation].warm.push(await time(() => call(server, `${isolation}-warm`, { name: 'warm' })));
      }
    }
    // Memory: the server's process tree before and after IDLE new functions have each answered
    // once and stay idle (an instance each): what one more idle Python instance costs.
    for (const isolation of MEMORY_BACKENDS) {
      const pid = server.pid as number;
      const before = treePssMib(pid);
      for (let i = 0; i < IDLE; i++) {
        await deploy(server, isolation, `${isolation}-idle-${i}`);
        await call(server, `${isolation}-idle-${i}`, {});
      }
      idleMb[isolation] = round((treePssMib(pid) - before) / IDLE);
      log(`${isolation}: ${idleMb[isolation]} MB per idle instance`);
    }
    for (let i = 0; i < N.cpu; i++) {
      for (const isolation of BACKENDS) {
        const record = await call(server, `${isolation}-warm`, { op: 'cpu' });
        samples[isolation].cpu.push((record.response.result as { ms: number }).ms);
      }
    }
  } finally {
    await server.dispose();
  }
  // Cold starts with a blank sandbox of the kind made ahead (ISOLA_PREWARM <backend>:python:1), as
  // a pool of ready isolates serves Workers: a new function each time, a pause for the pool to
  // refill, and the starts that took a sandbox from the pool counted from the server's metrics.
  const pooled = await ServerProcess.start({
    env: {
      ISOLA_BACKENDS: BACKENDS.join(','),
      ISOLA_PREWARM: BACKENDS.map((b) => `${b}:python:1`).join(','),
      ISOLA_LOG_LEVEL: 'error',
    },
  });
  try {
    for (const isolation of BACKENDS) {
      const names: string[] = [];
      for (let i = 0; i < N.pooled; i++) {
        const name = `${isolation}-pooled-${i}`;
        await deploy(pooled, isolation, name);
        names.push(name);
        await new Promise((resolve) => setTimeout(resolve, REFILL_MS[isolation]));
        samples[isolation].pooled.push(await time(() => call(pooled, name, { name: 'pooled' })));
      }
      const metrics = await pooled.metrics();
      poolHits[isolation] = names.filter((name) =>
        new RegExp(`isola_starts_total\\{[^}]*action="${name}"[^}]*start="stemcell"\\} [1-9]`).test(metrics),
      ).length;
      log(
        `${isolation} pool ready: ${samples[isolation].pooled.map(Math.round).join(', ')} ms (${poolHits[isolation]} of ${N.pooled} from the pool)`,
      );
    }
  } finally {
    await pooled.dispose();
  }
  const figures = Object.fromEntries(
    BACKENDS.map((b) => [
      b,
      {
        firstMs: Math.round(firstMs[b] ?? Number.NaN),
        idleMb: idleMb[b] ?? null,
        coldMs: summarize(samples[b].cold),
        pooledMs: summarize(samples[b].pooled),
        poolHits: poolHits[b] ?? 0,
        warmMs: summarize(samples[b].warm),
        cpuMs: summarize(samples[b].cpu),
      },
    ]),
  ) as Record<
    Target,
    {
      firstMs: number;
      idleMb: number | null;
      coldMs: ReturnType<typeof summarize>;
      pooledMs: ReturnType<typeof summarize>;
      poolHits: number;
      warmMs: ReturnType<typeof summarize>;
      cpuMs: ReturnType<typeof summarize>;
    }
  >;
  const host = hostInfo();
  const tookS = Math.round((Date.now() - started) / 1000);
  writeFileSync(join(outDir, 'python.json'), `${JSON.stringify({ host, quick, tookS, n: N, figures, samples }, null, 2)}\n`);
  const wasm = figures.wasm;
  const md = [
    '# Python through WebAssembly against CPython (npm run bench:python)',
    '',
    `Host: ${JSON.stringify(host)}. Took ${tookS} s. The same python:3 function through the API; wasm is CPython ${'3.14'} compiled by Pyodide, the others Debian's CPython 3.11. Ratios are wasm / the backend (below 1: wasm is faster).`,
    '',
    '| backend | first start, ms | cold start p50 / p99, ms | wasm / it | cold, pool ready p50 / p99, ms | wasm / it | warm call p50 / p99, ms | wasm / it | CPU workload p50, ms | wasm / it | PSS per idle instance, MB |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...BACKENDS.map((b) => {
      const f = figures[b];
      return `| ${b} | ${f.firstMs} | ${f.coldMs.p50} / ${f.coldMs.p99} | ${ratio(wasm.coldMs.p50, f.coldMs.p50)} | ${f.pooledMs.p50} / ${f.pooledMs.p99} (${f.poolHits} of ${N.pooled} from the pool) | ${ratio(wasm.pooledMs.p50, f.pooledMs.p50)} | ${f.warmMs.p50} / ${f.warmMs.p99} | ${ratio(wasm.warmMs.p50, f.warmMs.p50)} | ${f.cpuMs.p50} | ${ratio(wasm.cpuMs.p50, f.cpuMs.p50)} | ${f.idleMb ?? 'not measured'} |`;
    }),
    '',
    `n: ${N.cold} cold starts, ${N.pooled} with a blank sandbox of the kind made ahead (a pause before each for the pool to refill), ${N.warm} warm calls and ${N.cpu} CPU runs per backend; memory: the server's process tree before and after ${IDLE} idle instances (wasm and process only: containers and VMs are measured by the density benchmark).`,
    '',
  ].join('\n');
  writeFileSync(join(outDir, 'python.md'), md);
  log(md);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
