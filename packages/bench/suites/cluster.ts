/**
 * What running as a cluster costs and how fast it recovers, on this machine, in one run:
 *
 * 1. Warm blocking calls of a trivial function (isolate backend) over HTTP keep-alive, through
 *    one controller and one invoker (`--role controller` / `--role invoker`, NATS between them)
 *    against one all-in-one `isola serve` on the same PostgreSQL: the only difference is the
 *    cluster path (controller -> NATS request/reply -> invoker -> reply). Sequential calls for
 *    latency and concurrent clients for throughput; rounds interleave the two setups (which one
 *    goes first alternates) so that the shared machine's noise falls on both alike, and the
 *    figures are reported as differences and ratios to the all-in-one server.
 * 2. Recovery: two invokers, asynchronous calls of a function that runs ~1.5 s, SIGKILL of an
 *    invoker while it runs some of them; the time from the kill to the first of the calls it held
 *    starting (and ending) on the other invoker, read from the records (`attempt` > 1, `invoker`,
 *    `start`, `end`), and the time until controllers no longer list the dead invoker.
 *
 * Private PostgreSQL and nats-server in temp dirs (test/helpers), each server a real child
 * process. Writes packages/bench/results/cluster.json and cluster.md (cluster-quick.* with --quick).
 *
 *   npm run bench:cluster [-- --quick] [-- --out=DIR]
 */

import { randomBytes, randomUUID } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../../../src/core/types.js';
import { NatsInstance } from '../../../test/helpers/nats.js';
import { PostgresInstance } from '../../../test/helpers/postgres.js';
import { annotation, ServerProcess, waitFor } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { KeepAliveClient } from '../src/http.js';
import { percentile } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));

/** Latency: rounds of sequential calls, each round one batch per setup. */
const LATENCY_ROUNDS = quick ? 6 : 20;
const LATENCY_CALLS_PER_ROUND = 100;
const WARMUP_CALLS = 200;
/** Throughput: rounds of a fixed number of calls spread over concurrent clients. */
const THROUGHPUT_ROUNDS = quick ? 2 : 4;
const THROUGHPUT_CALLS = quick ? 800 : 2000;
const CLIENTS = 8;
/** Recovery: trials, each with a fresh invoker beside the one left from the trial before. */
const RECOVERY_TRIALS = quick ? 1 : 3;
const RECOVERY_CALLS = 6;
const RECOVERY_RUN_MS = 1500;

/** The targets. */
const TARGET_P50_EXTRA_MS = 1;
const REGISTRY_TTL_MS = 10_000;
const TARGET_RECOVERY_MS = REGISTRY_TTL_MS + 1000;
/** The work stream's ack wait (src/cluster/bus.ts, `ackWaitMs`' default): what bounds redelivery. */
const ACK_WAIT_MS = 10_000;

const TRIVIAL = 'function main() { return { ok: true }; }';
const SLOW = `function main(p) { return new Promise((r) => setTimeout(() => r({ n: p.n }), ${RECOVERY_RUN_MS})); }`;
const log = (message: string) => process.stderr.write(`${message}\n`);
const round3 = (x: number) => Math.round(x * 1000) / 1000;

interface Latency {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  mean: number;
  min: number;
  max: number;
}

function latency(samples: readonly number[]): Latency {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: round3(percentile(sorted, 50)),
    p95: round3(percentile(sorted, 95)),
    p99: round3(percentile(sorted, 99)),
    mean: round3(sorted.reduce((a, b) => a + b, 0) / Math.max(1, sorted.length)),
    min: round3(sorted[0] ?? Number.NaN),
    max: round3(sorted.at(-1) ?? Number.NaN),
  };
}

const median = (values: readonly number[]) =>
  percentile(
    [...values].sort((a, b) => a - b),
    50,
  );

/** A setup under test: where its blocking calls go in. */
interface Setup {
  name: 'all-in-one' | 'cluster';
  client: KeepAliveClient;
}

const INVOKE_PATH = '/api/v1/namespaces/_/actions/trivial?blocking=true&result=true';

async function call(setup: Setup): Promise<number> {
  const start = performance.now();
  const response = await setup.client.send('POST', INVOKE_PATH, { x: 1 });
  const elapsed = performance.now() - start;
  if (response.status !== 200) throw new Error(`${setup.name}: ${response.status} ${response.body}`);
  return elapsed;
}

/** Sequential calls, `rounds` times `calls` per setup, the setups taking turns to go first. */
async function measureLatency(setups: readonly Setup[]) {
  const samples = new Map<string, number[]>(setups.map((s) => [s.name, []]));
  const roundMedians = new Map<string, number[]>(setups.map((s) => [s.name, []]));
  for (let round = 0; round < LATENCY_ROUNDS; round++) {
    const order = round % 2 === 0 ? setups : [...setups].reverse();
    for (const setup of order) {
      const batch: number[] = [];
      for (let i = 0; i < LATENCY_CALLS_PER_ROUND; i++) batch.push(await call(setup));
      samples.get(setup.name)?.push(...batch);
      roundMedians.get(setup.name)?.push(median(batch));
    }
  }
  return { samples, roundMedians };
}

/** `THROUGHPUT_CALLS` blocking calls by `CLIENTS` clients at once: calls per second. */
async function throughputRound(setup: Setup): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (next < THROUGHPUT_CALLS) {
        next++;
        await call(setup);
      }
    }),
  );
  return THROUGHPUT_CALLS / ((performance.now() - started) / 1000);
}

async function measureThroughput(setups: readonly Setup[]) {
  const rates = new Map<string, number[]>(setups.map((s) => [s.name, []]));
  for (let round = 0; round < THROUGHPUT_ROUNDS; round++) {
    const order = round % 2 === 0 ? setups : [...setups].reverse();
    for (const setup of order) rates.get(setup.name)?.push(await throughputRound(setup));
  }
  return rates;
}

interface InvokerStatus {
  id: string;
  backends: string[];
}

interface RecoveryTrial {
  trial: number;
  /** Calls running on either invoker just before the kill. */
  runningAtKill: number;
  /** Calls the killed invoker was running when it died: they ran again on the other (`attempt` > 1). */
  heldRunning: number;
  /** Calls started on the surviving invoker after the kill (the held ones, and any it had fetched but not started). */
  startedAfterKill: number;
  /** Kill to the first held call starting on the other invoker. */
  firstRestartMs: number | null;
  /** Kill to the first held call ending there (its record complete). */
  firstCompletionMs: number | null;
  /** Kill to the last of the trial's calls ending. */
  allDoneMs: number;
  /** Kill to the controller no longer listing the dead invoker (its registry entry's TTL). */
  leftRegistryMs: number;
  failed: number;
}

async function main() {
  const started = Date.now();
  const loadAtStart = loadavg().map(round3);
  log('starting a private PostgreSQL and nats-server...');
  const [postgres, nats] = await Promise.all([PostgresInstance.start(), NatsInstance.start()]);
  const servers: ServerProcess[] = [];
  const clients: KeepAliveClient[] = [];
  try {
    const adminToken = randomBytes(16).toString('hex');
    const guestAuth = `${randomUUID()}:${randomBytes(32).toString('hex')}`;
    const common = {
      ISOLA_GUEST_AUTH: guestAuth,
      ISOLA_ADMIN_TOKEN: adminToken,
      ISOLA_BACKENDS: 'isolate',
      ISOLA_PREWARM: '',
      ISOLA_MEMORY_BUDGET_MB: '2048',
    };
    const clusterEnv = { ...common, ISOLA_DATABASE_URL: await postgres.createDatabase('cluster'), ISOLA_NATS_URL: nats.url };
    const start = async (env: Record<string, string>) => {
      const server = await ServerProcess.start({ env });
      servers.push(server);
      return server;
    };

    log('starting the all-in-one server, the controller and the first invoker...');
    const allInOne = await start({ ...common, ISOLA_DATABASE_URL: await postgres.createDatabase('single') });
    // The controller first: it creates the schema that the invokers then share.
    const controller = await start({ ...clusterEnv, ISOLA_ROLE: 'controller' });
    const firstInvoker = await start({ ...clusterEnv, ISOLA_ROLE: 'invoker' });
    const listInvokers = async () => {
      const response = await controller.request<{ invokers: InvokerStatus[] }>('GET', '/api/v1/invokers', undefined, {
        auth: null,
        headers: { authorization: `Bearer ${adminToken}` },
      });
      if (response.status !== 200) throw new Error(`GET /api/v1/invokers: ${response.status}`);
      return response.body.invokers;
    };
    const idOf = (server: ServerProcess) => (invokers: InvokerStatus[]) =>
      invokers.find((invoker) => server.pid !== undefined && invoker.id.endsWith(`-${server.pid}`));
    await waitFor(
      'the controller to list the invoker with its backend',
      async () => (idOf(firstInvoker)(await listInvokers())?.backends.includes('isolate') ? true : undefined),
      30_000,
    );

    // ---- 1. warm latency and throughput ------------------------------------------------------
    const authorization = `Basic ${Buffer.from(guestAuth).toString('base64')}`;
    const setups: Setup[] = [
      { name: 'all-in-one', client: new KeepAliveClient(allInOne.url, { authorization }) },
      { name: 'cluster', client: new KeepAliveClient(controller.url, { authorization }) },
    ];
    clients.push(...setups.map((s) => s.client));
    for (const server of [allInOne, controller]) {
      const deployed = await server.deploy('trivial', TRIVIAL);
      if (deployed.status !== 200) throw new Error(`deploy: ${deployed.status} ${JSON.stringify(deployed.body)}`);
    }
    log(`warming up (${WARMUP_CALLS} calls each)...`);
    for (const setup of setups) for (let i = 0; i < WARMUP_CALLS; i++) await call(setup);
    // What is measured is warm, and the cluster's calls run on the invoker.
    const checks = await Promise.all(
      [allInOne, controller].map(async (server) => (await server.invoke<ActivationRecord>('trivial', { x: 1 })).body),
    );
    for (const record of checks)
      if (annotation(record, 'coldStart') !== false) throw new Error(`not warm after the warm-up: ${JSON.stringify(record)}`);
    const ranOn = annotation(checks[1] as ActivationRecord, 'invoker');
    if (ranOn !== idOf(firstInvoker)(await listInvokers())?.id) throw new Error(`the cluster's call ran on ${String(ranOn)}`);

    log(`latency: ${LATENCY_ROUNDS} rounds of ${LATENCY_CALLS_PER_ROUND} sequential calls per setup...`);
    const { samples, roundMedians } = await measureLatency(setups);
    log(`throughput: ${THROUGHPUT_ROUNDS} rounds of ${THROUGHPUT_CALLS} calls by ${CLIENTS} clients per setup...`);
    const rates = await measureThroughput(setups);
    for (const client of clients) client.close();
    // The all-in-one server is done: it should not take the machine's time from the recovery runs.
    await allInOne.dispose();
    servers.splice(servers.indexOf(allInOne), 1);

    const single = latency(samples.get('all-in-one') ?? []);
    const cluster = latency(samples.get('cluster') ?? []);
    const singleRounds = roundMedians.get('all-in-one') ?? [];
    const clusterRounds = roundMedians.get('cluster') ?? [];
    const pairedP50DiffMs = round3(median(clusterRounds.map((c, i) => c - (singleRounds[i] ?? Number.NaN))));
    const singleRate = median(rates.get('all-in-one') ?? []);
    const clusterRate = median(rates.get('cluster') ?? []);
    const warm = {
      function: 'nodejs:20 on the isolate backend, `return { ok: true }`, blocking=true&result=true',
      latencyMs: { 'all-in-one': single, cluster },
      p50DiffMs: round3(cluster.p50 - single.p50),
      /** The median over rounds of (cluster's round median - all-in-one's round median): the two ran side by side. */
      pairedP50DiffMs,
      p50Ratio: round3(cluster.p50 / single.p50),
      p95DiffMs: round3(cluster.p95 - single.p95),
      p95Ratio: round3(cluster.p95 / single.p95),
      roundMediansMs: { 'all-in-one': singleRounds.map(round3), cluster: clusterRounds.map(round3) },
      throughput: {
        clients: CLIENTS,
        callsPerRound: THROUGHPUT_CALLS,
        callsPerSecond: {
          'all-in-one': (rates.get('all-in-one') ?? []).map((r) => Math.round(r)),
          cluster: (rates.get('cluster') ?? []).map((r) => Math.round(r)),
        },
        medianCallsPerSecond: { 'all-in-one': Math.round(singleRate), cluster: Math.round(clusterRate) },
        ratio: round3(clusterRate / singleRate),
      },
      target: {
        claim: `the cluster path adds at most ${TARGET_P50_EXTRA_MS} ms to the warm p50`,
        maxExtraMs: TARGET_P50_EXTRA_MS,
        met: cluster.p50 - single.p50 <= TARGET_P50_EXTRA_MS && pairedP50DiffMs <= TARGET_P50_EXTRA_MS,
      },
    };
    log(
      `warm p50: all-in-one ${single.p50} ms, cluster ${cluster.p50} ms (${warm.p50DiffMs} ms more); throughput ratio ${warm.throughput.ratio}`,
    );

    // ---- 2. recovery after an invoker dies ---------------------------------------------------
    const trials: RecoveryTrial[] = [];
    const records = async (name: string) =>
      (await controller.request<ActivationRecord[]>('GET', `/api/v1/namespaces/_/activations?name=${name}&limit=200&docs=true`))
        .body;
    // Each trial adds a fresh invoker beside the one left from before; either may be killed.
    let survivor = firstInvoker;
    for (let trial = 1; trial <= RECOVERY_TRIALS; trial++) {
      const fresh = await start({ ...clusterEnv, ISOLA_ROLE: 'invoker' });
      const pair = [survivor, fresh];
      await waitFor(
        'the controller to list both invokers, and only them',
        async () => {
          const listed = await listInvokers();
          return listed.length === 2 && pair.every((server) => idOf(server)(listed)?.backends.includes('isolate'))
            ? true
            : undefined;
        },
        30_000,
      );
      const name = `recover-${trial}`;
      const deployed = await controller.deploy(name, SLOW, {
        limits: { memory: 128, timeout: 60_000 },
        annotations: [{ key: 'retries', value: 3 }],
      });
      if (deployed.status !== 200) throw new Error(`deploy: ${deployed.status} ${JSON.stringify(deployed.body)}`);
      for (let n = 0; n < RECOVERY_CALLS; n++) {
        const accepted = await controller.invoke(name, { n }, 'blocking=false');
        if (accepted.status !== 202) throw new Error(`async call: ${accepted.status} ${JSON.stringify(accepted.body)}`);
      }
      // The victim: an invoker running some of the calls, once all of them run somewhere if that
      // comes soon. A call it had fetched but not started yet would run again as attempt 1, not
      // told apart from the survivor's own; once all run, every call it held runs again as attempt 2.
      const busyLine = new RegExp(`^isola_function_instances\\{[^}]*action="${name}"[^}]*state="busy"[^}]*\\} (\\d+)`, 'gm');
      const busy = async (server: ServerProcess) =>
        [...(await server.metrics()).matchAll(busyLine)].reduce((sum, match) => sum + Number(match[1]), 0);
      const allRunningBy = Date.now() + RECOVERY_RUN_MS / 2;
      let runningAtKill = 0;
      const victim = await waitFor(
        'an invoker running some of the calls',
        async () => {
          const counts = await Promise.all(pair.map(busy));
          const total = counts.reduce((a, b) => a + b, 0);
          if (total < RECOVERY_CALLS && Date.now() < allRunningBy) return undefined;
          runningAtKill = total;
          return pair[counts.findIndex((count) => count > 0)];
        },
        30_000,
      );
      const victimId = idOf(victim)(await listInvokers())?.id;
      const killedAt = Date.now();
      await victim.kill();
      log(`trial ${trial}: killed invoker ${victimId} (SIGKILL)`);
      const leftRegistry = waitFor(
        'the dead invoker to leave the registry',
        async () => ((await listInvokers()).some((invoker) => invoker.id === victimId) ? undefined : Date.now()),
        60_000,
      );
      const done = await waitFor(
        'every call of the trial to have its record',
        async () => {
          const listed = await records(name);
          return listed.length >= RECOVERY_CALLS ? listed : undefined;
        },
        120_000,
      );
      const leftAt = await leftRegistry;
      const held = done.filter((record) => Number(annotation(record, 'attempt')) > 1);
      if (held.some((record) => annotation(record, 'invoker') === victimId))
        throw new Error('a call held by the dead invoker is recorded as run there');
      const since = (at: number) => at - killedAt;
      trials.push({
        trial,
        runningAtKill,
        heldRunning: held.length,
        startedAfterKill: done.filter((record) => record.start >= killedAt).length,
        firstRestartMs: held.length > 0 ? since(Math.min(...held.map((record) => record.start))) : null,
        firstCompletionMs: held.length > 0 ? since(Math.min(...held.map((record) => record.end))) : null,
        allDoneMs: since(Math.max(...done.map((record) => record.end))),
        leftRegistryMs: since(leftAt),
        failed: done.filter((record) => record.response.status !== 'success').length,
      });
      log(`trial ${trial}: ${JSON.stringify(trials.at(-1))}`);
      await victim.dispose();
      servers.splice(servers.indexOf(victim), 1);
      survivor = victim === survivor ? fresh : survivor;
    }

    const restarts = trials.flatMap((t) => (t.firstRestartMs === null ? [] : [t.firstRestartMs]));
    const recovery = {
      function: `nodejs:20 on the isolate backend, runs ${RECOVERY_RUN_MS} ms, retries 3, ${RECOVERY_CALLS} asynchronous calls per trial`,
      registryTtlMs: REGISTRY_TTL_MS,
      ackWaitMs: ACK_WAIT_MS,
      progressSignalEveryMs: Math.floor(ACK_WAIT_MS / 3),
      trials,
      worstFirstRestartMs: restarts.length > 0 ? Math.max(...restarts) : null,
      target: {
        claim: `the work of a killed invoker starts again elsewhere within the heartbeat TTL (${REGISTRY_TTL_MS / 1000} s) plus 1 s`,
        maxMs: TARGET_RECOVERY_MS,
        met: restarts.length === trials.length && restarts.every((ms) => ms <= TARGET_RECOVERY_MS),
      },
    };

    const results = {
      benchmark: 'cluster',
      quick,
      host: hostInfo(),
      loadAverage: { atStart: loadAtStart, atEnd: loadavg().map(round3) },
      setups: {
        'all-in-one': 'one isola serve (--role all), PostgreSQL store, no NATS',
        cluster: 'one controller and one invoker (two more for recovery), same PostgreSQL server, NATS JetStream',
        servers: 'private PostgreSQL (fsync off) and nats-server on 127.0.0.1; every server a child process on this machine',
      },
      warm,
      recovery,
      durationSeconds: Math.round((Date.now() - started) / 1000),
    };
    mkdirSync(outDir, { recursive: true });
    const suffix = quick ? '-quick' : '';
    writeFileSync(join(outDir, `cluster${suffix}.json`), `${JSON.stringify(results, null, 2)}\n`);
    const markdown = report(results.host.date, warm, recovery);
    writeFileSync(join(outDir, `cluster${suffix}.md`), `${markdown}\n`);
    process.stdout.write(`${markdown}\n`);
  } catch (error) {
    // What the servers printed says why a step failed (a server that exited, say).
    for (const server of servers)
      process.stderr.write(`--- a server's last output (pid ${server.pid ?? 'exited'}):\n${server.output.slice(-3000)}\n`);
    throw error;
  } finally {
    for (const client of clients) client.close();
    await Promise.allSettled(servers.map((server) => server.dispose()));
    await Promise.allSettled([nats.stop(), postgres.stop()]);
  }
}

function report(
  date: string,
  warm: {
    latencyMs: Record<'all-in-one' | 'cluster', Latency>;
    p50DiffMs: number;
    pairedP50DiffMs: number;
    p50Ratio: number;
    p95DiffMs: number;
    p95Ratio: number;
    throughput: { medianCallsPerSecond: Record<'all-in-one' | 'cluster', number>; ratio: number };
    target: { met: boolean };
  },
  recovery: { trials: RecoveryTrial[]; target: { met: boolean } },
): string {
  const single = warm.latencyMs['all-in-one'];
  const cluster = warm.latencyMs.cluster;
  const rate = warm.throughput.medianCallsPerSecond;
  const signed = (value: number) => (value >= 0 ? `+${value}` : `${value}`);
  const ms = (value: number | null) => (value === null ? 'none held' : `${(value / 1000).toFixed(2)} s`);
  return [
    `Measured ${date} (npm run bench:cluster): warm blocking calls of a trivial isolate function, ${single.n} sequential calls per setup in ${LATENCY_ROUNDS} interleaved rounds, throughput by ${CLIENTS} clients.`,
    '',
    '| | all-in-one | cluster | difference | ratio |',
    '|---|---|---|---|---|',
    `| p50 (ms) | ${single.p50} | ${cluster.p50} | ${signed(warm.p50DiffMs)} (paired by round: ${signed(warm.pairedP50DiffMs)}) | ${warm.p50Ratio} |`,
    `| p95 (ms) | ${single.p95} | ${cluster.p95} | ${signed(warm.p95DiffMs)} | ${warm.p95Ratio} |`,
    `| p99 (ms) | ${single.p99} | ${cluster.p99} | ${signed(round3(cluster.p99 - single.p99))} | ${round3(cluster.p99 / single.p99)} |`,
    `| calls/s, ${CLIENTS} clients | ${rate['all-in-one']} | ${rate.cluster} | | ${warm.throughput.ratio} |`,
    '',
    `Target (the cluster path adds at most ${TARGET_P50_EXTRA_MS} ms to the warm p50): ${warm.target.met ? 'met' : 'not met'}.`,
    '',
    `Recovery: ${RECOVERY_CALLS} asynchronous calls of a ${RECOVERY_RUN_MS} ms function on two invokers, SIGKILL of one while it runs some.`,
    '',
    '| trial | calls it held (ran again) | kill to first restart | kill to first of them done | kill to all done | kill to leaving the registry |',
    '|---|---|---|---|---|---|',
    ...recovery.trials.map(
      (t) =>
        `| ${t.trial} | ${t.heldRunning} | ${ms(t.firstRestartMs)} | ${ms(t.firstCompletionMs)} | ${ms(t.allDoneMs)} | ${ms(t.leftRegistryMs)} |`,
    ),
    '',
    `Target (held work starts again within the heartbeat TTL + 1 s = ${TARGET_RECOVERY_MS / 1000} s): ${recovery.target.met ? 'met' : 'not met'}. ` +
      `What bounds it is the work stream's ack wait (${ACK_WAIT_MS / 1000} s, src/cluster/bus.ts): a held message is delivered again once ${ACK_WAIT_MS / 1000} s pass without an acknowledgement or progress signal (sent every ${(ACK_WAIT_MS / 3000).toFixed(1)} s while it runs), so between ${((ACK_WAIT_MS * 2) / 3000).toFixed(1)} and ${ACK_WAIT_MS / 1000} s after the kill; the registry TTL only decides when controllers stop placing blocking calls there.`,
  ].join('\n');
}

await main();
