import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Registry } from 'prom-client';
import { waitFor } from '../../../test/helpers/server-process.js';
import { LEAVES_A_MARK, loopsOnLongInput } from '../../../test/helpers/wasm-modules.js';
import { wat } from '../../../test/helpers/wat.js';
import { buildBundle } from '../../guest/bundle.js';
import type { RunOutcome, Sandbox } from '../backend.js';
import { WasmBackend } from './wasm-backend.js';

const example = (file: string) => readFileSync(new URL(`../../../examples/wasm/${file}`, import.meta.url)).toString('base64');

let versions = 0;
let activations = 0;

async function load(
  backend: WasmBackend,
  code: string,
  options: { namespace?: string; memoryMb?: number } = {},
): Promise<Sandbox> {
  const sandbox = await backend.create({ memoryMb: options.memoryMb ?? 64 });
  const init = await sandbox.init(
    {
      key: `${options.namespace ?? 'test'}/fn@${++versions}#r${versions}`,
      kind: 'wasm',
      code,
      binary: true,
      main: 'main',
      filename: 'fn.wasm',
      env: {},
      logLimitBytes: 10 * 2 ** 20,
    },
    Date.now() + 5000,
    () => {},
  );
  assert.deepEqual(init, { ok: true });
  return sandbox;
}

/** One run; `logs` are the texts the sink received. */
async function run(sandbox: Sandbox, params: Record<string, unknown> = {}, timeoutMs = 5000) {
  const logs: string[] = [];
  const outcome: RunOutcome = await sandbox.run({
    activationId: `a${++activations}`,
    params,
    deadline: Date.now() + timeoutMs,
    env: {},
    onLog: (_stream, text) => logs.push(text),
  });
  return { outcome, logs };
}

/**
 * Runs until one is taken on the fast path: three short runs on a worker qualify a version, and a
 * busy host can make a short run look long, so how many that takes is not fixed.
 */
async function warm(sandbox: Sandbox, backend: WasmBackend, params: Record<string, unknown> = {}) {
  await waitFor(
    'a run on the fast path',
    async () => {
      const sync = backend.runStats.sync;
      assert.equal((await run(sandbox, params)).outcome.kind, 'result');
      return backend.runStats.sync > sync ? true : undefined;
    },
    60_000,
  );
}

describe('wasm backend: runs on the server thread for short modules', () => {
  const runtime = mkdtempSync(join(tmpdir(), 'isola-wasm-test-'));
  const backend = new WasmBackend({
    workerScript: buildBundle('wasm-worker', runtime),
    meterScript: buildBundle('wasm-meter', runtime),
    workers: 2,
  });

  before(async () => {
    assert.equal((await backend.status()).available, true);
  });
  after(async () => {
    await backend.close();
    rmSync(runtime, { recursive: true, force: true });
  });

  it('moves a short module to the server thread after a few runs, with the same results and logs', async () => {
    const sandbox = await load(backend, example('greet.wasm'));
    const before = { ...backend.runStats };
    const results: Awaited<ReturnType<typeof run>>[] = [];
    await waitFor(
      'four runs on the fast path',
      async () => {
        results.push(await run(sandbox, { name: `n${results.length}` }));
        return backend.runStats.sync - before.sync >= 4 ? true : undefined;
      },
      60_000,
    );
    assert.ok(backend.runStats.async - before.async >= 3, 'the first runs were made on a worker');
    assert.deepEqual(
      results.map((r) => r.outcome),
      results.map((_, i) => ({ kind: 'result', result: { greeting: `Hello n${i}`, language: 'AssemblyScript' } })),
    );
    assert.deepEqual(
      results.map((r) => r.logs),
      results.map((_, i) => [`greeting n${i}\n`]),
    );
  });

  it('stops a module looping on the server thread, ends it at its timeout on a worker, and serves other calls meanwhile', async () => {
    const looping = await load(backend, await wat(loopsOnLongInput()));
    const other = await load(backend, example('greet.wasm'));
    await warm(looping, backend);
    const before = { ...backend.runStats };
    const finished: string[] = [];
    // The fast-path attempt is synchronous: by the time run() returns, it has overrun its budget
    // and the run has moved to a worker, where only the deadline stops it.
    const loop = run(looping, { padding: 'more than twenty bytes' }, 1500).then((r) => {
      finished.push('loop');
      return r;
    });
    assert.equal(backend.runStats.overruns, before.overruns + 1, 'the loop overran the fast path');
    const served = await run(other, { name: 'meanwhile' });
    finished.push('other');
    assert.deepEqual(served.outcome, { kind: 'result', result: { greeting: 'Hello meanwhile', language: 'AssemblyScript' } });
    assert.deepEqual((await loop).outcome, { kind: 'timeout' });
    assert.deepEqual(finished, ['other', 'loop']);
    // The version stays off the fast path: its next short run is made on a worker.
    const sync = backend.runStats.sync;
    assert.deepEqual((await run(looping)).outcome, { kind: 'result', result: {} });
    assert.equal(backend.runStats.sync, sync);
  });

  it('takes the fast path away from a namespace whose versions keep overrunning it', async () => {
    const code = await wat(loopsOnLongInput());
    for (let i = 0; i < 3; i++) {
      const sandbox = await load(backend, code, { namespace: 'noisy' });
      await warm(sandbox, backend);
      const overruns = backend.runStats.overruns;
      assert.deepEqual((await run(sandbox, { padding: 'more than twenty bytes' }, 200)).outcome, { kind: 'timeout' });
      assert.equal(backend.runStats.overruns, overruns + 1);
    }
    const fresh = await load(backend, code, { namespace: 'noisy' });
    const sync = backend.runStats.sync;
    for (let i = 0; i < 5; i++) assert.deepEqual((await run(fresh)).outcome, { kind: 'result', result: {} });
    assert.equal(backend.runStats.sync, sync, 'a new version of the same namespace runs on workers');
  });

  it('runs everything on workers when the fast path is turned off', async () => {
    const off = new WasmBackend({ workerScript: buildBundle('wasm-worker', runtime), workers: 1, fastPath: false });
    try {
      const sandbox = await load(off, example('greet.wasm'));
      for (let i = 0; i < 6; i++) assert.equal((await run(sandbox, { name: 'x' })).outcome.kind, 'result');
      assert.deepEqual(off.runStats, { sync: 0, async: 6, overruns: 0 });
    } finally {
      await off.close();
    }
  });

  it('counts both paths and the overruns in its metrics', async () => {
    const registry = new Registry();
    backend.registerMetrics(registry);
    const text = await registry.metrics();
    assert.match(text, new RegExp(`isola_wasm_runs_total\\{path="sync"\\} ${backend.runStats.sync}\\b`));
    assert.match(text, new RegExp(`isola_wasm_runs_total\\{path="async"\\} ${backend.runStats.async}\\b`));
    assert.match(text, new RegExp(`isola_wasm_fast_path_overruns_total ${backend.runStats.overruns}\\b`));
  });
});

describe('wasm backend: scratch directory', () => {
  const runtime = mkdtempSync(join(tmpdir(), 'isola-wasm-test-'));
  const backend = new WasmBackend({
    workerScript: buildBundle('wasm-worker', runtime),
    meterScript: buildBundle('wasm-meter', runtime),
    workers: 1,
  });

  after(async () => {
    await backend.close();
    rmSync(runtime, { recursive: true, force: true });
  });

  it('gives a run a /tmp it can write and read back, on a worker and on the fast path', async () => {
    const sandbox = await load(backend, example('scratch.wasm'));
    const params = { seed: 7, rounds: 0, bytes: 4096, chunk: 1000 };
    const first = await run(sandbox, params);
    assert.equal(first.outcome.kind, 'result');
    assert.equal((first.outcome as { result: { readBack: boolean } }).result.readBack, true);
    await warm(sandbox, backend, params);
    assert.deepEqual((await run(sandbox, params)).outcome, first.outcome);
  });

  it('refuses writes past a quarter of the memory limit with ENOSPC', async () => {
    const sandbox = await load(backend, example('scratch.wasm'), { memoryMb: 32 });
    const fits = await run(sandbox, { rounds: 0, bytes: 7 * 2 ** 20, chunk: 2 ** 20 });
    assert.equal((fits.outcome as { result: { readBack: boolean } }).result.readBack, true);
    const tooBig = await run(sandbox, { rounds: 0, bytes: 9 * 2 ** 20, chunk: 2 ** 20 });
    assert.deepEqual(tooBig.outcome, { kind: 'result', result: { error: 'fd_write failed with errno 51' } });
  });
});

describe('wasm backend: memories', () => {
  const runtime = mkdtempSync(join(tmpdir(), 'isola-wasm-test-'));
  const backend = new WasmBackend({ workerScript: buildBundle('wasm-worker', runtime), workers: 1, fastPath: false });

  after(async () => {
    await backend.close();
    rmSync(runtime, { recursive: true, force: true });
  });

  it("starts every run on a worker on zeroed memory, kept from that worker's previous run", async () => {
    const sandbox = await load(backend, await wat(LEAVES_A_MARK), { memoryMb: 16 });
    const results = [];
    for (let i = 0; i < 3; i++) results.push((await run(sandbox)).outcome);
    assert.deepEqual(results, [
      { kind: 'result', result: { seen: 0, pages: 1 } },
      { kind: 'result', result: { seen: 0, pages: 2 } },
      { kind: 'result', result: { seen: 0, pages: 3 } },
    ]);
  });
});
