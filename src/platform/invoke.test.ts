import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_LIMITS } from '../core/limits.js';
import type { ActionVersion, KeyValue } from '../core/types.js';
import { FakeBackend } from '../sandbox/fake/fake-backend.js';
import { FixedKeepAlive } from '../scheduler/policy.js';
import { Scheduler } from '../scheduler/scheduler.js';
import { Store } from '../store/store.js';
import { localExecutor } from './executor.js';
import { type Caller, type InvokeCommand, type InvokeOutcome, InvokePath } from './invoke.js';
import { Invoker } from './invoker.js';
import { Metrics } from './metrics.js';
import { Actions, Activations } from './read-models.js';

const GUEST: Caller = { kind: 'namespace', namespace: 'guest' };
const KEYS = { uuid: 'guest-uuid', key: 'guest-key' };

/** Waits for a condition the code under test brings about, a turn of the event loop at a time. */
async function until(condition: () => boolean, deadlineMs = 5000): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('the condition did not come about in time');
    await new Promise((resolve) => setImmediate(resolve));
  }
}

describe('the invoke path', () => {
  let dir: string;
  let store: Store;
  let backend: FakeBackend;
  let scheduler: Scheduler;
  let path: InvokePath;
  let activations: Activations;
  const warnings: string[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'isola-invoke-'));
    store = await Store.open({ dataDir: dir });
    backend = new FakeBackend();
    scheduler = new Scheduler({
      backends: new Map([['isolate', backend]]),
      memoryBudgetMb: 64,
      policy: new FixedKeepAlive(60_000),
      queueTimeoutMs: 5000,
    });
    const actions = new Actions(store);
    activations = new Activations(store);
    path = new InvokePath({
      store,
      executor: localExecutor(scheduler, new Invoker(store, scheduler, new Metrics(scheduler))),
      resolve: (ref) => actions.get(ref.namespace, ref.name, ref.version),
      authenticate: async ({ uuid, key }) => (uuid === KEYS.uuid && key === KEYS.key ? 'guest' : undefined),
      blockingWaitMs: 60_000,
      retryBaseMs: 10,
      warn: (message) => warnings.push(message),
    });
    for (const [name, annotations, memory] of [
      ['fn', [], 16],
      ['web', [{ key: 'web-export', value: true }], 16],
      [
        'web-auth',
        [
          { key: 'web-export', value: true },
          { key: 'require-whisk-auth', value: true },
        ],
        16,
      ],
      [
        'web-secret',
        [
          { key: 'web-export', value: true },
          { key: 'require-whisk-auth', value: 's3cret' },
        ],
        16,
      ],
      ['no-queue', [{ key: 'maxQueued', value: 0 }], 16],
      ['too-big', [], 128],
    ] as [string, KeyValue[], number][]) {
      await store.putAction(
        {
          namespace: 'guest',
          name,
          exec: { kind: 'nodejs:20', code: 'ok', binary: false },
          limits: { ...DEFAULT_LIMITS, memory },
          parameters: [],
          annotations,
          isolation: 'isolate',
        },
        { overwrite: true },
      );
    }
  });
  after(async () => {
    await path.settled();
    await scheduler.close();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    assert.deepEqual(warnings, []);
  });

  const command = (overrides: Partial<InvokeCommand> = {}): InvokeCommand => ({
    function: { namespace: 'guest', name: 'fn' },
    params: { result: { ok: true } },
    mode: 'sync',
    door: 'openwhisk',
    caller: GUEST,
    ...overrides,
  });
  const expectKind = <K extends InvokeOutcome['kind']>(outcome: InvokeOutcome, kind: K) => {
    assert.equal(outcome.kind, kind, JSON.stringify(outcome));
    return outcome as Extract<InvokeOutcome, { kind: K }>;
  };
  const count = async () => (await activations.list('guest', { limit: 200, skip: 0 })).length;

  it('sync: runs the function, stores its record before answering, and records the door', async () => {
    const ran = expectKind(await path.invoke(command({ door: 'lambda' })), 'completed');
    assert.deepEqual(ran.record.response, { status: 'success', success: true, result: { ok: true } });
    assert.equal(ran.function.name, 'fn');
    assert.equal((await activations.get('guest', ran.record.activationId))?.activationId, ran.record.activationId);
    assert.deepEqual(
      ran.record.annotations.filter((a) => a.key === 'door'),
      [{ key: 'door', value: 'lambda' }],
    );
    const plain = expectKind(await path.invoke(command()), 'completed');
    assert.equal(
      plain.record.annotations.some((a) => a.key === 'door'),
      false,
      "OpenWhisk's own door adds no annotation",
    );
  });

  it("sync: applies the door's result rule", async () => {
    const ran = expectKind(await path.invoke(command({ checkResult: () => 'not an HTTP response' })), 'completed');
    assert.equal(ran.record.response.status, 'action developer error');
    assert.deepEqual(ran.record.response.result, { error: 'not an HTTP response' });
  });

  it('sync past its wait: accepted late with the activation id, recorded when the run ends', async () => {
    const outcome = expectKind(await path.invoke(command({ params: { hold: true }, waitMs: 0 })), 'accepted');
    assert.equal(outcome.late, true);
    assert.equal(await activations.get('guest', outcome.activationId), undefined, 'no record while it runs');
    await until(() => backend.heldRuns.has(outcome.activationId));
    backend.finishRun(outcome.activationId);
    await path.settled();
    const record = await activations.get('guest', outcome.activationId);
    assert.deepEqual(record?.response.result, { done: outcome.activationId });
  });

  it('async: queued durably, run in the background, recorded with its cause', async () => {
    const outcome = expectKind(
      await path.invoke(command({ mode: 'async', door: 'trigger', cause: 'a'.repeat(32), params: { result: { later: 1 } } })),
      'accepted',
    );
    assert.equal(outcome.late, false);
    await path.settled();
    const record = await activations.get('guest', outcome.activationId);
    assert.deepEqual(record?.response.result, { later: 1 });
    assert.deepEqual(
      record?.annotations.filter((a) => a.key === 'cause' || a.key === 'door'),
      [{ key: 'cause', value: 'a'.repeat(32) }],
    );
  });

  it('dry-run: resolves and checks, runs and stores nothing', async () => {
    const before = { created: backend.created, records: await count() };
    const sandboxRuns = backend.sandboxes.length;
    const outcome = expectKind(await path.invoke(command({ mode: 'dry-run', params: { hold: true } })), 'dry-run');
    assert.equal(outcome.function.name, 'fn');
    assert.equal(backend.heldRuns.size, 0, 'nothing ran');
    assert.deepEqual({ created: backend.created, records: await count() }, before);
    assert.equal(backend.sandboxes.length, sandboxRuns);
    // Dry runs check the function and the caller, not capacity.
    expectKind(await path.invoke(command({ mode: 'dry-run', function: { namespace: 'guest', name: 'too-big' } })), 'dry-run');
    expectKind(await path.invoke(command({ mode: 'dry-run', function: { namespace: 'guest', name: 'nope' } })), 'not-found');
  });

  it('not found: the latest, or a version that was never stored', async () => {
    for (const mode of ['sync', 'async', 'dry-run'] as const) {
      const missing = expectKind(
        await path.invoke(command({ mode, function: { namespace: 'guest', name: 'nope' } })),
        'not-found',
      );
      assert.equal(missing.message, 'The action "nope" does not exist in namespace "guest".');
    }
    const version = expectKind(
      await path.invoke(command({ function: { namespace: 'guest', name: 'fn', version: '9.9.9' } })),
      'not-found',
    );
    assert.match(version.message, /at version 9\.9\.9/);
    expectKind(await path.invoke(command({ function: { namespace: 'guest', name: 'fn', version: '0.0.1' } })), 'completed');
  });

  it("rejected: another namespace's caller is forbidden", async () => {
    const before = await count();
    for (const mode of ['sync', 'async', 'dry-run'] as const) {
      const outcome = expectKind(
        await path.invoke(command({ mode, caller: { kind: 'namespace', namespace: 'other' } })),
        'rejected',
      );
      assert.equal(outcome.reason, 'forbidden');
    }
    assert.equal(await count(), before, 'nothing stored');
  });

  it('rejected: a full queue, for sync and async alike, before anything is stored', async () => {
    const before = await count();
    for (const mode of ['sync', 'async'] as const) {
      const outcome = expectKind(
        await path.invoke(command({ mode, function: { namespace: 'guest', name: 'no-queue' } })),
        'rejected',
      );
      assert.equal(outcome.reason, 'queue-full');
      assert.match(outcome.message, /guest\/no-queue/);
    }
    assert.equal(await count(), before);
  });

  it("rejected: a function bigger than the server's whole budget", async () => {
    for (const mode of ['sync', 'async'] as const) {
      const outcome = expectKind(
        await path.invoke(command({ mode, function: { namespace: 'guest', name: 'too-big' } })),
        'rejected',
      );
      assert.equal(outcome.reason, 'too-big');
    }
  });

  it('web callers: only exported functions, and only with the credentials or secret they ask for', async () => {
    const web = (name: string, caller: Caller) =>
      path.invoke(command({ door: 'web', function: { namespace: 'guest', name }, caller }));
    const anonymous: Caller = { kind: 'web' };
    expectKind(await web('fn', anonymous), 'not-found');
    const open = expectKind(await web('web', anonymous), 'completed');
    assert.equal(open.record.subject, 'guest', "recorded under the function's namespace");
    assert.equal(expectKind(await web('web-auth', anonymous), 'rejected').reason, 'unauthorised');
    assert.equal(
      expectKind(await web('web-auth', { kind: 'web', credentials: { ...KEYS, key: 'wrong' } }), 'rejected').reason,
      'unauthorised',
    );
    expectKind(await web('web-auth', { kind: 'web', credentials: KEYS }), 'completed');
    assert.equal(expectKind(await web('web-secret', { kind: 'web', secret: 'guess' }), 'rejected').reason, 'unauthorised');
    assert.equal(expectKind(await web('web-secret', { kind: 'web', credentials: KEYS }), 'rejected').reason, 'unauthorised');
    expectKind(await web('web-secret', { kind: 'web', secret: 's3cret' }), 'completed');
  });

  it('stops waiting retries on shutdown', async () => {
    const action = (await store.getAction('guest', 'fn')) as ActionVersion;
    const queued = {
      activationId: 'b'.repeat(32),
      namespace: 'guest',
      name: 'fn',
      version: action.version,
      subject: 'guest',
      accepted: Date.now(),
      params: { result: {} },
      annotations: [],
      attempts: 1,
      notBefore: Date.now() + 3_600_000,
    };
    await store.enqueueActivation(queued);
    path.dispatch(queued, action);
    path.stopRetries();
    await path.settled();
    assert.equal(await activations.get('guest', queued.activationId), undefined, 'the retry did not run');
  });
});
