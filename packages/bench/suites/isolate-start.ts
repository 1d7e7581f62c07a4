/**
 * Isolate cold start against the engine's own floor, in one run, in turns:
 *  - raw cold: isolated-vm in this plain Node process: new Isolate, new context, compile the
 *    hello script, first call, result back (synchronous calls: no thread hop, the engine's floor);
 *  - API cold: a deployed hello function with no instance invoked blocking through the HTTP API
 *    of a server with no pool of blank isolates;
 *  - raw pooled: the same steps with the isolate and context made ahead (compile + first call);
 *  - API pooled: the same API call on a server that keeps blank isolates ready;
 *  - density: host memory (PSS) per idle hello instance on the server with no pool;
 *  - not a baseline, the HTTP floor: the same POST to a bare node:http server in another process
 *    (the harness's bare peer, calling the same function) after the same pause, which any path through an HTTP API pays and the raw engine does not.
 * Every call through HTTP is timed with TimingClient (one keep-alive socket, nothing else), since
 * node:http's own client costs about 0.3 ms a call that neither side being compared spends.
 * Writes packages/bench/results/isolate-start.{json,md}.
 *
 *   npm run bench:isolate-start [-- --quick]
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ivm from 'isolated-vm';
import type { ActivationRecord } from '../../../src/core/types.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { TimingClient } from '../src/http.js';
import { startNodeHttp } from '../src/peers.js';
import { round, serverMemoryMib } from '../src/pss.js';
import { pause, ratio, type Summary, summarize, time } from '../src/stats.js';
import { HELLO_JS } from '../src/workloads.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const SAMPLES = quick ? 30 : 200;
const DENSITY_INSTANCES = quick ? 30 : 150;
/** The harness's hello memory size, which the server's blank isolates are made for too. */
const MEMORY_MB = 256;
/** Lets the pooled server's refill (which it delays a little after a cold start) finish before the next sample. */
const POOL_GAP_MS = 60;
const PARAMS = { name: 'bench' };
const TARGETS = { coldRatio: 1.5, pooledExtraMs: 1, instancesPerGb: 1000 };

const log = (message: string) => process.stderr.write(`${message}\n`);

/** The raw engine: what any embedder of isolated-vm has to do for a first call of the hello function. */
function rawCall(isolate: ivm.Isolate, context: ivm.Context): unknown {
  const script = isolate.compileScriptSync(`${HELLO_JS}\nmain;`);
  const main = script.runSync(context, { reference: true }) as ivm.Reference<(p: unknown) => unknown>;
  const result = main.applySync(undefined, [new ivm.ExternalCopy(PARAMS).copyInto()], { result: { copy: true } });
  main.release();
  script.release();
  return result;
}

function rawCold(): number {
  const started = performance.now();
  const isolate = new ivm.Isolate({ memoryLimit: MEMORY_MB });
  const context = isolate.createContextSync();
  const result = rawCall(isolate, context) as { greeting?: string };
  const ms = performance.now() - started;
  if (result.greeting !== 'Hello bench') throw new Error(`raw cold: unexpected result ${JSON.stringify(result)}`);
  isolate.dispose();
  return ms;
}

function rawPooled(made = rawReady()): number {
  const { isolate, context } = made;
  const started = performance.now();
  const result = rawCall(isolate, context) as { greeting?: string };
  const ms = performance.now() - started;
  if (result.greeting !== 'Hello bench') throw new Error(`raw pooled: unexpected result ${JSON.stringify(result)}`);
  isolate.dispose();
  return ms;
}

/** An isolate and context made ahead, as a pool keeps them. */
function rawReady() {
  const isolate = new ivm.Isolate({ memoryLimit: MEMORY_MB });
  return { isolate, context: isolate.createContextSync() };
}

class Api {
  readonly client: TimingClient;
  private deployed = 0;

  constructor(
    readonly server: ServerProcess,
    readonly label: string,
  ) {
    this.client = new TimingClient(server.url, { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` });
  }

  /** Deploys a hello function of its own (nothing of it is cached yet): the next call is a cold start. */
  async deploy(): Promise<string> {
    const name = `${this.label}-${this.deployed++}`;
    const response = await this.server.deploy(name, HELLO_JS, {
      limits: { memory: MEMORY_MB },
      annotations: [{ key: 'isolation', value: 'isolate' }],
    });
    if (response.status !== 200) throw new Error(`deploying ${name} failed: ${JSON.stringify(response.body)}`);
    return name;
  }

  /** One blocking call, timed from the request to the whole record back; checks it was a cold start with the result. */
  async coldCall(name: string): Promise<number> {
    let body = '';
    let status = 0;
    const ms = await time(async () => {
      ({ status, body } = await this.client.send('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, PARAMS));
    });
    const record = JSON.parse(body) as ActivationRecord;
    const annotation = (key: string) => record.annotations?.find((a) => a.key === key)?.value;
    if (status !== 200 || (record.response?.result as { greeting?: string })?.greeting !== 'Hello bench')
      throw new Error(`${name} failed (${status}): ${body.slice(0, 300)}`);
    if (annotation('coldStart') !== true) throw new Error(`${name} was not a cold start`);
    return ms;
  }

  /** How many of these functions' cold starts took a blank isolate made ahead, from the server's own counter. */
  async stemCellStarts(names: readonly string[]): Promise<number> {
    const metrics = await this.server.metrics();
    return names.filter((name) =>
      new RegExp(`isola_starts_total\\{[^}]*action="${name}"[^}]*start="stemcell"\\} [1-9]`).test(metrics),
    ).length;
  }

  async remove(name: string): Promise<void> {
    await this.server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
  }

  async instances(): Promise<number> {
    const metrics = await this.server.metrics();
    let total = 0;
    for (const match of metrics.matchAll(/^isola_instances\{[^}]*\} (\d+)/gm)) total += Number(match[1]);
    return total;
  }

  memory(): number {
    const pid = this.server.pid;
    if (pid === undefined) throw new Error('the server has no pid');
    return serverMemoryMib(pid, this.server.dataDir);
  }
}

/** Idle hello instances' host memory: PSS of the server after `count` cold starts of distinct functions, less before. */
async function density(api: Api, count: number) {
  const deadline = Date.now() + 30_000;
  while ((await api.instances()) > 0 && Date.now() < deadline) await pause(100);
  await pause(500);
  const instancesBefore = await api.instances();
  const before = api.memory();
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = await api.deploy();
    names.push(name);
    await api.coldCall(name);
  }
  await pause(1000);
  const instances = await api.instances();
  const after = api.memory();
  for (const name of names) await api.remove(name);
  if (instances - instancesBefore !== count)
    throw new Error(`expected ${count} more idle instances, found ${instances - instancesBefore}`);
  const perInstanceMb = (after - before) / count;
  return {
    instances: count,
    serverPssBeforeMb: round(before, 1),
    serverPssAfterMb: round(after, 1),
    pssPerInstanceMb: round(perInstanceMb, 3),
    instancesPer1024Mb: perInstanceMb > 0 ? Math.floor(1024 / perInstanceMb) : null,
  };
}

function markdown(results: {
  raw: { cold: Summary; pooled: Summary; pooledAfterPause: Summary };
  api: { cold: Summary; pooled: Summary; pooledHits: string };
  httpFloor: Summary;
  density: Awaited<ReturnType<typeof density>>;
  targets: Record<string, { target: string; measured: number | null; met: boolean }>;
  host: ReturnType<typeof hostInfo>;
  load: { before: number; after: number };
}): string {
  const row = (label: string, s: Summary) => `| ${label} | ${s.p50} | ${s.p99} | ${s.mean} | ${s.n} |`;
  const lines = [
    '# Isolate cold start against the engine (npm run bench:isolate-start)',
    '',
    `${results.host.date}, ${results.host.cpu} (${results.host.cores} cores), Node ${results.host.node}${quick ? ', quick run' : ''}; ` +
      `load average ${results.load.before} before the run, ${results.load.after} after.`,
    "Raw and API samples were taken in turns in one run; raw is isolated-vm called synchronously in the bench process; calls through HTTP are timed with the benchmark's TimingClient (one keep-alive socket).",
    '',
    '| start | p50 ms | p99 ms | mean ms | n |',
    '| --- | ---: | ---: | ---: | ---: |',
    row('raw cold (new isolate, context, compile, first call)', results.raw.cold),
    row('API cold, no pool (blocking, whole record)', results.api.cold),
    row('raw pooled (isolate + context made ahead)', results.raw.pooled),
    row(`API pooled (blank isolates ready; ${results.api.pooledHits} took one)`, results.api.pooled),
    row(
      `raw pooled, isolate made before the ${POOL_GAP_MS} ms pause the API's blank isolates sit through (not a baseline)`,
      results.raw.pooledAfterPause,
    ),
    row(
      'HTTP floor: one POST to a bare node:http server in another process, after the same pause (not a baseline)',
      results.httpFloor,
    ),
    '',
    `Beside the targets, the API's figures less the HTTP floor: cold ${ratio(results.api.cold.p50 - results.httpFloor.p50, results.raw.cold.p50)}x raw, ` +
      `pooled +${round(results.api.pooled.p50 - results.httpFloor.p50 - results.raw.pooled.p50, 3)} ms above raw.`,
    '',
    `Idle hello instances: ${results.density.pssPerInstanceMb} MB PSS each over ${results.density.instances} instances, ` +
      `${results.density.instancesPer1024Mb ?? 'n/a'} per 1024 MB.`,
    '',
    '| target | goal | measured | met |',
    '| --- | --- | ---: | --- |',
    ...Object.entries(results.targets).map(([name, t]) => `| ${name} | ${t.target} | ${t.measured} | ${t.met ? 'yes' : 'no'} |`),
    '',
  ];
  return lines.join('\n');
}

async function main() {
  const started = Date.now();
  const host = hostInfo();
  // The machine is shared: how busy it was says how far scheduling delays weigh on a path of several hops.
  const loadBefore = loadavg()[0] ?? 0;
  const common = { ISOLA_BACKENDS: 'isolate', ISOLA_LOG_LEVEL: 'error' };
  // Room for every idle instance of the density figure: the budget counts each at its memory limit.
  const bare = await ServerProcess.start({
    env: { ...common, ISOLA_PREWARM: 'isolate:0', ISOLA_MEMORY_BUDGET_MB: String((DENSITY_INSTANCES + 8) * MEMORY_MB) },
  });
  const pooled = await ServerProcess.start({ env: { ...common, ISOLA_PREWARM: 'isolate:2' } });
  const noPoolApi = new Api(bare, 'cold');
  const pooledApi = new Api(pooled, 'pooled');
  // The harness's bare peer: node:http in a process of its own, calling the same function.
  const bareHttp = await startNodeHttp({ code: HELLO_JS, params: PARAMS });
  const bareClient = new TimingClient(bareHttp.url);
  try {
    // Warm up every path once (the server's own code, the engine in this process), unmeasured.
    for (let i = 0; i < 5; i++) {
      rawCold();
      rawPooled();
      await bareClient.send('POST', '/', PARAMS);
      for (const api of [noPoolApi, pooledApi]) {
        const name = await api.deploy();
        await api.coldCall(name);
        await api.remove(name);
      }
    }
    // Also, not a target's baseline: raw pooled with its isolate made before the pause that the
    // API's blank isolates sit through too (a CPU that idled meanwhile runs the same steps slower).
    const raw = { cold: [] as number[], pooled: [] as number[], pooledAfterPause: [] as number[] };
    const api = { cold: [] as number[], pooled: [] as number[] };
    const httpFloor: number[] = [];
    // Read from the server's counter after each call: it keeps a bounded number of functions' series.
    let hits = 0;
    log(`${SAMPLES} samples of each, in turns...`);
    for (let i = 0; i < SAMPLES; i++) {
      const coldName = await noPoolApi.deploy();
      const pooledName = await pooledApi.deploy();
      await pause(POOL_GAP_MS);
      raw.cold.push(rawCold());
      api.cold.push(await noPoolApi.coldCall(coldName));
      raw.pooled.push(rawPooled());
      api.pooled.push(await pooledApi.coldCall(pooledName));
      if ((await pooledApi.stemCellStarts([pooledName])) === 1) hits++;
      // Removed so that the idle instances of the samples do not pile up.
      await noPoolApi.remove(coldName);
      await pooledApi.remove(pooledName);
      // Apart from the four above, so as not to change what comes before each of them.
      const madeAhead = rawReady();
      await pause(POOL_GAP_MS);
      raw.pooledAfterPause.push(rawPooled(madeAhead));
      await pause(POOL_GAP_MS);
      httpFloor.push(await time(() => bareClient.send('POST', '/', PARAMS)));
    }
    log(`density: ${DENSITY_INSTANCES} idle hello instances...`);
    const idle = await density(noPoolApi, DENSITY_INSTANCES);
    const summaries = {
      raw: { cold: summarize(raw.cold), pooled: summarize(raw.pooled), pooledAfterPause: summarize(raw.pooledAfterPause) },
      api: { cold: summarize(api.cold), pooled: summarize(api.pooled), pooledHits: `${hits} of ${SAMPLES}` },
      httpFloor: summarize(httpFloor),
    };
    const coldRatio = ratio(summaries.api.cold.p50, summaries.raw.cold.p50);
    const pooledExtra = round(summaries.api.pooled.p50 - summaries.raw.pooled.p50, 3);
    const targets = {
      apiColdToRawCold: { target: `<= ${TARGETS.coldRatio}x`, measured: coldRatio, met: coldRatio <= TARGETS.coldRatio },
      apiPooledAboveRawPooledMs: {
        target: `<= ${TARGETS.pooledExtraMs} ms`,
        measured: pooledExtra,
        met: pooledExtra <= TARGETS.pooledExtraMs,
      },
      idleInstancesPer1024Mb: {
        target: `>= ${TARGETS.instancesPerGb}`,
        measured: idle.instancesPer1024Mb,
        met: (idle.instancesPer1024Mb ?? 0) >= TARGETS.instancesPerGb,
      },
    };
    const load = { before: round(loadBefore, 2), after: round(loadavg()[0] ?? 0, 2) };
    const results = {
      benchmark: 'isolate-start',
      quick,
      host,
      loadAverage1m: load,
      samples: SAMPLES,
      memoryMb: MEMORY_MB,
      ...summaries,
      density: idle,
      targets,
      durationSeconds: Math.round((Date.now() - started) / 1000),
    };
    mkdirSync(outDir, { recursive: true });
    const base = join(outDir, quick ? 'isolate-start-quick' : 'isolate-start');
    writeFileSync(`${base}.json`, `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(`${base}.md`, markdown({ ...summaries, density: idle, targets, host, load }));
    process.stdout.write(`${JSON.stringify({ ...summaries, density: idle, targets }, null, 2)}\n`);
    log(`wrote ${base}.json and .md`);
  } finally {
    noPoolApi.client.close();
    pooledApi.client.close();
    bareClient.close();
    await bareHttp.stop();
    await bare.dispose();
    await pooled.dispose();
  }
}

await main();
