/**
 * The WebAssembly backend: cold start through the invoke path with the compiled module cached
 * (a new version of a module already compiled) and without (a module never seen), warm latency
 * and warm throughput, against isolate and runc container cold starts in the same run. The
 * platform runs in this process so that the invoke path can be timed without HTTP, and HTTP is
 * timed as well. Writes packages/bench/results/wasm.json.
 *
 *   node --no-node-snapshot --import tsx packages/bench/suites/wasm.ts [--quick]
 */

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { buildServer } from '../../../src/api/server.js';
import { resolveServerConfig } from '../../../src/config.js';
import type { Isolation } from '../../../src/core/kinds.js';
import type { ActionVersion } from '../../../src/core/types.js';
import type { InvokeCommand } from '../../../src/platform/invoke.js';
import type { ActionDraft } from '../../../src/platform/platform.js';
import { Platform } from '../../../src/platform/platform.js';
import type { WasmBackend } from '../../../src/sandbox/wasm/wasm-backend.js';
import { hostInfo } from '../src/host.js';
import { KeepAliveClient } from '../src/http.js';
import { pause, ratio, summarize, time } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const N = { wasm: quick ? 50 : 300, isolate: quick ? 30 : 100, container: quick ? 5 : 20, warm: quick ? 300 : 2000 };
const log = (message: string) => process.stderr.write(`${message}\n`);
const GREET = readFileSync(new URL('../../../examples/wasm/greet.wasm', import.meta.url));
const HELLO_JS = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';

/** The same module with a custom section of its own, so that nothing has it compiled yet. */
function unique(bytes: Buffer, tag: number): Buffer {
  const name = Buffer.from('isola-bench');
  const payload = Buffer.from(String(tag));
  const content = Buffer.concat([Buffer.from([name.length]), name, payload]);
  return Buffer.concat([bytes, Buffer.from([0, content.length]), content]);
}

function draft(name: string, isolation: Isolation, code: string, kind: 'wasm' | 'nodejs:20'): ActionDraft {
  return {
    namespace: 'guest',
    name,
    exec: { kind, code, binary: kind === 'wasm' },
    limits: { memory: isolation === 'wasm' ? 64 : 256, timeout: 60_000, concurrency: 1, logs: 10_240 },
    parameters: [],
    annotations: [],
    isolation,
  };
}

/** A blocking call as the guest, straight into the platform's invoke (no HTTP). */
function syncCall(action: ActionVersion, params: Record<string, unknown>): InvokeCommand {
  const ref = { namespace: action.namespace, name: action.name };
  return { function: ref, params, mode: 'sync', door: 'openwhisk', caller: { kind: 'namespace', namespace: 'guest' } };
}

/**
 * Each action's first call. `gapMs` of idle between them: on these virtual machines a thread
 * that has slept a few ms takes a few hundred us to wake, which back-to-back calls never pay.
 */
async function coldThroughInvoke(platform: Platform, actions: ActionVersion[], gapMs = 5) {
  const total: number[] = [];
  const init: number[] = [];
  for (const action of actions) {
    let initTime = Number.NaN;
    total.push(
      await time(async () => {
        const outcome = await platform.invoke(syncCall(action, { name: 'cold' }));
        if (outcome.kind !== 'completed' || !outcome.record.response.success)
          throw new Error(`cold start failed: ${JSON.stringify(outcome)}`);
        if (outcome.record.annotations.find((a) => a.key === 'coldStart')?.value !== true)
          throw new Error('expected a cold start');
        initTime = Number(outcome.record.annotations.find((a) => a.key === 'initTime')?.value);
      }),
    );
    init.push(initTime);
    if (gapMs > 0) await pause(gapMs);
  }
  return { total: summarize(total), initTime: summarize(init) };
}

async function main() {
  const started = Date.now();
  const dataDir = mkdtempSync(join(tmpdir(), 'isola-bench-wasm-'));
  const config = resolveServerConfig(
    { dataDir, port: '0', backends: 'isolate,wasm,container', prewarm: 'isolate:2,container:0', containerRuntime: 'runc' },
    { ISOLA_LOG_LEVEL: 'error' },
  );
  const platform = await Platform.start(config);
  const app = buildServer(platform);
  await app.listen({ port: 0, host: '127.0.0.1' });
  const address = app.server.address();
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  const auth = `Basic ${Buffer.from(`${platform.guest.uuid}:${platform.guest.key}`).toString('base64')}`;
  const client = new KeepAliveClient(url, { authorization: auth });
  // The backends are probed in the background: the wasm backend itself is there once they end.
  await platform.backendsProbed;
  const wasm = platform.backends.get('wasm') as WasmBackend;
  const results: Record<string, unknown> = { benchmark: 'wasm', quick, host: hostInfo() };
  try {
    log('wasm: cold starts with the module compiled already...');
    await platform.deploy(draft('greet-warmup', 'wasm', GREET.toString('base64'), 'wasm'), true);
    const cached: ActionVersion[] = [];
    for (let i = 0; i < N.wasm; i++)
      cached.push(await platform.deploy(draft(`greet-cached-${i}`, 'wasm', GREET.toString('base64'), 'wasm'), true));
    const wasmCached = await coldThroughInvoke(platform, cached);
    log('wasm: the same, back to back...');
    const burst: ActionVersion[] = [];
    for (let i = 0; i < N.wasm; i++)
      burst.push(await platform.deploy(draft(`greet-burst-${i}`, 'wasm', GREET.toString('base64'), 'wasm'), true));
    const wasmCachedBackToBack = await coldThroughInvoke(platform, burst, 0);

    log('wasm: cold starts of modules never compiled...');
    const uncached: ActionVersion[] = [];
    for (let i = 0; i < N.wasm; i++)
      uncached.push(await platform.deploy(draft(`greet-new-${i}`, 'wasm', unique(GREET, i).toString('base64'), 'wasm'), true));
    // Deploying compiled them (that is where a malformed module is refused); forget that here.
    wasm.clearCache();
    const wasmUncached = await coldThroughInvoke(platform, uncached);

    log('wasm: cold starts through HTTP...');
    const httpCold: number[] = [];
    for (let i = 0; i < N.wasm; i++) {
      await platform.deploy(draft(`greet-http-${i}`, 'wasm', GREET.toString('base64'), 'wasm'), true);
      httpCold.push(
        await time(() => client.send('POST', `/api/v1/namespaces/_/actions/greet-http-${i}?blocking=true`, { name: 'x' })),
      );
    }

    log('wasm: warm latency and throughput...');
    await client.send('POST', '/api/v1/namespaces/_/actions/greet-cached-0?blocking=true', {});
    const warmInvoke: number[] = [];
    for (let i = 0; i < N.warm; i++)
      warmInvoke.push(await time(() => platform.invoke(syncCall(cached[0] as ActionVersion, { name: 'w' }))));
    const warmHttp: number[] = [];
    for (let i = 0; i < N.warm; i++)
      warmHttp.push(
        await time(() =>
          client.send('POST', '/api/v1/namespaces/_/actions/greet-cached-0?blocking=true&result=true', { name: 'w' }),
        ),
      );
    const load = await autocannon({
      url: `${url}/api/v1/namespaces/_/actions/greet-cached-0?blocking=true&result=true`,
      method: 'POST',
      headers: { authorization: auth, 'content-type': 'application/json' },
      body: '{"name":"load"}',
      connections: 16,
      duration: quick ? 3 : 10,
    });

    log('isolate: cold starts...');
    const isolateActions: ActionVersion[] = [];
    for (let i = 0; i < N.isolate; i++)
      isolateActions.push(await platform.deploy(draft(`js-${i}`, 'isolate', HELLO_JS, 'nodejs:20'), true));
    const isolate: { total: ReturnType<typeof summarize>; initTime: ReturnType<typeof summarize> } = {
      total: summarize([]),
      initTime: summarize([]),
    };
    {
      const total: number[] = [];
      const init: number[] = [];
      for (const action of isolateActions) {
        await pause(30); // let the pool of blank isolates refill
        const one = await coldThroughInvoke(platform, [action]);
        total.push(one.total.p50);
        init.push(one.initTime.p50);
      }
      isolate.total = summarize(total);
      isolate.initTime = summarize(init);
    }

    let container: { total: ReturnType<typeof summarize>; initTime: ReturnType<typeof summarize> } | string =
      'runc is not available here';
    if (platform.backends.has('container')) {
      log('container (runc): cold starts...');
      const total: number[] = [];
      const init: number[] = [];
      for (let i = 0; i < N.container; i++) {
        const action = await platform.deploy(draft(`ctr-${i}`, 'container', HELLO_JS, 'nodejs:20'), true);
        const one = await coldThroughInvoke(platform, [action]);
        total.push(one.total.p50);
        init.push(one.initTime.p50);
        await platform.deleteAction('guest', `ctr-${i}`);
        await pause(100);
      }
      container = { total: summarize(total), initTime: summarize(init) };
    }

    const runcCold = typeof container === 'string' ? Number.NaN : container.total.p50;
    results.wasm = {
      coldCompiledModuleCached: wasmCached,
      coldCompiledModuleCachedBackToBack: wasmCachedBackToBack,
      coldModuleNotCompiled: wasmUncached,
      coldThroughHttp: summarize(httpCold),
      warmThroughInvoke: summarize(warmInvoke),
      warmThroughHttp: summarize(warmHttp),
      throughput: { connections: 16, requestsPerSecond: Math.round(load.requests.average), errors: load.errors + load.non2xx },
    };
    results.isolateCold = isolate;
    results.runcContainerCold = container;
    results.ratios = {
      wasmCachedColdToRuncCold: ratio(wasmCached.total.p50, runcCold),
      wasmCachedBackToBackColdToRuncCold: ratio(wasmCachedBackToBack.total.p50, runcCold),
      wasmCachedColdToIsolateCold: ratio(wasmCached.total.p50, isolate.total.p50),
      wasmColdFasterThanRuncPercent: Math.round((1 - wasmCached.total.p50 / runcCold) * 1000) / 10,
    };
    results.targets = {
      coldCachedInvokePathP50Ms: { target: '<= 1', measured: wasmCached.total.p50, met: wasmCached.total.p50 <= 1 },
      coldCachedShareOfRuncCold: {
        target: '<= 0.005',
        measured: ratio(wasmCached.total.p50, runcCold),
        met: wasmCached.total.p50 / runcCold <= 0.005,
      },
    };
    results.durationSeconds = Math.round((Date.now() - started) / 1000);
    mkdirSync(outDir, { recursive: true });
    const file = join(outDir, quick ? 'wasm-quick.json' : 'wasm.json');
    writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
    process.stdout.write(
      `${JSON.stringify({ wasm: results.wasm, ratios: results.ratios, targets: results.targets }, null, 2)}\n`,
    );
    log(`wrote ${file}`);
  } finally {
    client.close();
    await app.close();
    await platform.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

await main();
