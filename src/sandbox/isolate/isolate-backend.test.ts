import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { FunctionCode, RunOutcome, Sandbox } from '../backend.js';
import { IsolateBackend } from './isolate-backend.js';

// The synchronous fast path: a version whose runs proved short is called on the server's thread
// within a budget; one that overruns it is made again asynchronously in a new isolate.
describe('isolate backend: runs on the server thread for short functions', () => {
  const backend = new IsolateBackend();
  let versions = 0;

  async function load(code: string, namespace = 'test'): Promise<Sandbox> {
    const sandbox = await backend.create({ memoryMb: 64 });
    const key = `${namespace}/fast@${++versions}`;
    const fn: FunctionCode = {
      key,
      kind: 'nodejs:20',
      code,
      binary: false,
      main: 'main',
      filename: 'index.js',
      env: {},
      logLimitBytes: 10 * 2 ** 20,
    };
    const init = await sandbox.init(fn, Date.now() + 5000, () => {});
    assert.deepEqual(init, { ok: true });
    return sandbox;
  }

  async function run(sandbox: Sandbox, params: Record<string, unknown> = {}, timeoutMs = 5000) {
    const logs: string[] = [];
    const outcome: RunOutcome = await sandbox.run({
      activationId: `a${Math.random().toString(16).slice(2)}`,
      params,
      deadline: Date.now() + timeoutMs,
      env: {},
      onLog: (_stream, text) => logs.push(text.trim()),
    });
    return { outcome, logs };
  }

  /** Makes the sandbox's version eligible: a few short runs on the asynchronous path. */
  async function warm(sandbox: Sandbox) {
    for (let i = 0; i < 4; i++) assert.equal((await run(sandbox)).outcome.kind, 'result');
  }

  before(async () => {
    assert.equal((await backend.status()).available, true);
  });
  after(async () => {
    await backend.close();
  });

  it('moves a short function to the synchronous path after a few runs, with the same results and logs', async () => {
    const sandbox = await load(
      'let calls = 0; function main(p) { calls++; console.log("call", calls); return { calls, x: p.x ?? null }; }',
    );
    const before = { ...backend.runStats };
    const results = [];
    // Ten runs: three to qualify, and room for one run that a busy host makes look long.
    for (let i = 0; i < 10; i++) results.push(await run(sandbox, { x: i }));
    assert.deepEqual(
      results.map((r) => r.outcome),
      results.map((_, i) => ({ kind: 'result', result: { calls: i + 1, x: i } })),
    );
    assert.deepEqual(
      results.map((r) => r.logs),
      results.map((_, i) => [`call ${i + 1}`]),
    );
    assert.ok(backend.runStats.sync - before.sync >= 4, `sync runs: ${JSON.stringify(backend.runStats)}`);
    await sandbox.destroy();
  });

  it('finishes a run that awaits a timer after starting synchronously', async () => {
    const sandbox = await load(
      'async function main(p) { if (p.wait) await new Promise((r) => setTimeout(r, p.wait)); return { waited: p.wait ?? 0 }; }',
    );
    await warm(sandbox);
    const syncBefore = backend.runStats.sync;
    const started = Date.now();
    const { outcome } = await run(sandbox, { wait: 50 });
    assert.deepEqual(outcome, { kind: 'result', result: { waited: 50 } });
    assert.ok(Date.now() - started >= 45);
    assert.equal(backend.runStats.sync, syncBefore + 1, 'it was started on the fast path');
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { waited: 0 } });
    await sandbox.destroy();
  });

  it('makes a run that overruns the budget again asynchronously, drops its logs, and keeps the version off the fast path', async () => {
    const sandbox = await load(
      'function main(p) { console.log("start", p.spinMs ?? 0); const end = Date.now() + (p.spinMs ?? 0); while (Date.now() < end) {} return { spun: p.spinMs ?? 0 }; }',
    );
    await warm(sandbox);
    const before = { ...backend.runStats };
    const { outcome, logs } = await run(sandbox, { spinMs: 60 });
    assert.deepEqual(outcome, { kind: 'result', result: { spun: 60 } });
    assert.deepEqual(logs, ['start 60'], 'the abandoned attempt left no log line');
    assert.equal(backend.runStats.overruns, before.overruns + 1);
    const afterOverrun = { ...backend.runStats };
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { spun: 0 } });
    assert.equal(backend.runStats.sync, afterOverrun.sync, 'the version stays on the asynchronous path');
    assert.ok(sandbox.alive);
    await sandbox.destroy();
  });

  it('takes the fast path away from a namespace whose versions keep overrunning it', async () => {
    const SPIN = 'function main(p) { const end = Date.now() + (p.spinMs ?? 0); while (Date.now() < end) {} return {}; }';
    for (let i = 0; i < 3; i++) {
      const sandbox = await load(SPIN, 'noisy');
      await warm(sandbox);
      const overruns = backend.runStats.overruns;
      assert.equal((await run(sandbox, { spinMs: 40 })).outcome.kind, 'result');
      assert.equal(backend.runStats.overruns, overruns + 1);
      await sandbox.destroy();
    }
    const fresh = await load(SPIN, 'noisy');
    await warm(fresh);
    const syncBefore = backend.runStats.sync;
    assert.equal((await run(fresh)).outcome.kind, 'result');
    assert.equal(backend.runStats.sync, syncBefore, 'a new version of the same namespace runs asynchronously');
    await fresh.destroy();
    const neighbour = await load(SPIN, 'quiet');
    await warm(neighbour);
    const neighbourBefore = backend.runStats.sync;
    assert.equal((await run(neighbour)).outcome.kind, 'result');
    assert.equal(backend.runStats.sync, neighbourBefore + 1, 'another namespace keeps the fast path');
    await neighbour.destroy();
  });

  it('still stops an endless loop at the function timeout, not at the budget', async () => {
    const sandbox = await load('function main(p) { if (p.spin) { while (true) {} } return {}; }');
    await warm(sandbox);
    const started = Date.now();
    const { outcome } = await run(sandbox, { spin: true }, 400);
    const took = Date.now() - started;
    assert.deepEqual(outcome, { kind: 'timeout' });
    assert.ok(took >= 350 && took < 3000, `stopped after ${took} ms`);
    assert.equal(sandbox.alive, false);
  });

  it('times out a synchronously started run that waits on a timer past its deadline', async () => {
    const sandbox = await load(
      'async function main(p) { if (p.wait) await new Promise((r) => setTimeout(r, 60000)); return {}; }',
    );
    await warm(sandbox);
    const started = Date.now();
    const { outcome } = await run(sandbox, { wait: true }, 300);
    assert.deepEqual(outcome, { kind: 'timeout' });
    assert.ok(Date.now() - started < 3000);
  });

  it('reports running out of memory when started on the fast path', async () => {
    const sandbox = await load(
      'function main(p) { if (!p.hog) return {}; const keep = []; for (;;) keep.push(new Array(100000).fill(Math.random())); }',
    );
    await warm(sandbox);
    const { outcome } = await run(sandbox, { hog: true }, 20000);
    assert.equal(outcome.kind, 'oom');
    assert.equal(sandbox.alive, false);
  });
});
