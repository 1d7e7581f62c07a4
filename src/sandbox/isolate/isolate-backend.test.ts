import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import ivm from 'isolated-vm';
import { Registry } from 'prom-client';
import { waitFor } from '../../../test/helpers/server-process.js';
import { type FunctionCode, type InitOutcome, lateOutputLine, type RunOutcome, type Sandbox } from '../backend.js';
import { IsolateBackend, IsolateSandbox, SyncEligibility } from './isolate-backend.js';

const TRUNCATED = (limit: number) => `Logs were truncated because the total bytes size exceeds the limit of ${limit} bytes.\n`;
let versions = 0;

interface LoadOptions {
  namespace?: string;
  filename?: string;
  logLimitBytes?: number;
  memoryMb?: number;
  initTimeoutMs?: number;
}

/** Creates a sandbox and initialises it with `code`; the caller checks the outcome. */
async function initialise(backend: IsolateBackend, code: string, options: LoadOptions = {}) {
  const sandbox = await backend.create({ memoryMb: options.memoryMb ?? 64 });
  const fn: FunctionCode = {
    key: `${options.namespace ?? 'test'}/fn@${++versions}#r${versions}`,
    kind: 'nodejs:20',
    code,
    binary: false,
    main: 'main',
    filename: options.filename ?? 'index.js',
    env: {},
    logLimitBytes: options.logLimitBytes ?? 10 * 2 ** 20,
  };
  const logs: string[] = [];
  const init: InitOutcome = await sandbox.init(fn, Date.now() + (options.initTimeoutMs ?? 5000), (_stream, text) =>
    logs.push(text),
  );
  return { sandbox, init, logs };
}

async function load(backend: IsolateBackend, code: string, options: LoadOptions = {}): Promise<Sandbox> {
  const { sandbox, init, logs } = await initialise(backend, code, options);
  assert.deepEqual(init, { ok: true }, logs.join(''));
  return sandbox;
}

let activations = 0;

/** One run; `logs` are the texts the sink received, as sent (each ends with a newline). */
async function run(sandbox: Sandbox, params: Record<string, unknown> = {}, timeoutMs = 5000) {
  const logs: string[] = [];
  const id = `a${++activations}`;
  const deadline = Date.now() + timeoutMs;
  const outcome: RunOutcome = await sandbox.run({
    activationId: id,
    params,
    deadline,
    env: {},
    onLog: (_stream, text) => logs.push(text),
  });
  return { id, deadline, outcome, logs };
}

/**
 * Makes the sandbox's version eligible for the fast path: a few short runs on the asynchronous
 * path, then, given the backend, more until one is taken on the fast path (a busy host can make a
 * short run look long, which delays eligibility). Without the backend: the few runs only, for a
 * version that is expected to stay off the fast path.
 */
async function warm(sandbox: Sandbox, backend?: IsolateBackend, params: Record<string, unknown> = {}) {
  for (let i = 0; i < 4; i++) assert.equal((await run(sandbox, params)).outcome.kind, 'result');
  if (backend) await runOnFastPath(sandbox, backend, params, ({ outcome }) => assert.equal(outcome.kind, 'result'));
}

/**
 * Runs the warm function until one run is made on the fast path, and returns that run; `check`
 * sees every run, wherever it was made. A busy host can make a run look long enough to send the
 * version back to proving itself on the asynchronous path between two runs.
 */
async function runOnFastPath(
  sandbox: Sandbox,
  backend: IsolateBackend,
  params: Record<string, unknown> = {},
  check: (result: Awaited<ReturnType<typeof run>> & { elapsedMs: number }) => void = () => {},
) {
  // A minute: on a host busy with other suites (microVMs under emulation), many short runs look long.
  return waitFor(
    'a run on the fast path',
    async () => {
      const syncBefore = backend.runStats.sync;
      const started = Date.now();
      const result = await run(sandbox, params);
      check({ ...result, elapsedMs: Date.now() - started });
      return backend.runStats.sync === syncBefore + 1 ? result : undefined;
    },
    60_000,
  );
}

/** Runs the function again until one run's logs satisfy `found`; returns that run. */
async function runUntil(sandbox: Sandbox, what: string, found: (logs: string[]) => boolean) {
  return waitFor(what, async () => {
    const next = await run(sandbox);
    assert.equal(next.outcome.kind, 'result', JSON.stringify(next.outcome));
    return found(next.logs) ? next : undefined;
  });
}

// The synchronous fast path: a version whose runs proved short is called on the server's thread
// within a budget; one that overruns it is made again asynchronously in a new isolate.
describe('isolate backend: which versions run on the server thread', () => {
  // The rule alone, with the CPU times given: a real run's CPU time depends on the host's load.
  const proven = (eligibility: SyncEligibility, key: string) => {
    for (let i = 0; i < 3; i++) eligibility.observe(key, 0.2);
  };

  it('needs three short runs before a version is eligible', () => {
    const eligibility = new SyncEligibility(16);
    eligibility.observe('ns/a@1', 0.2);
    eligibility.observe('ns/a@1', 0.2);
    assert.equal(eligibility.eligible('ns/a@1'), false);
    eligibility.observe('ns/a@1', 0.2);
    assert.equal(eligibility.eligible('ns/a@1'), true);
  });

  it('keeps a version through a run that takes a little longer, well within the budget', () => {
    const eligibility = new SyncEligibility(16);
    proven(eligibility, 'ns/a@1');
    // A spike of CPU (a garbage collection, say) above what qualifies a run as short, far below the budget.
    eligibility.observe('ns/a@1', 1.5);
    assert.equal(eligibility.eligible('ns/a@1'), true);
  });

  it('sends a version back to proving itself after a run near the budget', () => {
    const eligibility = new SyncEligibility(16);
    proven(eligibility, 'ns/a@1');
    eligibility.observe('ns/a@1', 3);
    assert.equal(eligibility.eligible('ns/a@1'), false);
    proven(eligibility, 'ns/a@1');
    assert.equal(eligibility.eligible('ns/a@1'), true);
  });

  it('bans a version after a second overrun, but not after one', () => {
    const eligibility = new SyncEligibility(16);
    proven(eligibility, 'ns/a@1');
    eligibility.overran('ns/a@1');
    proven(eligibility, 'ns/a@1');
    assert.equal(eligibility.eligible('ns/a@1'), true);
    eligibility.overran('ns/a@1');
    proven(eligibility, 'ns/a@1');
    assert.equal(eligibility.eligible('ns/a@1'), false);
  });
});

describe('isolate backend: runs on the server thread for short functions', () => {
  const backend = new IsolateBackend();

  before(async () => {
    assert.equal((await backend.status()).available, true);
  });
  after(async () => {
    await backend.close();
  });

  it('moves a short function to the synchronous path after a few runs, with the same results and logs', async () => {
    const sandbox = await load(
      backend,
      'let calls = 0; function main(p) { calls++; console.log("call", calls); return { calls, x: p.x ?? null }; }',
    );
    const before = { ...backend.runStats };
    const results: Awaited<ReturnType<typeof run>>[] = [];
    // Runs until four were taken on the fast path: three qualify a version, and a busy host can
    // make any run look long (which delays it), so how many that takes is not fixed.
    await waitFor(
      'four runs on the fast path',
      async () => {
        results.push(await run(sandbox, { x: results.length }));
        return backend.runStats.sync - before.sync >= 4 ? true : undefined;
      },
      60_000,
    );
    assert.deepEqual(
      results.map((r) => r.outcome),
      results.map((_, i) => ({ kind: 'result', result: { calls: i + 1, x: i } })),
    );
    assert.deepEqual(
      results.map((r) => r.logs),
      results.map((_, i) => [`call ${i + 1}\n`]),
    );
    await sandbox.destroy();
  });

  it('finishes a run that awaits a timer after starting synchronously', async () => {
    const sandbox = await load(
      backend,
      'async function main(p) { if (p.wait) await new Promise((r) => setTimeout(r, p.wait)); return { waited: p.wait ?? 0 }; }',
    );
    await warm(sandbox, backend);
    // Each such run must finish, wherever it started; the one looked for started on the fast path.
    await runOnFastPath(sandbox, backend, { wait: 50 }, ({ outcome, elapsedMs }) => {
      assert.deepEqual(outcome, { kind: 'result', result: { waited: 50 } });
      assert.ok(elapsedMs >= 45);
    });
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { waited: 0 } });
    await sandbox.destroy();
  });

  it('answers a value, a promise, a thenable, a throw and a value beside an unhandled rejection on the fast path', async () => {
    const code = [
      'function main(p) {',
      '  if (p.shape === "promise") return (async () => { await null; return { shape: p.shape }; })();',
      '  if (p.shape === "thenable") return { then(resolve) { resolve({ shape: p.shape }); } };',
      '  if (p.shape === "throw") throw new RangeError("thrown at once");',
      '  if (p.shape === "reject") Promise.reject(new Error("left unhandled"));',
      '  if (p.shape === "value") Promise.resolve().then(() => console.log("printed after it returned"));',
      '  return { shape: p.shape };',
      '}',
    ].join('\n');
    const sandbox = await load(backend, code);
    await warm(sandbox, backend);
    for (const shape of ['promise', 'thenable', 'reject']) {
      const { outcome, logs } = await runOnFastPath(sandbox, backend, { shape });
      assert.deepEqual(outcome, { kind: 'result', result: { shape } });
      if (shape === 'reject') assert.match(logs.join(''), /^Unhandled rejection: Error: left unhandled\n/);
      else assert.deepEqual(logs, []);
    }
    const thrown = await runOnFastPath(sandbox, backend, { shape: 'throw' });
    assert.deepEqual(thrown.outcome, { kind: 'error', error: 'thrown at once' });
    assert.match(thrown.logs.join(''), /^RangeError: thrown at once\n\s+at main \(index\.js:4:/);
    // A value is answered as the function returns it: its microtasks' output is leftover output.
    const value = await runOnFastPath(sandbox, backend, { shape: 'value' });
    assert.deepEqual(value.outcome, { kind: 'result', result: { shape: 'value' } });
    assert.deepEqual(value.logs, []);
    const next = await runUntil(sandbox, 'the line printed after it returned', (logs) => logs.length > 0);
    assert.deepEqual(next.logs, [`${lateOutputLine(value.id, 'printed after it returned')}\n`]);
    await sandbox.destroy();
  });

  it('makes a run that overruns the budget again asynchronously, drops its logs, and after a second overrun keeps the version off the fast path', async () => {
    const sandbox = await load(
      backend,
      'function main(p) { console.log("start", p.spinMs ?? 0); const end = Date.now() + (p.spinMs ?? 0); while (Date.now() < end) {} return { spun: p.spinMs ?? 0 }; }',
      // A namespace of its own: its two overruns must not count against the other tests' namespace.
      { namespace: 'overruns-twice' },
    );
    await warm(sandbox, backend);
    const before = { ...backend.runStats };
    const { outcome, logs } = await run(sandbox, { spinMs: 60 });
    assert.deepEqual(outcome, { kind: 'result', result: { spun: 60 } });
    assert.deepEqual(logs, ['start 60\n'], 'the abandoned attempt left no log line');
    assert.equal(backend.runStats.overruns, before.overruns + 1);
    const afterOverrun = { ...backend.runStats };
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { spun: 0 } });
    assert.equal(backend.runStats.sync, afterOverrun.sync, 'the version proves itself short again first');
    // One overrun may be the host's doing (the budget is wall time); a second is the function's.
    await warm(sandbox, backend);
    assert.deepEqual((await run(sandbox, { spinMs: 60 })).outcome, { kind: 'result', result: { spun: 60 } });
    assert.equal(backend.runStats.overruns, before.overruns + 2);
    const afterSecond = { ...backend.runStats };
    for (let i = 0; i < 6; i++) assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { spun: 0 } });
    assert.equal(backend.runStats.sync, afterSecond.sync, 'the version stays on the asynchronous path');
    assert.ok(sandbox.alive);
    await sandbox.destroy();
  });

  it("ends a warm run that overruns the budget with the backend's watchdog, not a timeout of its own", async () => {
    const sandbox = await load(
      backend,
      'function main(p) { const end = Date.now() + (p.spinMs ?? 0); while (Date.now() < end) {} return { spun: p.spinMs ?? 0 }; }',
      { namespace: 'watched' },
    );
    await warm(sandbox, backend);
    // The watchdog learns of an isolate after its first entries: short runs until one is covered.
    await waitFor('a fast-path run covered by the watchdog', async () => {
      const covered = backend.watchdogStats.covered;
      assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { spun: 0 } });
      return backend.watchdogStats.covered > covered ? true : undefined;
    });
    // A busy host can send the version back to proving itself between two runs (a short run that
    // looked long): the long run is made once the version is on the fast path, until it is tried there.
    const before = await waitFor(
      'a long run tried on the fast path',
      async () => {
        await runOnFastPath(sandbox, backend);
        const claimed = backend.watchdogStats.claimed;
        const overruns = backend.runStats.overruns;
        assert.deepEqual((await run(sandbox, { spinMs: 60 })).outcome, { kind: 'result', result: { spun: 60 } });
        return backend.runStats.overruns > overruns ? { claimed, overruns } : undefined;
      },
      120_000,
    );
    assert.equal(backend.runStats.overruns, before.overruns + 1, 'made again asynchronously');
    assert.equal(backend.watchdogStats.claimed, before.claimed + 1, 'the watchdog ended the entry');
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { spun: 0 } });
    assert.ok(sandbox.alive);
    await sandbox.destroy();
  });

  it('takes the fast path away from a namespace whose versions keep overrunning it', async () => {
    const SPIN = 'function main(p) { const end = Date.now() + (p.spinMs ?? 0); while (Date.now() < end) {} return {}; }';
    for (let i = 0; i < 3; i++) {
      const sandbox = await load(backend, SPIN, { namespace: 'noisy' });
      await warm(sandbox, backend);
      const overruns = backend.runStats.overruns;
      assert.equal((await run(sandbox, { spinMs: 40 })).outcome.kind, 'result');
      assert.equal(backend.runStats.overruns, overruns + 1);
      await sandbox.destroy();
    }
    const fresh = await load(backend, SPIN, { namespace: 'noisy' });
    await warm(fresh); // no backend: it must not reach the fast path
    const syncBefore = backend.runStats.sync;
    assert.equal((await run(fresh)).outcome.kind, 'result');
    assert.equal(backend.runStats.sync, syncBefore, 'a new version of the same namespace runs asynchronously');
    await fresh.destroy();
    const neighbour = await load(backend, SPIN, { namespace: 'quiet' });
    await warm(neighbour, backend);
    // Another namespace keeps the fast path.
    await runOnFastPath(neighbour, backend, {}, ({ outcome }) => assert.equal(outcome.kind, 'result'));
    await neighbour.destroy();
  });

  it("tries a version's first run on the fast path, with the same result and logs", async () => {
    const code = 'function main(p) { console.log("first", p.x); return { x: p.x }; }';
    const sandbox = await load(backend, code, { namespace: 'first-runs' });
    const sync = backend.runStats.sync;
    const first = await run(sandbox, { x: 1 });
    assert.deepEqual(first.outcome, { kind: 'result', result: { x: 1 } });
    assert.deepEqual(first.logs, ['first 1\n']);
    assert.equal(backend.runStats.sync, sync + 1, 'the first run was made on the server thread');
    // Only the first: the next runs prove the version short on the isolate's thread as before.
    const async = backend.runStats.async;
    assert.deepEqual((await run(sandbox, { x: 2 })).outcome, { kind: 'result', result: { x: 2 } });
    assert.equal(backend.runStats.async, async + 1, 'the second run was made on the isolate thread');
    await sandbox.destroy();
  });

  it('makes a first run that overruns the budget again asynchronously, without taking the fast path from its namespace', async () => {
    const SPIN =
      'function main(p) { console.log("spin", p.spinMs ?? 0); const end = Date.now() + (p.spinMs ?? 0); while (Date.now() < end) {} return { spun: p.spinMs ?? 0 }; }';
    const slow = await load(backend, SPIN, { namespace: 'first-run-overruns' });
    const before = { ...backend.runStats };
    const { outcome, logs } = await run(slow, { spinMs: 60 });
    assert.deepEqual(outcome, { kind: 'result', result: { spun: 60 } });
    assert.deepEqual(logs, ['spin 60\n'], 'the abandoned attempt left no log line');
    assert.equal(backend.runStats.overruns, before.overruns + 1, 'it overran on the server thread first');
    // The version proves itself as any other, and reaches the fast path.
    const afterOverrun = backend.runStats.sync;
    assert.deepEqual((await run(slow)).outcome, { kind: 'result', result: { spun: 0 } });
    assert.equal(backend.runStats.sync, afterOverrun, 'its next run is made on the isolate thread');
    await warm(slow, backend);
    await slow.destroy();
    // The namespace's next versions' first runs are not tried on the server thread for a while...
    const next = await load(backend, SPIN, { namespace: 'first-run-overruns' });
    const syncBefore = backend.runStats.sync;
    assert.deepEqual((await run(next)).outcome, { kind: 'result', result: { spun: 0 } });
    assert.equal(backend.runStats.sync, syncBefore, "a new version's first run is made on the isolate thread");
    // ...but they still reach the fast path once proven short.
    await warm(next, backend);
    await next.destroy();
  });

  it('still stops an endless loop at the function timeout, not at the budget', async () => {
    const sandbox = await load(backend, 'function main(p) { if (p.spin) { while (true) {} } return {}; }');
    await warm(sandbox, backend);
    const started = Date.now();
    const { outcome } = await run(sandbox, { spin: true }, 400);
    const took = Date.now() - started;
    assert.deepEqual(outcome, { kind: 'timeout' });
    assert.ok(took >= 350 && took < 3000, `stopped after ${took} ms`);
    assert.equal(sandbox.alive, false);
  });

  it('times out a synchronously started run that waits on a timer past its deadline', async () => {
    const sandbox = await load(
      backend,
      'async function main(p) { if (p.wait) await new Promise((r) => setTimeout(r, 60000)); return {}; }',
    );
    await warm(sandbox, backend);
    const started = Date.now();
    const { outcome } = await run(sandbox, { wait: true }, 300);
    assert.deepEqual(outcome, { kind: 'timeout' });
    assert.ok(Date.now() - started < 3000);
  });

  it('reports running out of memory when started on the fast path', async () => {
    const sandbox = await load(
      backend,
      'function main(p) { if (!p.hog) return {}; const keep = []; for (;;) keep.push(new Array(100000).fill(Math.random())); }',
    );
    await warm(sandbox, backend);
    const { outcome } = await run(sandbox, { hog: true }, 20000);
    assert.equal(outcome.kind, 'oom');
    assert.equal(sandbox.alive, false);
  });
});

// The bootstrap's code cache is made once, from a throwaway isolate that loaded and ran a
// function, so that it holds the functions every cold start calls.
describe('isolate backend: the bootstrap code cache', () => {
  it('is made from a throwaway isolate without counting its runs, and new isolates accept it', async () => {
    const backend = new IsolateBackend();
    const stats = { ...backend.runStats };
    assert.equal((await backend.status()).available, true);
    assert.deepEqual(backend.runStats, stats, "the warm-up run is not one of the backend's runs");
    const cachedData = await IsolateSandbox.warmedBootstrapCache();
    assert.ok(cachedData, 'a cache was made');
    const isolate = new ivm.Isolate({ memoryLimit: 16 });
    try {
      const source = readFileSync(new URL('./bootstrap.js', import.meta.url), 'utf8');
      const script = isolate.compileScriptSync(source, { filename: 'isola:bootstrap.js', cachedData });
      // Set on the script by isolated-vm; its typings omit it.
      assert.equal((script as ivm.Script & { cachedDataRejected?: boolean }).cachedDataRejected, false, 'V8 took the cache');
    } finally {
      isolate.dispose();
    }
    const sandbox = await load(backend, 'function main(p) { console.log("n", p.n); return { n: p.n }; }');
    const { outcome, logs } = await run(sandbox, { n: 3 });
    assert.deepEqual(outcome, { kind: 'result', result: { n: 3 } });
    assert.deepEqual(logs, ['n 3\n']);
    await sandbox.destroy();
  });
});

// A cold start without thread hops: the bootstrap, a small function's compile and its top-level
// code run on the server's thread; top-level code that overruns the budget is loaded again in a
// new isolate on the isolate's thread.
describe('isolate backend: loading a function on the server thread', () => {
  const backend = new IsolateBackend();

  it('loads top-level code that overruns the budget again in a new isolate, printing its output once', async () => {
    const overruns = backend.runStats.overruns;
    const { sandbox, init, logs } = await initialise(
      backend,
      'console.log("top-level"); const end = Date.now() + 60; while (Date.now() < end) {}\nfunction main() { return { loaded: true }; }',
      { namespace: 'slow-init' },
    );
    assert.deepEqual(init, { ok: true });
    assert.deepEqual(logs, ['top-level\n'], 'the abandoned attempt left no log line');
    assert.equal(backend.runStats.overruns, overruns + 1, 'it overran on the server thread first');
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { loaded: true } });
    await sandbox.destroy();
  });

  it('still stops endless top-level code at the initialisation deadline', async () => {
    const { sandbox, init } = await initialise(backend, 'while (true) {}', { namespace: 'slow-init', initTimeoutMs: 200 });
    assert.equal(!init.ok && init.kind, 'timeout');
    assert.equal(sandbox.alive, false);
  });

  it('compiles a large function on the isolate thread', async () => {
    const padding = `/*${'x'.repeat(100 * 1024)}*/`;
    const sandbox = await load(backend, `${padding}\nfunction main(p) { return { big: p.n + 1 }; }`);
    assert.deepEqual((await run(sandbox, { n: 1 })).outcome, { kind: 'result', result: { big: 2 } });
    await sandbox.destroy();
  });

  it('starts the same version in new isolates again and again, compiled afresh, then from its cached code', async () => {
    const code: FunctionCode = {
      key: `test/cached@${++versions}`,
      kind: 'nodejs:20',
      code: 'const base = 40;\nfunction main(p) { return { answer: base + p.n }; }',
      binary: false,
      main: 'main',
      filename: 'index.js',
      env: {},
      logLimitBytes: 2 ** 20,
    };
    for (let i = 0; i < 3; i++) {
      const sandbox = await backend.create({ memoryMb: 64 });
      assert.deepEqual(await sandbox.init(code, Date.now() + 5000, () => {}), { ok: true });
      assert.deepEqual((await run(sandbox, { n: i })).outcome, { kind: 'result', result: { answer: 40 + i } });
      await sandbox.destroy();
    }
  });

  it('is no longer alive as soon as it is destroyed, and disposes of an idle isolate right after', async () => {
    const sandbox = await load(backend, 'function main() { return {}; }');
    const destroyed = sandbox.destroy();
    assert.equal(sandbox.alive, false);
    await destroyed;
    assert.equal((await run(sandbox)).outcome.kind, 'not-started');
  });
});

describe('isolate backend: failures are told apart by what happened, not by what the function said', () => {
  const backend = new IsolateBackend();

  it('fails the initialisation with the function\'s own error when its top-level code throws "timed out" or "memory limit"', async () => {
    const timedOut = await initialise(
      backend,
      'const x = 1;\nthrow new Error("Script execution timed out.");\nfunction main() {}',
    );
    assert.deepEqual(timedOut.init, { ok: false, kind: 'error', error: 'Script execution timed out.' });
    assert.match(timedOut.logs.join(''), /^Error: Script execution timed out\.\n\s+at Object\.<anonymous> \(index\.js:2:7\)/);
    const memory = await initialise(
      backend,
      'throw new RangeError("Isolate was disposed during execution due to memory limit");',
    );
    assert.deepEqual(memory.init, {
      ok: false,
      kind: 'error',
      error: 'RangeError: Isolate was disposed during execution due to memory limit',
    });
  });

  it('keeps a run that throws such messages an error of the function, on both paths, and the sandbox serves on', async () => {
    const sandbox = await load(backend, 'function main(p) { if (p.message) throw new Error(p.message); return { fine: true }; }');
    for (const message of ['Script execution timed out.', 'Isolate was disposed during execution due to memory limit']) {
      assert.deepEqual((await run(sandbox, { message })).outcome, { kind: 'error', error: message });
    }
    await warm(sandbox, backend);
    await runOnFastPath(sandbox, backend, { message: 'Script execution timed out.' }, ({ outcome }) =>
      assert.deepEqual(outcome, { kind: 'error', error: 'Script execution timed out.' }),
    );
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { fine: true } });
    await sandbox.destroy();
  });

  it("logs a rejection nobody handled and keeps the run's result, on both paths", async () => {
    const sandbox = await load(
      backend,
      'async function main(p) { Promise.reject(new Error(p.message ?? "timed out")); if (p.wait) await new Promise((r) => setTimeout(r, p.wait)); return { kept: true }; }',
    );
    for (const params of [{}, { wait: 20 }, { message: 'memory limit' }]) {
      const { outcome, logs } = await run(sandbox, params);
      assert.deepEqual(outcome, { kind: 'result', result: { kept: true } }, JSON.stringify(params));
      assert.match(
        logs.join(''),
        new RegExp(`^Unhandled rejection: Error: ${params.message ?? 'timed out'}\\n\\s+at main \\(index\\.js:1:`),
      );
    }
    await warm(sandbox, backend);
    await runOnFastPath(sandbox, backend, {}, ({ outcome, logs }) => {
      assert.deepEqual(outcome, { kind: 'result', result: { kept: true } });
      assert.match(logs.join(''), /^Unhandled rejection: Error: timed out/);
    });
    assert.equal(sandbox.alive, true);
    await sandbox.destroy();
  });

  it("logs a rejection left by top-level code in the initialisation's logs and initialises", async () => {
    const { sandbox, init, logs } = await initialise(
      backend,
      'Promise.reject(new Error("timed out"));\nfunction main() { return {}; }',
    );
    assert.deepEqual(init, { ok: true });
    assert.match(logs.join(''), /^Unhandled rejection: Error: timed out\n\s+at Object\.<anonymous> \(index\.js:1:16\)\n$/);
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: {} });
    await sandbox.destroy();
  });

  it('still reports a real timeout and a real exhaustion of memory during initialisation', async () => {
    const spin = await initialise(backend, 'while (true) {}', { initTimeoutMs: 300 });
    assert.equal(spin.init.ok, false);
    assert.equal(!spin.init.ok && spin.init.kind, 'timeout');
    const hog = await initialise(backend, 'const keep = []; for (;;) keep.push(new Array(100000).fill(Math.random()));', {
      initTimeoutMs: 20000,
    });
    assert.equal(!hog.init.ok && hog.init.kind, 'oom');
  });
});

describe('isolate backend: leftover work after the function returned', () => {
  const backend = new IsolateBackend();

  it('holds what a timer prints after the function returned and writes it, marked, at the start of the next activation', async () => {
    const sandbox = await load(
      backend,
      'let n = 0; function main(p) { const k = ++n; if (p.later) setTimeout(() => console.log("late from", k), 5); console.log("now", k); return { n }; }',
    );
    const first = await run(sandbox, { later: true });
    assert.deepEqual(first.logs, ['now 1\n']);
    const next = await runUntil(sandbox, 'the late line', (logs) => logs.some((l) => l.includes('late from')));
    assert.equal(next.logs[0], `${lateOutputLine(first.id, 'late from 1')}\n`, 'first, and marked');
    assert.match(next.logs[1] ?? '', /^now \d+\n$/);
    await sandbox.destroy();
  });

  it('logs an exception thrown and a rejection left behind after the function returned on the next activation', async () => {
    const code = [
      'function main(p) {',
      '  if (p.throwLater) setTimeout(() => { throw new TypeError("thrown later"); }, 5);',
      '  if (p.rejectLater) setTimeout(() => { Promise.reject(new Error("rejected later")); }, 5);',
      '  return {};',
      '}',
    ].join('\n');
    const sandbox = await load(backend, code);
    const thrower = await run(sandbox, { throwLater: true });
    const afterThrow = await runUntil(sandbox, 'the uncaught exception', (logs) => logs.some((l) => l.includes('thrown later')));
    assert.equal(afterThrow.logs[0], `${lateOutputLine(thrower.id, 'Uncaught exception: TypeError: thrown later')}\n`);
    assert.equal(
      afterThrow.logs[1],
      `${lateOutputLine(thrower.id, `    at index.js:2:${(code.split('\n')[1]?.indexOf('new TypeError') ?? 0) + 1}`)}\n`,
    );
    const rejecter = await run(sandbox, { rejectLater: true });
    const afterReject = await runUntil(sandbox, 'the rejection', (logs) => logs.some((l) => l.includes('rejected later')));
    assert.equal(afterReject.logs[0], `${lateOutputLine(rejecter.id, 'Unhandled rejection: Error: rejected later')}\n`);
    assert.equal(sandbox.alive, true);
    await sandbox.destroy();
  });

  it("clears an activation's timers at its deadline", async () => {
    const sandbox = await load(
      backend,
      'function main(p) { if (p.tick) { setInterval(() => console.log("tick"), 20); setTimeout(() => console.log("after the deadline"), 900); } return {}; }',
    );
    const ticking = await run(sandbox, { tick: true }, 400);
    await waitFor('the deadline of the ticking activation', async () => (Date.now() > ticking.deadline + 50 ? true : undefined));
    const second = await run(sandbox);
    assert.ok(second.logs.length >= 1 && second.logs.length <= 21, `${second.logs.length} ticks`);
    for (const line of second.logs) assert.equal(line, `${lateOutputLine(ticking.id, 'tick')}\n`);
    const secondEnded = Date.now();
    await waitFor('time for more ticks and the late timer', async () =>
      Date.now() > Math.max(secondEnded + 200, ticking.deadline + 700) ? true : undefined,
    );
    assert.deepEqual((await run(sandbox)).logs, [], 'nothing fired after the deadline');
    await sandbox.destroy();
  });

  it("counts leftover output against its activation's log limit", async () => {
    const sandbox = await load(
      backend,
      'function main(p) { if (p.later) setTimeout(() => { for (let i = 0; i < 100; i++) console.log("0123456789"); }, 5); return {}; }',
      { logLimitBytes: 45 },
    );
    const noisy = await run(sandbox, { later: true });
    const next = await runUntil(sandbox, 'the late lines', (logs) => logs.length > 0);
    assert.deepEqual(next.logs, [
      ...Array.from({ length: 4 }, () => `${lateOutputLine(noisy.id, '0123456789')}\n`),
      `${lateOutputLine(noisy.id, '01234')}\n`,
      `${lateOutputLine(noisy.id, TRUNCATED(45).trimEnd())}\n`,
    ]);
    await sandbox.destroy();
  });

  it("marks what the initialisation's timers print after it returned", async () => {
    const sandbox = await load(
      backend,
      'setTimeout(() => console.log("from the top level"), 5);\nfunction main() { return {}; }',
    );
    const next = await runUntil(sandbox, 'the late line', (logs) => logs.length > 0);
    assert.deepEqual(next.logs, ['[after initialization returned] from the top level\n']);
    await sandbox.destroy();
  });

  it("stops a leftover callback at its activation's deadline, says so on the next activation, and serves on", async () => {
    const sandbox = await load(
      backend,
      'function main(p) { if (p.block) setTimeout(() => { for (;;) {} }, 0); return { blocked: p.block === true }; }',
    );
    const blocker = await run(sandbox, { block: true }, 400);
    assert.deepEqual(blocker.outcome, { kind: 'result', result: { blocked: true } });
    const next = await runUntil(sandbox, 'the notice', (logs) => logs.length > 0);
    assert.deepEqual(next.logs, [
      `${lateOutputLine(blocker.id, "A timer callback was stopped at the activation's deadline.")}\n`,
    ]);
    assert.equal(sandbox.alive, true);
    await sandbox.destroy();
  });

  it('reports a run that a leftover callback kept from starting before its deadline as not started', async () => {
    const sandbox = await load(backend, 'function main(p) { if (p.block) setTimeout(() => { for (;;) {} }, 0); return {}; }');
    await run(sandbox, { block: true }, 20000);
    const isolate = sandbox as IsolateSandbox;
    assert.ok(isolate instanceof IsolateSandbox);
    await waitFor('the leftover callback', async () => (isolate.timerCallbacksRunning > 0 ? true : undefined));
    const { outcome } = await run(sandbox, {}, 300);
    assert.equal(outcome.kind, 'not-started', JSON.stringify(outcome));
    assert.equal(sandbox.alive, false);
  });
});

describe("isolate backend: stack traces and syntax errors point into the function's file", () => {
  const backend = new IsolateBackend();

  it('gives file, line and column of each frame as node would, line 1 included', async () => {
    const code = [
      'function main() { const e = new Error("one"); return { one: e.stack, three: three() }; }',
      'function three() {',
      '  return new Error("three").stack;',
      '}',
    ].join('\n');
    const sandbox = await load(backend, code, { filename: 'positions.js' });
    const { outcome } = await run(sandbox);
    assert.equal(outcome.kind, 'result');
    const stacks = (outcome as { result: { one: string; three: string } }).result;
    const column = (line: number, text: string) => (code.split('\n')[line - 1]?.indexOf(text) ?? -1) + 1;
    assert.match(stacks.one, new RegExp(`^Error: one\\n\\s+at main \\(positions\\.js:1:${column(1, 'new Error')}\\)`));
    assert.match(
      stacks.three,
      new RegExp(
        `^Error: three\\n\\s+at three \\(positions\\.js:3:${column(3, 'new Error')}\\)\\n\\s+at main \\(positions\\.js:1:${column(1, 'three()')}\\)`,
      ),
    );
    await sandbox.destroy();
  });

  it('names the file, line and column of a syntax error in the initialisation error and its logs', async () => {
    for (const [code, where, excerpt] of [
      ['let broken = ;\nfunction main() {}', 'broken.js:1:14', 'let broken = ;\n             ^\n'],
      ['function main() {\n  return { a: 1 ;\n}', 'broken.js:2:17', '  return { a: 1 ;\n                ^\n'],
    ] as const) {
      const { init, logs } = await initialise(backend, code, { filename: 'broken.js' });
      assert.equal(init.ok, false);
      assert.equal(!init.ok && init.kind, 'error');
      assert.match(!init.ok ? init.error : '', new RegExp(`^SyntaxError: .+ at ${where.replaceAll('.', '\\.')}$`));
      const text = logs.join('');
      assert.ok(text.startsWith(`${where.split(':').slice(0, 2).join(':')}\n${excerpt}\nSyntaxError: `), text);
      assert.ok(text.includes(`at ${where}`), text);
    }
  });
});

describe('isolate backend: the log limit is applied inside the isolate', () => {
  const backend = new IsolateBackend();

  it('cuts a line longer than the limit before it leaves the isolate and writes one truncation line', async () => {
    const sandbox = await load(backend, 'function main(p) { console.log(p.text); console.log("more"); return {}; }', {
      logLimitBytes: 1000,
    });
    assert.deepEqual((await run(sandbox, { text: 'x'.repeat(5000) })).logs, [`${'x'.repeat(1000)}\n`, TRUNCATED(1000)]);
    // UTF-8 bytes, and never half a character.
    assert.deepEqual((await run(sandbox, { text: '€'.repeat(400) })).logs, [`${'€'.repeat(333)}\n`, TRUNCATED(1000)]);
    assert.deepEqual((await run(sandbox, { text: '😀'.repeat(300) })).logs, [`${'😀'.repeat(250)}\n`, TRUNCATED(1000)]);
    assert.deepEqual((await run(sandbox, { text: 'fits' })).logs, ['fits\n', 'more\n'], 'each activation has its own limit');
    await sandbox.destroy();
  });

  it('stops after the limit, also on the fast path, and gives the initialisation a limit of its own', async () => {
    const { sandbox, init, logs } = await initialise(
      backend,
      'for (let i = 0; i < 50; i++) console.log("top", i);\nfunction main(p) { for (let i = 0; i < (p.lines ?? 0); i++) console.log("line", i); return {}; }',
      { logLimitBytes: 30 },
    );
    assert.deepEqual(init, { ok: true });
    assert.deepEqual(logs, ['top 0\n', 'top 1\n', 'top 2\n', 'top 3\n', 'top 4\n', 'top 5\n', TRUNCATED(30)]);
    await warm(sandbox, backend);
    const syncBefore = backend.runStats.sync;
    const { logs: runLogs } = await run(sandbox, { lines: 1000 });
    assert.equal(backend.runStats.sync, syncBefore + 1, 'it ran on the fast path');
    assert.deepEqual(runLogs, ['line 0\n', 'line 1\n', 'line 2\n', 'line 3\n', 'line 4\n', TRUNCATED(30)]);
    await sandbox.destroy();
  });

  it('never builds the part of a line beyond the limit: a 200 MB line from a 64 MB isolate', async () => {
    const sandbox = await load(
      backend,
      'function main() { const chunk = "z".repeat(1 << 20); console.log(...Array(200).fill(chunk)); return { printed: true }; }',
      { logLimitBytes: 4096, memoryMb: 64 },
    );
    const { outcome, logs } = await run(sandbox, {}, 20000);
    assert.deepEqual(outcome, { kind: 'result', result: { printed: true } });
    assert.deepEqual(logs, [`${'z'.repeat(4096)}\n`, TRUNCATED(4096)]);
    await sandbox.destroy();
  });
});

describe("isolate backend: the platform's internals are out of the function's reach", () => {
  const backend = new IsolateBackend();

  it('leaves nothing of the platform on the global object', async () => {
    const sandbox = await load(
      backend,
      [
        'const ours = () => Object.getOwnPropertyNames(globalThis).filter((name) => /isola/i.test(name));',
        'const atTopLevel = ours();',
        'function main() { return { atTopLevel, atRun: ours(), run: typeof __isola_run, require: typeof __isola_require }; }',
      ].join('\n'),
    );
    assert.deepEqual((await run(sandbox)).outcome, {
      kind: 'result',
      result: { atTopLevel: [], atRun: [], run: 'undefined', require: 'undefined' },
    });
    await sandbox.destroy();
  });

  it('keeps serving, with its log limit, a function that plants such names and replaces built-ins', async () => {
    const sandbox = await load(
      backend,
      `function main(p) {
        if (p.attack) {
          const names = ['__isola_run', '__isola_start', '__isola_take', '__isola_fire', '__isola_resolve', '__isola_require',
            '__isola_entry_module', '__isola_log', '__isola_done', '__isola_timer'];
          for (const name of names) globalThis[name] = () => { throw new Error('hijacked'); };
          JSON.stringify = () => { throw new Error('hijacked'); };
          JSON.parse = () => ({ hijacked: true });
          String.prototype.slice = () => '';
          String.prototype.charCodeAt = () => 0;
          String.prototype.indexOf = () => -1;
          Function.prototype.call = () => { throw new Error('hijacked'); };
          Reflect.apply = () => { throw new Error('hijacked'); };
          Object.defineProperty(Object.prototype, 'returned', { get() { return false; }, set() {}, configurable: true });
          Object.defineProperty(Object.prototype, 'truncated', { get() { return false; }, set() {}, configurable: true });
          Date.now = () => 0;
          return { attacked: true };
        }
        console.log('x'.repeat(5000));
        return { n: p.n };
      }`,
      { logLimitBytes: 100 },
    );
    assert.deepEqual((await run(sandbox, { attack: true })).outcome, { kind: 'result', result: { attacked: true } });
    for (let n = 0; n < 8; n++) {
      const { outcome, logs } = await run(sandbox, { n });
      assert.deepEqual(outcome, { kind: 'result', result: { n } });
      assert.deepEqual(logs, [`${'x'.repeat(100)}\n`, TRUNCATED(100)]);
    }
    await sandbox.destroy();
  });
});

describe('isolate backend: results that are not JSON', () => {
  const backend = new IsolateBackend();
  const CODE = `function main(p) {
    switch (p.kind) {
      case 'deep': { let v = {}; for (let i = 0; i < p.depth; i++) v = { v }; return v; }
      case 'cycle': { const v = {}; v.self = v; return v; }
      case 'bigint': return { n: 10n };
      case 'toJSON': return { toJSON() { throw new Error('no JSON for you'); } };
      case 'getter': return { get boom() { throw new Error('a getter threw'); } };
      case 'throwBigint': throw 10n;
      case 'throwCycle': { const v = {}; v.self = v; throw v; }
      default: return { fine: true };
    }
  }`;
  const EXPECTED: [Record<string, unknown>, RegExp][] = [
    [{ kind: 'deep', depth: 100_000 }, /^The function's result cannot be serialised as JSON: Maximum call stack size exceeded$/],
    [{ kind: 'cycle' }, /^The function's result cannot be serialised as JSON: Converting circular structure to JSON/],
    [{ kind: 'bigint' }, /^The function's result cannot be serialised as JSON: Do not know how to serialize a BigInt$/],
    [{ kind: 'toJSON' }, /^The function's result cannot be serialised as JSON: no JSON for you$/],
    [{ kind: 'getter' }, /^The function's result cannot be serialised as JSON: a getter threw$/],
    [{ kind: 'throwBigint' }, /^10$/],
    [{ kind: 'throwCycle' }, /^\[object Object\]$/],
  ];

  async function check(sandbox: Sandbox) {
    for (const [params, message] of EXPECTED) {
      const { outcome } = await run(sandbox, params);
      assert.equal(outcome.kind, 'error', `${JSON.stringify(params)}: ${JSON.stringify(outcome)}`);
      assert.match(String((outcome as { error: unknown }).error), message);
      assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { fine: true } });
    }
  }

  it('turns a result it cannot serialise into an error of the function and keeps the sandbox, on both paths', async () => {
    const sandbox = await load(backend, CODE);
    await check(sandbox);
    // Results at depths around what the host's own stack takes come back either way, never as an exception.
    for (const depth of [1000, 4000, 9000, 20_000]) {
      const { outcome } = await run(sandbox, { kind: 'deep', depth });
      assert.ok(outcome.kind === 'result' || outcome.kind === 'error', `${depth}: ${outcome.kind}`);
    }
    await warm(sandbox, backend);
    const syncBefore = backend.runStats.sync;
    await check(sandbox);
    assert.ok(backend.runStats.sync > syncBefore, 'they ran on the fast path');
    assert.equal(sandbox.alive, true);
    await sandbox.destroy();
  });

  it('reports parameters it cannot pass into the isolate as an error, not an exception', async () => {
    const sandbox = await load(backend, CODE);
    let deep: Record<string, unknown> = {};
    for (let i = 0; i < 100_000; i++) deep = { deep };
    for (const params of [{ n: 10n }, deep]) {
      const { outcome } = await run(sandbox, params);
      assert.equal(outcome.kind, 'error');
      assert.match(String((outcome as { error: unknown }).error), /^The parameters cannot be passed to the function: /);
    }
    assert.deepEqual((await run(sandbox)).outcome, { kind: 'result', result: { fine: true } });
    await sandbox.destroy();
  });
});

describe('isolate backend: its own metrics', () => {
  it('registers counters of how runs were made, read on each scrape', async () => {
    const backend = new IsolateBackend();
    const registry = new Registry();
    backend.registerMetrics(registry);
    const sandbox = await load(backend, 'function main() { return { ok: true }; }');
    for (let i = 0; i < 3; i++) assert.equal((await run(sandbox)).outcome.kind, 'result');
    const text = await registry.metrics();
    const count = (path: string) => Number(new RegExp(`isola_isolate_runs_total\\{path="${path}"\\} (\\d+)`).exec(text)?.[1]);
    assert.equal(count('sync') + count('async'), backend.runStats.sync + backend.runStats.async);
    assert.ok(count('sync') + count('async') >= 3, text);
    assert.match(text, /isola_isolate_sync_overruns_total \d+/);
    await sandbox.destroy();
  });
});
