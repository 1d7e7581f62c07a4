/**
 * Container and gVisor backends: for runc, crun and runsc, cold start, prewarmed start and warm
 * latency (p50/p99) through the API, against the same runtime CLI run directly on the same bundle
 * in the same run, in turns with the same pacing (spawned and handed the function, timed to its
 * result), a bare `node` start of
 * the same agent, and host memory (PSS) per idle instance. Writes
 * packages/bench/results/containers.json.
 *
 *   node --no-node-snapshot --import tsx packages/bench/suites/containers.ts [--quick]
 */

import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../../../src/core/types.js';
import { ensureNodeRootfs } from '../../../src/images/node-rootfs.js';
import { findBinary } from '../../../src/sandbox/container/runtime.js';
import { RUNNING_AS_ROOT } from '../../../src/sandbox/host-ids.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { KeepAliveClient } from '../src/http.js';
import { bareNodeStart, bareOciRun } from '../src/peers.js';
import { cgroupPids, pssMib, round } from '../src/pss.js';
import { pause, ratio, summarize, time } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const HELLO = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';
const log = (message: string) => process.stderr.write(`${message}\n`);

type RuntimeName = 'runc' | 'crun' | 'runsc';
const COLD = { runc: quick ? 5 : 20, crun: quick ? 5 : 20, runsc: quick ? 3 : 10 } as const;
const WARM = quick ? 50 : 300;
const IDLE_INSTANCES = quick ? 2 : 5;

const HELLO_FN = { code: HELLO, params: { name: 'x' } };
const image = (dataDir: string) => ensureNodeRootfs(join(dataDir, 'images'), join(dataDir, 'runtime'));

interface ApiFigures {
  cold: number[];
  coldInit: number[];
}

/** One cold start through the API: a function of its own, deployed, left alone for gapMs, invoked, then removed. */
async function apiColdOnce(
  server: ServerProcess,
  client: KeepAliveClient,
  isolation: string,
  name: string,
  gapMs: number,
  figures: ApiFigures,
): Promise<void> {
  await server.deploy(name, HELLO, { limits: { memory: 256 }, annotations: [{ key: 'isolation', value: isolation }] });
  await pause(gapMs);
  let record: ActivationRecord | undefined;
  figures.cold.push(
    await time(async () => {
      record = JSON.parse((await client.send('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, { name: 'x' })).body);
    }),
  );
  const init = record?.annotations.find((a) => a.key === 'initTime')?.value;
  if (record?.annotations.find((a) => a.key === 'coldStart')?.value !== true)
    throw new Error(`expected a cold start: ${JSON.stringify(record)}`);
  figures.coldInit.push(Number(init));
  // Drop the instance so that the next cold start does not compete with idle containers.
  await server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
}

async function apiCold(
  server: ServerProcess,
  client: KeepAliveClient,
  isolation: string,
  label: string,
  count: number,
  gapMs: number,
): Promise<ApiFigures> {
  const figures: ApiFigures = { cold: [], coldInit: [] };
  for (let i = 0; i < count; i++) await apiColdOnce(server, client, isolation, `${label}-${i}`, gapMs, figures);
  return figures;
}

/**
 * Bare CLI runs and cold starts through the API, taken in turns with the same pause before each:
 * on these machines a start after an idle moment is slower than one right after another, so the
 * two must be paced alike for their ratio to be the platform's overhead.
 */
async function coldSideBySide(
  name: RuntimeName,
  server: ServerProcess,
  client: KeepAliveClient,
  isolation: string,
  workDir: string,
  gapMs: number,
): Promise<{ bare: number[]; api: ApiFigures }> {
  const bare: number[] = [];
  const api: ApiFigures = { cold: [], coldInit: [] };
  const rootfs = image(server.dataDir);
  for (let i = 0; i < COLD[name]; i++) {
    await pause(gapMs);
    bare.push(...(await bareOciRun(name, rootfs, workDir, HELLO_FN, 1, 256, i)));
    await apiColdOnce(server, client, isolation, `cold-${name}-${i}`, gapMs, api);
  }
  return { bare, api };
}

async function measureRuntime(name: RuntimeName, workDir: string) {
  const isolation = name === 'runsc' ? 'gvisor' : 'container';
  const env = {
    ISOLA_BACKENDS: isolation,
    ...(name === 'runsc' ? {} : { ISOLA_CONTAINER_RUNTIME: name }),
  };
  const server = await ServerProcess.start({ env: { ...env, ISOLA_PREWARM: `${isolation}:0` } });
  const client = new KeepAliveClient(server.url, { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` });
  log(`${name}: bare CLI runs and cold starts through the API, in turns...`);
  const { bare, api: cold } = await coldSideBySide(name, server, client, isolation, workDir, 100);
  log(`${name}: warm invocations...`);
  await server.deploy(`warm-${name}`, HELLO, { limits: { memory: 256 }, annotations: [{ key: 'isolation', value: isolation }] });
  await client.send('POST', `/api/v1/namespaces/_/actions/warm-${name}?blocking=true`, {});
  const warm: number[] = [];
  for (let i = 0; i < WARM; i++)
    warm.push(await time(() => client.send('POST', `/api/v1/namespaces/_/actions/warm-${name}?blocking=true&result=true`, {})));
  log(`${name}: memory of idle instances...`);
  for (let i = 0; i < IDLE_INSTANCES; i++) {
    await server.deploy(`idle-${name}-${i}`, HELLO, {
      limits: { memory: 256 },
      annotations: [{ key: 'isolation', value: isolation }],
    });
    await client.send('POST', `/api/v1/namespaces/_/actions/idle-${name}-${i}?blocking=true`, {});
  }
  await pause(1000);
  const serverPid = Number((await server.request<{ pid: number }>('GET', '/healthz', undefined, { auth: null })).body.pid);
  const pss = readdirSync('/sys/fs/cgroup/memory/isola')
    .filter((entry) => entry.startsWith(`isola-${serverPid}-`))
    .map((entry) => cgroupPids(`/isola/${entry}`).reduce((sum, pid) => sum + pssMib(pid), 0))
    .filter((mib) => mib > 0);
  client.close();
  await server.dispose();

  const prewarmedStart = async (mode: 'started' | 'created') => {
    log(`${name}: prewarmed (${mode} ahead) starts through the API...`);
    const prewarmServer = await ServerProcess.start({
      env: { ...env, ISOLA_PREWARM: `${isolation}:1`, ISOLA_CONTAINER_PREWARM: mode },
    });
    const prewarmClient = new KeepAliveClient(prewarmServer.url, {
      authorization: `Basic ${Buffer.from(prewarmServer.auth).toString('base64')}`,
    });
    const figures = await apiCold(
      prewarmServer,
      prewarmClient,
      isolation,
      `pre-${name}`,
      COLD[name],
      name === 'runsc' ? 1500 : 400,
    );
    prewarmClient.close();
    await prewarmServer.dispose();
    return figures;
  };
  const prewarmed = await prewarmedStart('started');
  const created = await prewarmedStart('created');

  const bareSummary = summarize(bare);
  const coldSummary = summarize(cold.cold);
  return {
    runtime: name,
    isolation,
    bareCliRun: bareSummary,
    api: {
      cold: coldSummary,
      coldInitTime: summarize(cold.coldInit),
      prewarmed: summarize(prewarmed.cold),
      prewarmedInitTime: summarize(prewarmed.coldInit),
      prewarmedCreatedOnly: summarize(created.cold),
      prewarmedCreatedOnlyInitTime: summarize(created.coldInit),
      warm: summarize(warm),
    },
    coldOverheadOverBareCli: round(coldSummary.p50 / bareSummary.p50 - 1, 3),
    idlePssMib: {
      instances: pss.length,
      mean: round(pss.reduce((a, b) => a + b, 0) / Math.max(1, pss.length)),
      each: pss.map((v) => round(v)),
    },
  };
}

async function main() {
  if (!RUNNING_AS_ROOT) throw new Error('the container benchmark needs root');
  const started = Date.now();
  const workDir = mkdtempSync(join(tmpdir(), 'isola-bench-ctr-'));
  const runtimes = (['runc', 'crun', 'runsc'] as const).filter((r) => findBinary(r));
  const results: Record<string, unknown> = { benchmark: 'containers', quick, host: hostInfo() };
  try {
    const probe = await ServerProcess.start({ env: { ISOLA_BACKENDS: 'isolate' } });
    log('bare node start...');
    const node = summarize(await bareNodeStart(image(probe.dataDir), HELLO_FN, 20));
    await probe.dispose();
    const perRuntime = [];
    for (const runtime of runtimes) perRuntime.push(await measureRuntime(runtime, workDir));
    const byName = Object.fromEntries(perRuntime.map((r) => [r.runtime, r]));
    results.bareNodeStart = node;
    results.runtimes = perRuntime;
    results.targets = {
      coldOverheadOverBareCli: perRuntime.map((r) => ({
        runtime: r.runtime,
        target: '<= 0.10',
        measured: r.coldOverheadOverBareCli,
        met: r.coldOverheadOverBareCli <= 0.1,
      })),
      prewarmedStartOverBareNode: perRuntime.map((r) => {
        const measured = ratio(r.api.prewarmed.p50, node.p50);
        return { runtime: r.runtime, target: '<= 1.2', measured, met: measured <= 1.2 };
      }),
      gvisorColdOverRunc: byName.runsc && byName.runc ? ratio(byName.runsc.api.cold.p50, byName.runc.api.cold.p50) : null,
    };
    results.durationSeconds = Math.round((Date.now() - started) / 1000);
    mkdirSync(outDir, { recursive: true });
    const file = join(outDir, quick ? 'containers-quick.json' : 'containers.json');
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(`${JSON.stringify({ bareNodeStart: node, targets: results.targets }, null, 2)}\n`);
    log(`wrote ${file}`);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

await main();
