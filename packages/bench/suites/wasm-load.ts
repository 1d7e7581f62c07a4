/**
 * WebAssembly under load, after the WebAssembly study the wasm backend answers (wasm 2.4-4.2x the
 * throughput of Docker under a mixed CPU and I/O load that has to scale out):
 *
 * 1. A mixed CPU and I/O function (hash 64 KB ten times, then write it to a scratch file in 4 KB
 *    writes and read it back: examples/wasm/assemblyscript/scratch.ts, and its JavaScript twin in
 *    a runc container writing to the container's /tmp) driven from zero with rising concurrency
 *    (1, 2, 4, 8, 16, 32 connections, a few seconds each, no instance before the first step, so
 *    containers cold-start as load grows) through a real `isola serve`. wasm and runc ramps are
 *    taken in turns (ABBA...) on the same server, three rounds of one ramp a side; throughput per
 *    step and over the ramp. The verdict is the median of the rounds' ratios (each round's wasm
 *    ramp against its runc ramp, taken next to each other), so that one round spoilt by the shared
 *    host's other work does not decide it; the ratio of the sides' totals is reported beside it.
 * 2. Warm latency of short modules with and without the hop to a worker thread: an in-process
 *    platform whose wasm backend's fast path is turned on and off between samples, in turns.
 *
 * Writes packages/bench/results/wasm-load.{json,md} (wasm-load-quick.* with --quick).
 *
 *   node packages/bench/launch.js suites/wasm-load.ts [--quick]
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import vm from 'node:vm';
import autocannon from 'autocannon';
import { buildServer } from '../../../src/api/server.js';
import { resolveServerConfig } from '../../../src/config.js';
import { buildBundle } from '../../../src/guest/bundle.js';
import type { InvokeCommand } from '../../../src/platform/invoke.js';
import { Platform } from '../../../src/platform/platform.js';
import { importOwnMemory } from '../../../src/sandbox/wasm/binary.js';
import { FAST_PATH_BUDGET_MS } from '../../../src/sandbox/wasm/fast-path.js';
import { meterModule, REFUEL_UNITS } from '../../../src/sandbox/wasm/metering.js';
import { runModule } from '../../../src/sandbox/wasm/run-module.js';
import type { WasmBackend } from '../../../src/sandbox/wasm/wasm-backend.js';
import { WorkerPool } from '../../../src/sandbox/wasm/worker-pool.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { KeepAliveClient } from '../src/http.js';
import { pause, ratio, summarize, time } from '../src/stats.js';
import { SCRATCH_PARAMS, WORKLOADS } from '../src/workloads.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const log = (message: string) => process.stderr.write(`${message}\n`);

const STEPS = [1, 2, 4, 8, 16, 32];
const STEP_SECONDS = quick ? 2 : 4;
/** Rounds of one ramp a side, taken in turns: wasm, runc, runc, wasm, wasm, runc. Odd, for a median. */
const ROUNDS = quick ? 1 : 3;
const MEMORY_MB = 128;
const WARM_SAMPLES = quick ? 300 : 2000;
const TARGET_RATIO = 2.4;
/** Before a ramp, the host counts as quiet below this share of its CPU busy over a second... */
const QUIET_BUSY_SHARE = 0.15;
/** ...waited for at most this long (a shared host may never be). */
const QUIET_WAIT_MS = 30_000;
/** Calls of each side before anything is timed. */
const WARM_UP_CALLS = 50;

type Side = 'wasm' | 'runc';
const scratch = (kind: 'wasm' | 'nodejs:20') =>
  WORKLOADS.find((w) => w.name === 'scratch' && w.kind === kind) ?? (undefined as never);

interface StepResult {
  connections: number;
  ok: number;
  failed: number;
  seconds: number;
  requestsPerSecond: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
}

interface RampResult {
  side: Side;
  round: number;
  steps: StepResult[];
  coldStarts: number;
  instancesAtEnd: number;
  checked: unknown;
  /** Requests per second over the whole ramp. */
  requestsPerSecond: number;
  /** wasm runs made on the server's thread (the fast path) and on workers during the ramp. */
  wasmRuns: { serverThread: number; workers: number };
  /** The host's 1-minute load average when the ramp started (others' work and the previous ramp's). */
  loadAverageAtStart: number;
  /** The share of the host's CPU busy over the second before the ramp started (see settle). */
  busyAtStart: number;
}

function sumStarts(metrics: string, isolation: string, start: string): number {
  const pattern = new RegExp(`^isola_starts_total\\{[^}]*isolation="${isolation}"[^}]*start="${start}"[^}]*\\} (\\d+)`, 'gm');
  let total = 0;
  for (const match of metrics.matchAll(pattern)) total += Number(match[1]);
  return total;
}

function liveInstances(metrics: string, action?: string): number {
  const pattern = action
    ? new RegExp(`^isola_function_instances\\{[^}]*action="${action}"[^}]*\\} (\\d+)`, 'gm')
    : /^isola_instances\{[^}]*\} (\d+)/gm;
  let total = 0;
  for (const match of metrics.matchAll(pattern)) total += Number(match[1]);
  return total;
}

/** isola_wasm_runs_total by path. */
function wasmRuns(metrics: string) {
  const count = (path: string) =>
    Number(new RegExp(`^isola_wasm_runs_total\\{path="${path}"\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? 0);
  return { serverThread: count('sync'), workers: count('async') };
}

/** The host's CPU time so far, busy and in all (ms, every core). */
function cpuTimes(): { busy: number; total: number } {
  let busy = 0;
  let total = 0;
  for (const { times } of cpus()) {
    const used = times.user + times.nice + times.sys + times.irq;
    busy += used;
    total += used + times.idle;
  }
  return { busy, total };
}

/** The share of the host's CPU that was busy over the next `ms`. */
async function busyOver(ms: number): Promise<number> {
  const before = cpuTimes();
  await pause(ms);
  const after = cpuTimes();
  return after.total > before.total ? (after.busy - before.busy) / (after.total - before.total) : 0;
}

/**
 * Waits until no instance is left and the host has gone quiet: the previous ramp's containers
 * take a moment to go, and their teardown (runc, cgroups, mounts) goes on after the server has
 * let them go, which would otherwise run during the next ramp, whichever side it is. Gives the
 * host's busy share over the last second before the ramp.
 */
async function settle(server: ServerProcess): Promise<number> {
  const deadline = Date.now() + 60_000;
  while (liveInstances(await server.metrics()) > 0) {
    if (Date.now() > deadline) throw new Error('instances of an earlier ramp did not go');
    await pause(200);
  }
  let busy = await busyOver(1000);
  const quietBy = Date.now() + QUIET_WAIT_MS;
  while (busy > QUIET_BUSY_SHARE && Date.now() < quietBy) busy = await busyOver(1000);
  return Math.round(busy * 1000) / 1000;
}

async function deploy(server: ServerProcess, name: string, side: Side, tag: string): Promise<void> {
  const workload = scratch(side === 'wasm' ? 'wasm' : 'nodejs:20');
  // A distinct version each ramp: nothing has an instance of it, or the wasm module compiled.
  const code = side === 'wasm' ? distinctWasm(workload.code(), tag) : `${workload.code()}\n// ${tag}\n`;
  const response = await server.request('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, {
    exec: side === 'wasm' ? { kind: 'wasm', code, binary: true } : { kind: 'nodejs:20', code },
    limits: { memory: MEMORY_MB, timeout: 30_000, concurrency: 1 },
    annotations: [{ key: 'isolation', value: side === 'wasm' ? 'wasm' : 'container' }],
  });
  if (response.status !== 200) throw new Error(`deploying ${name} failed: ${JSON.stringify(response.body)}`);
}

/** The module with a custom section naming `tag`: a module nothing has compiled yet. */
function distinctWasm(base64: string, tag: string): string {
  const bytes = Buffer.from(base64, 'base64');
  const name = Buffer.from('isola-bench');
  const content = Buffer.concat([Buffer.from([name.length]), name, Buffer.from(tag)]);
  return Buffer.concat([bytes, Buffer.from([0, content.length]), content]).toString('base64');
}

async function ramp(server: ServerProcess, side: Side, round: number): Promise<RampResult> {
  const name = `load-${side}-${round}`;
  const isolation = side === 'wasm' ? 'wasm' : 'container';
  const busyAtStart = await settle(server);
  const loadAverageAtStart = Math.round((loadavg()[0] ?? 0) * 10) / 10;
  await deploy(server, name, side, `${name}-${Date.now()}`);
  const before = await server.metrics();
  const coldBefore = sumStarts(before, isolation, 'cold') + sumStarts(before, isolation, 'stemcell');
  const steps: StepResult[] = [];
  for (const connections of STEPS) {
    const result = await autocannon({
      url: `${server.url}/api/v1/namespaces/_/actions/${name}?blocking=true&result=true`,
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}`, 'content-type': 'application/json' },
      body: JSON.stringify(SCRATCH_PARAMS),
      connections,
      duration: STEP_SECONDS,
    });
    const ok = result['2xx'];
    const seconds = result.duration;
    steps.push({
      connections,
      ok,
      failed: result.non2xx + result.errors + result.timeouts,
      seconds: Math.round(seconds * 100) / 100,
      requestsPerSecond: Math.round((ok / seconds) * 10) / 10,
      latencyP50Ms: result.latency.p50,
      latencyP99Ms: result.latency.p99,
    });
    log(`  ${side} round ${round}: ${connections} connections: ${steps.at(-1)?.requestsPerSecond} requests/s`);
  }
  const after = await server.metrics();
  const checked = (await server.invoke(name, SCRATCH_PARAMS, 'blocking=true&result=true')).body;
  const coldStarts = sumStarts(after, isolation, 'cold') + sumStarts(after, isolation, 'stemcell') - coldBefore;
  const runsBefore = wasmRuns(before);
  const runsAfter = wasmRuns(after);
  const runs = {
    serverThread: runsAfter.serverThread - runsBefore.serverThread,
    workers: runsAfter.workers - runsBefore.workers,
  };
  const instancesAtEnd = liveInstances(after, name);
  await server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
  const ok = steps.reduce((sum, step) => sum + step.ok, 0);
  const seconds = steps.reduce((sum, step) => sum + step.seconds, 0);
  const requestsPerSecond = Math.round((ok / seconds) * 10) / 10;
  return {
    side,
    round,
    steps,
    coldStarts,
    instancesAtEnd,
    checked,
    requestsPerSecond,
    loadAverageAtStart,
    busyAtStart,
    wasmRuns: runs,
  };
}

/** Totals over every ramp of a side: requests per second per step and over the whole ramp. */
function totals(ramps: RampResult[]) {
  const perStep = STEPS.map((connections, i) => {
    const ok = ramps.reduce((sum, r) => sum + (r.steps[i]?.ok ?? 0), 0);
    const seconds = ramps.reduce((sum, r) => sum + (r.steps[i]?.seconds ?? 0), 0);
    return { connections, requestsPerSecond: Math.round((ok / seconds) * 10) / 10 };
  });
  const ok = ramps.reduce((sum, r) => sum + r.steps.reduce((s, step) => s + step.ok, 0), 0);
  const seconds = ramps.reduce((sum, r) => sum + r.steps.reduce((s, step) => s + step.seconds, 0), 0);
  const failed = ramps.reduce((sum, r) => sum + r.steps.reduce((s, step) => s + step.failed, 0), 0);
  return { perStep, overallRequestsPerSecond: Math.round((ok / seconds) * 10) / 10, ok, failed };
}

async function underLoad() {
  const server = await ServerProcess.start({
    env: { ISOLA_BACKENDS: 'wasm,container', ISOLA_CONTAINER_RUNTIME: 'runc', ISOLA_PREWARM: 'container:0' },
  });
  try {
    // Before anything is timed, both sides' first runs: the container image and runc's first
    // container; the wasm workers and the server's code on either path (the first ramp timed
    // would otherwise pay for warming the server's JIT alone).
    log('warming up: the container image, a first container and the wasm workers...');
    for (const side of ['runc', 'wasm'] as const) {
      const name = `load-warm-up-${side}`;
      await deploy(server, name, side, `warm-up-${side}`);
      for (let i = 0; i < WARM_UP_CALLS; i++) await server.invoke(name, SCRATCH_PARAMS, 'blocking=true&result=true');
      await server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
    }
    const ramps: RampResult[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const order: Side[] = round % 2 === 0 ? ['wasm', 'runc'] : ['runc', 'wasm'];
      for (const side of order) {
        log(`ramp: ${side}, round ${round}`);
        ramps.push(await ramp(server, side, round));
      }
    }
    return ramps;
  } finally {
    await server.dispose();
  }
}

/** A blocking call as the guest, straight into the platform's invoke (no HTTP). */
function syncCall(name: string, params: Record<string, unknown>): InvokeCommand {
  return {
    function: { namespace: 'guest', name },
    params,
    mode: 'sync',
    door: 'openwhisk',
    caller: { kind: 'namespace', namespace: 'guest' },
  };
}

const SHORT_FUNCTIONS = [
  { name: 'hello', workload: () => WORKLOADS.find((w) => w.name === 'hello' && w.kind === 'wasm'), params: { name: 'bench' } },
  // The mixed function made small enough to be short: a 4 KB file, no hashing.
  { name: 'scratch-small', workload: () => scratch('wasm'), params: { seed: 7, rounds: 0, bytes: 4096, chunk: 1024 } },
];

/**
 * Warm latency of short modules, the fast path on and off in turns, through HTTP and the invoke
 * path. A platform of its own for each function, so that one's overruns (which count against the
 * namespace) do not take the fast path from the next.
 */
async function warmHop() {
  const results: Record<string, unknown> = {};
  for (const fn of SHORT_FUNCTIONS) results[fn.name] = await warmHopOf(fn);
  return results;
}

async function warmHopOf(fn: (typeof SHORT_FUNCTIONS)[number]) {
  const dataDir = mkdtempSync(join(tmpdir(), 'isola-bench-wasm-load-'));
  const config = resolveServerConfig({ dataDir, port: '0', backends: 'wasm' }, { ISOLA_LOG_LEVEL: 'error' });
  const platform = await Platform.start(config);
  const app = buildServer(platform);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const client = new KeepAliveClient(url, {
    authorization: `Basic ${Buffer.from(`${platform.guest.uuid}:${platform.guest.key}`).toString('base64')}`,
  });
  await platform.backendsProbed;
  const wasm = platform.backends.get('wasm') as WasmBackend;
  // Off by default (it measured slower here); on for the comparison, and off for the hop samples.
  wasm.fastPath = true;
  try {
    const workload = fn.workload();
    if (!workload) throw new Error(`no ${fn.name} workload`);
    await platform.deploy(
      {
        namespace: 'guest',
        name: fn.name,
        exec: { kind: 'wasm', code: workload.code(), binary: true },
        limits: { memory: 64, timeout: 60_000, concurrency: 1, logs: 10_240 },
        parameters: [],
        annotations: [],
        isolation: 'wasm',
      },
      true,
    );
    // Calls until one is taken on the fast path: the version has proved short.
    const deadline = Date.now() + 60_000;
    for (let sync = wasm.runStats.sync; wasm.runStats.sync === sync; ) {
      if (Date.now() > deadline) throw new Error(`${fn.name} never reached the fast path`);
      await platform.invoke(syncCall(fn.name, fn.params));
    }
    const path = `/api/v1/namespaces/_/actions/${fn.name}?blocking=true&result=true`;
    const samples = {
      httpFast: [] as number[],
      httpHop: [] as number[],
      invokeFast: [] as number[],
      invokeHop: [] as number[],
    };
    const before = { ...wasm.runStats };
    let notOnServerThread = 0;
    for (let i = 0; i < WARM_SAMPLES; i++) {
      // In turns, and which goes first alternates, so that drift on the host hits both alike.
      for (const fast of i % 2 === 0 ? [true, false] : [false, true]) {
        wasm.fastPath = fast;
        // A call counts for the server thread only if it was made there: an overrun (the host
        // busy, a garbage collection) moves it to a worker, and is counted instead.
        const sync = wasm.runStats.sync;
        const overruns = wasm.runStats.overruns;
        const httpMs = await time(() => client.send('POST', path, fn.params));
        if (!fast) samples.httpHop.push(httpMs);
        else if (wasm.runStats.sync > sync && wasm.runStats.overruns === overruns) samples.httpFast.push(httpMs);
        else notOnServerThread++;
        const syncInvoke = wasm.runStats.sync;
        const overrunsInvoke = wasm.runStats.overruns;
        const invokeMs = await time(() => platform.invoke(syncCall(fn.name, fn.params)));
        if (!fast) samples.invokeHop.push(invokeMs);
        else if (wasm.runStats.sync > syncInvoke && wasm.runStats.overruns === overrunsInvoke) samples.invokeFast.push(invokeMs);
        else notOnServerThread++;
      }
    }
    wasm.fastPath = true;
    const runs = { sync: wasm.runStats.sync - before.sync, async: wasm.runStats.async - before.async };
    const http = { fast: summarize(samples.httpFast), hop: summarize(samples.httpHop) };
    const invoke = { fast: summarize(samples.invokeFast), hop: summarize(samples.invokeHop) };
    log(`  ${fn.name}: invoke p50 ${invoke.fast.p50} ms on the server thread, ${invoke.hop.p50} ms with the hop`);
    return {
      params: fn.params,
      runs,
      overruns: wasm.runStats.overruns - before.overruns,
      fastPathCallsNotOnServerThread: notOnServerThread,
      http,
      invoke,
      p50HopToFast: { http: ratio(http.hop.p50, http.fast.p50), invoke: ratio(invoke.hop.p50, invoke.fast.p50) },
      p50SavedMs: {
        http: Math.round((http.hop.p50 - http.fast.p50) * 1000) / 1000,
        invoke: Math.round((invoke.hop.p50 - invoke.fast.p50) * 1000) / 1000,
      },
    };
  } finally {
    client.close();
    await app.close();
    await platform.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

// The budget as the fast path first kept it, for comparison: a `vm` timeout, whose watchdog
// thread is started for every call.
const holder: { call: (() => unknown) | undefined } = { call: undefined };
const budgetContext = vm.createContext(holder, { name: 'vm-timeout budget' });
const budgetScript = new vm.Script('call()');
function callWithVmTimeout(fn: () => unknown, budgetMs: number): void {
  holder.call = fn;
  try {
    budgetScript.runInContext(budgetContext, { timeout: budgetMs });
  } finally {
    holder.call = undefined;
  }
}

/**
 * Where a short call's time goes, without the platform: a run of greet on this thread, the same
 * inside a `vm` timeout's budget (how the fast path first bounded it), the vm budget around
 * nothing, the run of its fuel-metered copy within the budget (how it is bounded now), and a run
 * on a worker (the hop there and back included), in turns.
 */
async function pathCosts() {
  const runtime = mkdtempSync(join(tmpdir(), 'isola-bench-wasm-load-rt-'));
  const pool = new WorkerPool(buildBundle('wasm-worker', runtime), 2);
  try {
    if (!(await pool.ready())) throw new Error('the wasm workers did not start');
    const hello = WORKLOADS.find((w) => w.name === 'hello' && w.kind === 'wasm');
    if (!hello) throw new Error('no hello workload');
    // As the backend compiles it: its memory made an import, for the run to be given a kept one.
    const { bytes, memory } = importOwnMemory(Buffer.from(hello.code(), 'base64'), 1024);
    const module = await WebAssembly.compile(bytes);
    const meteredBytes = await meterModule(bytes);
    if (!meteredBytes) throw new Error('hello could not be metered');
    const metered = await WebAssembly.compile(meteredBytes);
    const message = {
      type: 'run' as const,
      id: 'bench',
      key: 'greet',
      abi: 'reactor' as const,
      input: JSON.stringify(hello.params),
      env: {},
      maxPages: 1024,
      ...(memory ? { importedMemory: memory } : {}),
    };
    const samples = {
      thisThread: [] as number[],
      withinBudget: [] as number[],
      budgetAlone: [] as number[],
      metered: [] as number[],
      workerHop: [] as number[],
    };
    const sync = (fn: () => unknown) => {
      const start = performance.now();
      fn();
      return performance.now() - start;
    };
    for (let i = 0; i < WARM_SAMPLES; i++) {
      samples.thisThread.push(sync(() => runModule(message, module, () => {})));
      samples.withinBudget.push(sync(() => callWithVmTimeout(() => runModule(message, module, () => {}), FAST_PATH_BUDGET_MS)));
      samples.budgetAlone.push(sync(() => callWithVmTimeout(() => 0, FAST_PATH_BUDGET_MS)));
      samples.metered.push(
        sync(() => {
          const budgetEnd = performance.now() + FAST_PATH_BUDGET_MS;
          runModule(
            message,
            metered,
            () => {},
            () => (performance.now() < budgetEnd ? REFUEL_UNITS : -1),
          );
        }),
      );
      samples.workerHop.push(await time(() => pool.run({ ...message, id: `bench-${i}` }, module, Date.now() + 10_000, () => {})));
      // Let the event loop turn, as between requests.
      await new Promise((resolve) => setImmediate(resolve));
    }
    return Object.fromEntries(Object.entries(samples).map(([name, values]) => [name, summarize(values)]));
  } finally {
    await pool.close();
    rmSync(runtime, { recursive: true, force: true });
  }
}

function markdown(
  results: Record<string, unknown>,
  wasmTotals: ReturnType<typeof totals>,
  runcTotals: ReturnType<typeof totals>,
) {
  const verdict = results.verdict as {
    medianRoundRatio: number;
    roundRatios: {
      round: number;
      ratio: number;
      wasm: number;
      runc: number;
      loadAverages: number[];
      busyAtStart: number[];
      wasmServerThreadRuns: number;
      wasmWorkerRuns: number;
    }[];
    overallRatio: number;
    met: boolean;
    minStepRatio: number;
  };
  const costs = results.pathCosts as Record<string, { p50: number; p99: number } | undefined>;
  const warm = results.warmLatency as Record<
    string,
    {
      invoke: Record<string, { n: number; p50: number; p99: number }>;
      http: Record<string, { n: number; p50: number; p99: number }>;
    }
  >;
  const lines = [
    `# WebAssembly under load${quick ? ' (quick)' : ''}`,
    '',
    `Mixed CPU and I/O function (${JSON.stringify(SCRATCH_PARAMS)}), ${MEMORY_MB} MB, concurrency 1 per instance, from zero`,
    `with rising connections (${STEP_SECONDS} s a step), ${ROUNDS} round(s) of one ramp a side in turns, through \`isola serve\`.`,
    `Host load average (1 min) ${(results.loadAverageBefore as number[])[0]?.toFixed(1)} before, ${(results.loadAverageAfter as number[])[0]?.toFixed(1)} after (2 cores, shared).`,
    '',
    '| connections | wasm requests/s | runc requests/s | wasm / runc |',
    '|---|---|---|---|',
    ...STEPS.map((c, i) => {
      const w = wasmTotals.perStep[i]?.requestsPerSecond ?? Number.NaN;
      const r = runcTotals.perStep[i]?.requestsPerSecond ?? Number.NaN;
      return `| ${c} | ${w} | ${r} | ${ratio(w, r)} |`;
    }),
    `| whole ramp | ${wasmTotals.overallRequestsPerSecond} | ${runcTotals.overallRequestsPerSecond} | ${verdict.overallRatio} |`,
    '',
    'Each round (its wasm ramp and its runc ramp, taken one after the other), over the whole ramp:',
    '',
    "| round | wasm requests/s | runc requests/s | wasm / runc | load average at the ramps' start (wasm, runc) | CPU busy in the second before them (wasm, runc) | wasm runs on the server's thread / on workers |",
    '|---|---|---|---|---|---|---|',
    ...verdict.roundRatios.map(
      (r) =>
        `| ${r.round} | ${r.wasm} | ${r.runc} | ${r.ratio} | ${r.loadAverages.join(', ')} | ${r.busyAtStart.map((b) => `${Math.round(b * 100)}%`).join(', ')} | ${r.wasmServerThreadRuns} / ${r.wasmWorkerRuns} |`,
    ),
    `| median | | | **${verdict.medianRoundRatio}** | | | |`,
    '',
    `Target: wasm at least ${TARGET_RATIO}x runc over the ramp (the median of the rounds' ratios): **${verdict.met ? 'met' : 'not met'}** (${verdict.medianRoundRatio}x; the sides' totals ${verdict.overallRatio}x; lowest step ${verdict.minStepRatio}x).`,
    `Failed requests: wasm ${wasmTotals.failed}, runc ${runcTotals.failed}.`,
    '',
    'Warm latency of short modules, the hop to a worker thread against the server thread (fast path), in turns (ms):',
    '',
    '| function | path | invoke p50 | invoke p99 | HTTP p50 | HTTP p99 |',
    '|---|---|---|---|---|---|',
    ...Object.entries(warm).flatMap(([name, w]) => [
      `| ${name} | server thread | ${w.invoke.fast?.p50} | ${w.invoke.fast?.p99} | ${w.http.fast?.p50} | ${w.http.fast?.p99} |`,
      `| ${name} | worker hop | ${w.invoke.hop?.p50} | ${w.invoke.hop?.p99} | ${w.http.hop?.p50} | ${w.http.hop?.p99} |`,
    ]),
    '',
    'Where a short call (greet) goes, without the platform, in turns (ms, p50 / p99):',
    '',
    '| run on this thread, no budget | the same within a vm timeout | a vm timeout around nothing | the metered copy within the budget (the fast path) | run on a worker, hop included |',
    '|---|---|---|---|---|',
    `| ${[costs.thisThread, costs.withinBudget, costs.budgetAlone, costs.metered, costs.workerHop].map((c) => `${c?.p50} / ${c?.p99}`).join(' | ')} |`,
    '',
    `Calls with the fast path on that were made on the server thread: ${Object.entries(warm)
      .map(([name, w]) => `${name} ${(w.invoke.fast?.n ?? 0) + (w.http.fast?.n ?? 0)} of ${WARM_SAMPLES * 2}`)
      .join(', ')}; the others (an overrun, or the fast path lost) are left out of the server-thread figures.`,
    '',
  ];
  return lines.join('\n');
}

async function main() {
  const started = Date.now();
  // The host is shared: its load before and after says how busy it was with others' work.
  const results: Record<string, unknown> = { benchmark: 'wasm-load', quick, host: hostInfo(), loadAverageBefore: loadavg() };
  log("where a short call's time goes...");
  results.pathCosts = await pathCosts();
  log('warm latency with and without the hop...');
  results.warmLatency = await warmHop();
  log('under load from zero: wasm and runc ramps in turns...');
  const ramps = await underLoad();
  const wasmTotals = totals(ramps.filter((r) => r.side === 'wasm'));
  const runcTotals = totals(ramps.filter((r) => r.side === 'runc'));
  const stepRatios = STEPS.map((connections, i) => ({
    connections,
    ratio: ratio(wasmTotals.perStep[i]?.requestsPerSecond ?? Number.NaN, runcTotals.perStep[i]?.requestsPerSecond ?? Number.NaN),
  }));
  const overallRatio = ratio(wasmTotals.overallRequestsPerSecond, runcTotals.overallRequestsPerSecond);
  // Each round's pair of ramps ran next to each other: their ratio has the host's state of that
  // moment on both sides. The median of the rounds' ratios decides.
  const roundRatios = Array.from({ length: ROUNDS }, (_, round) => {
    const wasm = ramps.find((r) => r.side === 'wasm' && r.round === round);
    const runc = ramps.find((r) => r.side === 'runc' && r.round === round);
    return {
      round: round + 1,
      wasm: wasm?.requestsPerSecond ?? Number.NaN,
      runc: runc?.requestsPerSecond ?? Number.NaN,
      ratio: ratio(wasm?.requestsPerSecond ?? Number.NaN, runc?.requestsPerSecond ?? Number.NaN),
      loadAverages: [wasm?.loadAverageAtStart ?? Number.NaN, runc?.loadAverageAtStart ?? Number.NaN],
      busyAtStart: [wasm?.busyAtStart ?? Number.NaN, runc?.busyAtStart ?? Number.NaN],
      wasmServerThreadRuns: wasm?.wasmRuns.serverThread ?? 0,
      wasmWorkerRuns: wasm?.wasmRuns.workers ?? 0,
    };
  });
  const medianRoundRatio = summarize(roundRatios.map((r) => r.ratio)).p50;
  results.load = {
    workload: { params: SCRATCH_PARAMS, memoryMb: MEMORY_MB, steps: STEPS, stepSeconds: STEP_SECONDS, rounds: ROUNDS },
    ramps,
    wasm: wasmTotals,
    runc: runcTotals,
    stepRatios,
  };
  results.verdict = {
    target: `wasm >= ${TARGET_RATIO}x runc requests/s over the ramp (median of the rounds' ratios)`,
    medianRoundRatio,
    roundRatios,
    overallRatio,
    minStepRatio: Math.min(...stepRatios.map((s) => s.ratio)),
    met: medianRoundRatio >= TARGET_RATIO,
  };
  results.loadAverageAfter = loadavg();
  results.durationSeconds = Math.round((Date.now() - started) / 1000);
  mkdirSync(outDir, { recursive: true });
  const base = join(outDir, quick ? 'wasm-load-quick' : 'wasm-load');
  writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(`${base}.md`, markdown(results, wasmTotals, runcTotals));
  process.stdout.write(`${JSON.stringify({ verdict: results.verdict, stepRatios, warm: results.warmLatency }, null, 2)}\n`);
  log(`wrote ${base}.json and ${base}.md`);
}

await main();
