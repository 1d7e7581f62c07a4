/**
 * The foundation benchmark: for the isolate and process backends, cold start and warm invoke
 * latency through the HTTP API, the same calls made directly on the sandbox in the same run
 * (the platform's overhead), and warm hello-world throughput over HTTP against a bare node:http
 * server in the same run. Writes packages/bench/results/foundation.json.
 *
 *   npm run bench [-- --quick]
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../../../src/core/types.js';
import { buildAgent } from '../../../src/guest/bundle.js';
import type { Backend, FunctionCode } from '../../../src/sandbox/backend.js';
import { IsolateBackend } from '../../../src/sandbox/isolate/isolate-backend.js';
import { ProcessBackend } from '../../../src/sandbox/process/process-backend.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { KeepAliveClient } from '../src/http.js';
import { loadTest, startNodeHttp } from '../src/peers.js';
import { pause, ratio, summarize, time } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const HELLO = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';
const SIZES = {
  isolate: { cold: quick ? 30 : 200, warm: quick ? 200 : 2000 },
  process: { cold: quick ? 10 : 40, warm: quick ? 100 : 1000 },
} as const;
const THROUGHPUT_SECONDS = quick ? 3 : 10;
const CONNECTIONS = 16;

type Isolation = keyof typeof SIZES;
const log = (message: string) => process.stderr.write(`${message}\n`);

function annotation(record: ActivationRecord, key: string): unknown {
  return record.annotations.find((a) => a.key === key)?.value;
}

async function apiLatencies(server: ServerProcess, isolation: Isolation) {
  const client = new KeepAliveClient(server.url, { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` });
  const invoke = (name: string, query: string) =>
    client.send('POST', `/api/v1/namespaces/_/actions/${name}?${query}`, { name: 'bench' });
  const memory = 256; // the default, which the blank sandboxes are made for
  const deploy = (name: string) =>
    server.deploy(name, HELLO, { limits: { memory }, annotations: [{ key: 'isolation', value: isolation }] });
  const coldTotal: number[] = [];
  const coldInit: number[] = [];
  for (let i = 0; i < SIZES[isolation].cold; i++) {
    await deploy(`cold-${isolation}-${i}`);
    // Let the pool of blank sandboxes refill, as it does between requests that are not back to back.
    await pause(isolation === 'process' ? 150 : 50);
    let record: ActivationRecord | undefined;
    coldTotal.push(
      await time(async () => {
        record = JSON.parse((await invoke(`cold-${isolation}-${i}`, 'blocking=true')).body) as ActivationRecord;
      }),
    );
    if (!record || annotation(record, 'coldStart') !== true) throw new Error(`expected a cold start: ${JSON.stringify(record)}`);
    coldInit.push(Number(annotation(record, 'initTime')));
  }
  await deploy(`warm-${isolation}`);
  await server.invoke(`warm-${isolation}`);
  const warm: number[] = [];
  for (let i = 0; i < SIZES[isolation].warm; i++) {
    warm.push(await time(() => invoke(`warm-${isolation}`, 'blocking=true&result=true')));
  }
  client.close();
  return { cold: summarize(coldTotal), coldInitTime: summarize(coldInit), warm: summarize(warm) };
}

async function directLatencies(backend: Backend, isolation: Isolation) {
  const memoryMb = 256;
  const code = (i: number): FunctionCode => ({
    key: `direct/${isolation}@${i}`,
    kind: 'nodejs:20',
    code: HELLO,
    binary: false,
    main: 'main',
    filename: 'index.js',
    env: {},
    logLimitBytes: 10 * 2 ** 20,
  });
  const run = { activationId: 'direct', params: { name: 'direct' }, env: {}, onLog: () => {} };
  const created: number[] = [];
  const prewarmed: number[] = [];
  for (let i = 0; i < SIZES[isolation].cold; i++) {
    created.push(
      await time(async () => {
        const sandbox = await backend.create({ memoryMb });
        await sandbox.init(code(i), Date.now() + 60_000, () => {});
        await sandbox.run({ ...run, deadline: Date.now() + 60_000 });
        void sandbox.destroy();
      }),
    );
    const blank = await backend.create({ memoryMb });
    prewarmed.push(
      await time(async () => {
        await blank.init(code(i), Date.now() + 60_000, () => {});
        await blank.run({ ...run, deadline: Date.now() + 60_000 });
      }),
    );
    await blank.destroy();
  }
  const sandbox = await backend.create({ memoryMb });
  await sandbox.init(code(-1), Date.now() + 60_000, () => {});
  const warm: number[] = [];
  for (let i = 0; i < SIZES[isolation].warm; i++)
    warm.push(await time(() => sandbox.run({ ...run, deadline: Date.now() + 60_000 })));
  await sandbox.destroy();
  return { coldCreated: summarize(created), coldPrewarmed: summarize(prewarmed), warm: summarize(warm) };
}

const load = (url: string, headers: Record<string, string>, body: string) =>
  loadTest(url, headers, body, THROUGHPUT_SECONDS, CONNECTIONS);

async function main() {
  const started = Date.now();
  const results: Record<string, unknown> = { benchmark: 'foundation', quick, host: hostInfo() };
  const server = await ServerProcess.start({ env: { ISOLA_LOG_LEVEL: 'error', ISOLA_PREWARM: 'isolate:2,process:1' } });
  const runtimeDir = mkdtempSync(join(tmpdir(), 'isola-bench-'));
  try {
    const backends: Record<Isolation, Backend> = {
      isolate: new IsolateBackend(),
      process: new ProcessBackend({ agentPath: buildAgent(runtimeDir) }),
    };
    const perBackend: Record<string, unknown> = {};
    for (const isolation of ['isolate', 'process'] as const) {
      log(`${isolation}: latency through the API...`);
      const api = await apiLatencies(server, isolation);
      log(`${isolation}: the same calls directly on the sandbox...`);
      const direct = await directLatencies(backends[isolation], isolation);
      perBackend[isolation] = {
        api,
        direct,
        overheadMs: {
          coldP50: Math.round((api.cold.p50 - direct.coldPrewarmed.p50) * 1000) / 1000,
          warmP50: Math.round((api.warm.p50 - direct.warm.p50) * 1000) / 1000,
        },
      };
    }
    results.backends = perBackend;

    log('throughput: bare node:http...');
    const bare = await startNodeHttp({ code: HELLO, params: { name: 'load' } });
    const bareLoad = await load(bare.url, { 'content-type': 'application/json' }, '{"name":"load"}');
    await bare.stop();
    log('throughput: Isola, warm isolate...');
    const auth = `Basic ${Buffer.from(server.auth).toString('base64')}`;
    await server.deploy('throughput', HELLO, { limits: { memory: 128 } });
    await server.invoke('throughput');
    const isolaLoad = await load(
      `${server.url}/api/v1/namespaces/_/actions/throughput?blocking=true&result=true`,
      { 'content-type': 'application/json', authorization: auth },
      '{"name":"load"}',
    );
    results.throughput = {
      connections: CONNECTIONS,
      seconds: THROUGHPUT_SECONDS,
      bareNodeHttp: bareLoad,
      isolaIsolate: isolaLoad,
      ratioToBare: ratio(isolaLoad.requestsPerSecond, bareLoad.requestsPerSecond),
    };
    const iso = perBackend.isolate as { api: { cold: { p50: number }; warm: { p50: number } } };
    results.targets = {
      isolateColdStartApiP50Ms: { target: '<= 5', measured: iso.api.cold.p50, met: iso.api.cold.p50 <= 5 },
      warmInvokeApiP50Ms: { target: '<= 1', measured: iso.api.warm.p50, met: iso.api.warm.p50 <= 1 },
      throughputRatioToBareNodeHttp: {
        target: '>= 0.5',
        measured: ratio(isolaLoad.requestsPerSecond, bareLoad.requestsPerSecond),
        met: isolaLoad.requestsPerSecond / bareLoad.requestsPerSecond >= 0.5,
      },
    };
    results.durationSeconds = Math.round((Date.now() - started) / 1000);
    mkdirSync(outDir, { recursive: true });
    const file = join(outDir, quick ? 'foundation-quick.json' : 'foundation.json');
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(
      `${JSON.stringify({ backends: perBackend, throughput: results.throughput, targets: results.targets }, null, 2)}\n`,
    );
    log(`wrote ${file}`);
    await backends.isolate.close();
    await backends.process.close();
  } finally {
    await server.dispose();
    rmSync(runtimeDir, { recursive: true, force: true });
  }
}

await main();
