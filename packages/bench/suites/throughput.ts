/**
 * Warm hello throughput through the blocking invoke API against Cloudflare's workerd serving the
 * same function as a Worker, a bare `node:http` server, and the least a server on this project's
 * stack does for a call (startStackFloor), in one run: closed-loop load with the
 * same connections on each, in rounds taken in turns so that the host's noise falls on all of
 * them alike. Writes packages/bench/results/throughput.{json,md}.
 *
 *   npm run bench:throughput [-- --quick] [-- --database=postgres]
 */

import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { DEFAULT_RECORD_WINDOW_MS } from '../../../src/config.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { type LoadResult, loadTest, type PeerServer, startNodeHttp, startStackFloor, startWorkerd } from '../src/peers.js';
import { ratio, summarize } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const HELLO = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';
const CONNECTIONS = 32;
const ROUNDS = quick ? 2 : 5;
const SECONDS = quick ? 3 : 8;
const BODY = '{"name":"load"}';
const LAG_SAMPLES = quick ? 50 : 200;

const log = (message: string) => process.stderr.write(`${message}\n`);
const median = (values: readonly number[]) => summarize(values).p50;

interface Target {
  name: string;
  url: string;
  headers: Record<string, string>;
  /** The server's process: its CPU time (all its threads) is read around each round. */
  pid: number;
  rounds: (LoadResult & { cpuUsPerRequest: number })[];
}

const CLOCK_TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

function serverPid(server: ServerProcess): number {
  const pid = server.pid;
  if (pid === undefined) throw new Error(`the server is not running:\n${server.output}`);
  return pid;
}

/** CPU time (user + system, every thread) a process has used so far, in ms. */
function processCpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The fields after the command name, which is in parentheses and may hold spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND;
}

async function main() {
  const started = Date.now();
  const workDir = mkdtempSync(join(tmpdir(), 'isola-throughput-'));
  const server = await ServerProcess.start({
    env: { ISOLA_LOG_LEVEL: 'error', ISOLA_RECORD_WINDOW: `${DEFAULT_RECORD_WINDOW_MS}ms` },
  });
  const peers: PeerServer[] = [];
  try {
    await server.deploy('hello', HELLO, { limits: { memory: 128 } });
    await server.invoke('hello');
    const workerd = await startWorkerd({ code: HELLO, params: { name: 'load' } }, workDir);
    peers.push(workerd);
    const bare = await startNodeHttp({ code: HELLO, params: { name: 'load' } });
    peers.push(bare);
    const floor = await startStackFloor({ code: HELLO, params: { name: 'load' } }, workDir, DEFAULT_RECORD_WINDOW_MS);
    peers.push(floor);
    const json = { 'content-type': 'application/json' };
    const targets: Target[] = [
      {
        name: 'isola',
        url: `${server.url}/api/v1/namespaces/_/actions/hello?blocking=true&result=true`,
        headers: { ...json, authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` },
        pid: serverPid(server),
        rounds: [],
      },
      { name: 'workerd', url: workerd.url, headers: json, pid: workerd.pid, rounds: [] },
      { name: 'nodeHttp', url: bare.url, headers: json, pid: bare.pid, rounds: [] },
      { name: 'stackFloor', url: floor.url, headers: json, pid: floor.pid, rounds: [] },
    ];
    // A short unmeasured round each: JIT, connection set-up, the server's caches.
    for (const target of targets) await loadTest(target.url, target.headers, BODY, 1, CONNECTIONS);
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate who goes first so that no side always follows the same neighbour.
      const order = targets.map((_, i) => targets[(i + round) % targets.length] as Target);
      for (const target of order) {
        const cpuBefore = processCpuMs(target.pid);
        const result = await loadTest(target.url, target.headers, BODY, SECONDS, CONNECTIONS);
        const cpuUsPerRequest = Math.round(((processCpuMs(target.pid) - cpuBefore) * 1000 * 10) / result.requests) / 10;
        if (result.errors > 0) throw new Error(`${target.name}: ${result.errors} failed requests in round ${round + 1}`);
        target.rounds.push({ ...result, cpuUsPerRequest });
        log(`round ${round + 1} ${target.name}: ${result.requestsPerSecond} requests/s, ${cpuUsPerRequest} us of CPU a request`);
      }
    }
    log('record commit lag: answer to the record in the database file...');
    const lag = await commitLag(server);
    const [isola, workerdTarget, nodeHttp, stackFloor] = targets as [Target, Target, Target, Target];
    const perSecond = (target: Target) => median(target.rounds.map((r) => r.requestsPerSecond));
    // The ratio of each round's pair, then their median: a round's noise falls on both sides.
    const roundRatios = (other: Target, of: Target = isola) =>
      of.rounds.map((r, i) => ratio(r.requestsPerSecond, (other.rounds[i] as LoadResult).requestsPerSecond));
    const toWorkerd = median(roundRatios(workerdTarget));
    const toNodeHttp = median(roundRatios(nodeHttp));
    const toStackFloor = median(roundRatios(stackFloor));
    const floorToWorkerd = median(roundRatios(workerdTarget, stackFloor));
    const results = {
      benchmark: 'throughput',
      quick,
      host: hostInfo(),
      measuredAt: new Date().toISOString(),
      connections: CONNECTIONS,
      rounds: ROUNDS,
      secondsPerRound: SECONDS,
      requestsPerSecond: {
        isola: perSecond(isola),
        workerd: perSecond(workerdTarget),
        nodeHttp: perSecond(nodeHttp),
        stackFloor: perSecond(stackFloor),
      },
      latencyP50Ms: {
        isola: median(isola.rounds.map((r) => r.latencyMs.p50)),
        workerd: median(workerdTarget.rounds.map((r) => r.latencyMs.p50)),
        nodeHttp: median(nodeHttp.rounds.map((r) => r.latencyMs.p50)),
        stackFloor: median(stackFloor.rounds.map((r) => r.latencyMs.p50)),
      },
      // The server process's CPU time (every thread) over the round, per request completed: less
      // moved by the shared host than requests/s, which also count the time a server waits for a CPU.
      cpuUsPerRequest: Object.fromEntries(targets.map((t) => [t.name, median(t.rounds.map((r) => r.cpuUsPerRequest))])),
      roundRatios: {
        toWorkerd: roundRatios(workerdTarget),
        toNodeHttp: roundRatios(nodeHttp),
        toStackFloor: roundRatios(stackFloor),
      },
      rawRounds: Object.fromEntries(targets.map((t) => [t.name, t.rounds])),
      targets: {
        throughputToWorkerd: { target: '>= 1.0', measured: toWorkerd, met: toWorkerd >= 1 },
      },
      ratioToNodeHttp: toNodeHttp,
      ratioToStackFloor: toStackFloor,
      stackFloorToWorkerd: floorToWorkerd,
      recordWindowMs: DEFAULT_RECORD_WINDOW_MS,
      commitLagMs: lag,
      durationSeconds: Math.round((Date.now() - started) / 1000),
    };
    mkdirSync(outDir, { recursive: true });
    const name = quick ? 'throughput-quick' : 'throughput';
    writeFileSync(join(outDir, `${name}.json`), `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(join(outDir, `${name}.md`), markdown(results));
    process.stdout.write(markdown(results));
  } finally {
    for (const peer of peers) await peer.stop();
    await server.dispose();
    rmSync(workDir, { recursive: true, force: true });
  }
}

/**
 * How long after a blocking call was answered its record is in the database, read from the SQLite
 * file itself (a read through the API would commit it first): what a kill -9 at that moment loses.
 */
async function commitLag(server: ServerProcess) {
  const db = new Database(join(server.dataDir, 'isola.db'), { readonly: true });
  const stored = db.prepare('select 1 from activations where activation_id = ?');
  const auth = { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}`, 'content-type': 'application/json' };
  const samples: number[] = [];
  try {
    for (let i = 0; i < LAG_SAMPLES; i++) {
      const response = await fetch(`${server.url}/api/v1/namespaces/_/actions/hello?blocking=true`, {
        method: 'POST',
        headers: auth,
        body: BODY,
      });
      const answered = performance.now();
      const { activationId } = (await response.json()) as { activationId: string };
      const deadline = answered + 10_000;
      while (!stored.get(activationId)) {
        if (performance.now() > deadline) throw new Error(`the record of ${activationId} did not reach the database in 10 s`);
        await new Promise((resolve) => setImmediate(resolve));
      }
      samples.push(performance.now() - answered);
    }
  } finally {
    db.close();
  }
  return summarize(samples);
}

function markdown(r: {
  measuredAt: string;
  connections: number;
  rounds: number;
  secondsPerRound: number;
  requestsPerSecond: Record<string, number>;
  latencyP50Ms: Record<string, number>;
  cpuUsPerRequest: Record<string, number>;
  roundRatios: { toWorkerd: number[]; toNodeHttp: number[]; toStackFloor: number[] };
  targets: { throughputToWorkerd: { measured: number; met: boolean } };
  ratioToNodeHttp: number;
  ratioToStackFloor: number;
  stackFloorToWorkerd: number;
  recordWindowMs: number;
  commitLagMs: { p50: number; p99: number; max: number; n: number };
}): string {
  const row = (name: string, key: string) =>
    `| ${name} | ${r.requestsPerSecond[key]?.toLocaleString('en')} | ${r.latencyP50Ms[key]} | ${r.cpuUsPerRequest[key]} |`;
  return `Measured ${r.measuredAt} (npm run bench:throughput): warm hello, ${r.connections} connections, ${r.rounds} rounds of ${r.secondsPerRound} s taken in turns; medians over the rounds. The server's CPU a request is its process's CPU time (every thread) over a round, per request completed.

| server | requests/s | latency p50 (ms) | server CPU a request (us) |
|---|---|---|---|
${row('Isola, isolate, `POST .../actions/hello?blocking=true&result=true` (SQLite)', 'isola')}
${row('workerd, the same function as a Worker', 'workerd')}
${row('bare `node:http` calling the function', 'nodeHttp')}
${row('stack floor: `node:http`, the function in an isolated-vm isolate, a record group-committed to SQLite', 'stackFloor')}

Isola / workerd, per round: ${r.roundRatios.toWorkerd.join(', ')}; median **${r.targets.throughputToWorkerd.measured}x** (target at least 1.0x: ${r.targets.throughputToWorkerd.met ? 'met' : 'not met'}).
Isola / bare node:http, per round: ${r.roundRatios.toNodeHttp.join(', ')}; median ${r.ratioToNodeHttp}x.
Isola / stack floor, per round: ${r.roundRatios.toStackFloor.join(', ')}; median ${r.ratioToStackFloor}x; the stack floor / workerd: median ${r.stackFloorToWorkerd}x.
The stack floor is what is left of a server on this project's stack once everything a platform adds is taken away (one isolate entry a call under a time limit, a four-column record with a time-ordered key, answers written at the end of each round of the event loop): what the stack itself allows, against which the rest of Isola's time a call is its own.

Records are committed after the answer, in groups, within a window of ${r.recordWindowMs} ms: from the answer of a blocking call to its record in the database file, over ${r.commitLagMs.n} calls: p50 ${r.commitLagMs.p50} ms, p99 ${r.commitLagMs.p99} ms, max ${r.commitLagMs.max} ms (what a kill -9 at that moment loses; accepted asynchronous invocations are stored before their 202).
`;
}

await main();
