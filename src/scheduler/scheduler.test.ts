import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { DEFAULT_LIMITS, type Limits } from '../core/limits.js';
import type { ActionVersion, KeyValue } from '../core/types.js';
import { FakeBackend } from '../sandbox/fake/fake-backend.js';
import { FixedKeepAlive, parsePolicy } from './policy.js';
import { CapacityError, InitFailure, type Lease, Scheduler, type SchedulerOptions, TooBigError } from './scheduler.js';

const noLogs = () => {};
let backend: FakeBackend;
const schedulers: Scheduler[] = [];

function action(
  name: string,
  limits: Partial<Limits> = {},
  code = 'ok',
  version = '0.0.1',
  annotations: KeyValue[] = [],
  namespace = 'test',
): ActionVersion {
  return {
    namespace,
    name,
    version,
    revision: `r-${name}-${version}`,
    exec: { kind: 'nodejs:20', code, binary: false },
    limits: { ...DEFAULT_LIMITS, memory: 16, timeout: 2000, ...limits },
    parameters: [],
    annotations,
    isolation: 'isolate',
    updated: Date.now(),
  };
}

function scheduler(options: Partial<SchedulerOptions> = {}): Scheduler {
  const s = new Scheduler({
    backends: new Map([['isolate', backend]]),
    memoryBudgetMb: 64,
    policy: new FixedKeepAlive(60_000),
    queueTimeoutMs: 5_000,
    ...options,
  });
  schedulers.push(s);
  return s;
}

/** Lets promise continuations (launches, destroys) run; timers stay frozen under the mock. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A promise's state without waiting for it. */
function tracked<T>(promise: Promise<T>): { value?: T; error?: unknown; done: boolean } {
  const state: { value?: T; error?: unknown; done: boolean } = { done: false };
  promise.then(
    (value) => Object.assign(state, { value, done: true }),
    (error: unknown) => Object.assign(state, { error, done: true }),
  );
  return state;
}

beforeEach(() => {
  backend = new FakeBackend();
  mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
});

afterEach(async () => {
  for (const s of schedulers.splice(0)) {
    s.checkInvariants();
    await s.close();
  }
  mock.timers.reset();
});

describe('scheduler', () => {
  it('starts cold, then reuses the warm instance', async () => {
    const s = scheduler();
    const a = action('warm');
    const first = await s.acquire(a, noLogs);
    assert.equal(first.cold, true);
    s.release(first, true);
    const second = await s.acquire(a, noLogs);
    assert.equal(second.cold, false);
    assert.equal(second.instance.id, first.instance.id);
    assert.equal(second.initMs, 0);
    s.release(second, true);
    assert.equal(backend.created, 1);
  });

  it('shares an instance up to its concurrency limit, then starts another', async () => {
    const s = scheduler();
    const a = action('shared', { concurrency: 2 });
    const one = await s.acquire(a, noLogs);
    const two = await s.acquire(a, noLogs);
    const three = await s.acquire(a, noLogs);
    assert.equal(one.instance.id, two.instance.id);
    assert.notEqual(three.instance.id, one.instance.id);
    assert.equal(one.instance.inflight, 2);
    for (const lease of [one, two, three]) s.release(lease, true);
    assert.equal(s.instancesOf(a).length, 2);
  });

  it('queues when the memory budget is full, then evicts an idle instance for the waiting function', async () => {
    const s = scheduler({ memoryBudgetMb: 32 });
    const a = action('a');
    const b = action('b');
    const a1 = await s.acquire(a, noLogs);
    const a2 = await s.acquire(a, noLogs);
    assert.equal(s.stats().memoryUsedMb, 32);
    const waiting = tracked(s.acquire(b, noLogs));
    await settle();
    assert.equal(waiting.done, false, 'b waits while both instances are busy');
    assert.equal(s.stats().queued, 1);
    mock.timers.tick(40);
    s.release(a1, true);
    await settle();
    const lease = waiting.value as Lease;
    assert.equal(lease.cold, true);
    assert.equal(lease.waitMs, 40, 'waitTime counts the time in the queue');
    assert.equal(s.instancesOf(a).length, 1, 'the idle instance of a was evicted');
    s.release(a2, true);
    s.release(lease, true);
  });

  it('hands a released instance straight to a waiting invocation of the same version', async () => {
    const s = scheduler({ memoryBudgetMb: 16 });
    const a = action('handoff');
    const first = await s.acquire(a, noLogs);
    const next = tracked(s.acquire(a, noLogs));
    await settle();
    assert.equal(next.done, false);
    s.release(first, true);
    await settle();
    const lease = next.value as Lease;
    assert.equal(lease.cold, false);
    assert.equal(lease.instance.id, first.instance.id);
    s.release(lease, true);
  });

  it('gives up on a queued invocation after the queue timeout', async () => {
    const s = scheduler({ memoryBudgetMb: 16, queueTimeoutMs: 100 });
    const held = await s.acquire(action('hold'), noLogs);
    const other = tracked(s.acquire(action('other'), noLogs));
    mock.timers.tick(99);
    await settle();
    assert.equal(other.done, false);
    mock.timers.tick(1);
    await settle();
    assert.ok(other.error instanceof CapacityError);
    assert.equal(s.stats().queued, 0);
    s.release(held, true);
  });

  it('refuses at once a function bigger than the whole budget', async () => {
    const s = scheduler({ memoryBudgetMb: 64 });
    const huge = action('huge', { memory: 128 });
    assert.throws(() => s.admit(huge), TooBigError);
    await assert.rejects(s.acquire(huge, noLogs), /needs 128 MB but this host's memory budget is 64 MB/);
  });

  it('removes an instance idle longer than the keep-alive', async () => {
    const s = scheduler({ policy: new FixedKeepAlive(100) });
    const a = action('brief');
    s.release(await s.acquire(a, noLogs), true);
    assert.equal(s.instancesOf(a).length, 1);
    mock.timers.tick(99);
    assert.equal(s.instancesOf(a).length, 1);
    mock.timers.tick(1);
    assert.equal(s.instancesOf(a).length, 0);
    assert.equal(s.stats().memoryUsedMb, 0);
    await settle();
    assert.equal(backend.alive, 0, 'its sandbox was destroyed');
  });

  it('drains old versions: idle ones go at once, busy ones when their run ends', async () => {
    const s = scheduler();
    const v1 = action('versioned', {}, 'ok', '0.0.1');
    const idle = await s.acquire(v1, noLogs);
    const busy = await s.acquire(v1, noLogs);
    s.release(idle, true);
    s.retireVersions('test', 'versioned', 'r-versioned-0.0.2');
    assert.equal(s.instancesOf(v1).length, 1, 'only the busy instance remains');
    s.release(busy, true);
    assert.equal(s.instancesOf(v1).length, 0);
  });

  it('replaces an instance released as unhealthy', async () => {
    const s = scheduler();
    const a = action('sick');
    const lease = await s.acquire(a, noLogs);
    s.release(lease, false);
    assert.equal(s.instancesOf(a).length, 0);
    const next = await s.acquire(a, noLogs);
    assert.equal(next.cold, true);
    s.release(next, true);
  });

  it('ignores a second release of the same lease', async () => {
    const s = scheduler();
    const a = action('twice', { concurrency: 2 });
    const one = await s.acquire(a, noLogs);
    const two = await s.acquire(a, noLogs);
    s.release(one, true);
    s.release(one, false);
    assert.equal(two.instance.inflight, 1, 'the other run still counts');
    assert.equal(two.instance.state, 'busy');
    s.release(two, true);
  });

  it('reports a failed initialisation and returns its memory', async () => {
    const s = scheduler({ memoryBudgetMb: 16 });
    await assert.rejects(s.acquire(action('broken', {}, 'fail'), noLogs), (error: unknown) => {
      assert.ok(error instanceof InitFailure);
      assert.match(error.outcome.error, /failed to load/);
      return true;
    });
    assert.equal(s.stats().memoryUsedMb, 0);
    s.release(await s.acquire(action('fine'), noLogs), true);
  });

  it('uses a prewarmed blank sandbox for a cold start', async () => {
    const s = scheduler({ stemCells: [{ isolation: 'isolate', memoryMb: 16, count: 1 }] });
    await settle();
    assert.equal(s.stats().stemCells, 1);
    const lease = await s.acquire(action('stem'), noLogs);
    assert.equal(lease.cold, true);
    assert.equal(lease.prewarmed, true);
    s.release(lease, true);
  });

  it('serves each waiter once when freeing memory evicts an idle instance (no re-entered wake-up)', async () => {
    const s = scheduler({ memoryBudgetMb: 512 });
    const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((n) => action(n, { memory: 256 }));
    const leaseA = await s.acquire(a as ActionVersion, noLogs);
    const leaseB = await s.acquire(b as ActionVersion, noLogs);
    const waitC = tracked(s.acquire(c as ActionVersion, noLogs));
    const waitD = tracked(s.acquire(d as ActionVersion, noLogs));
    await settle();
    s.release(leaseA, true);
    s.checkInvariants();
    await settle();
    assert.equal(waitC.done, true, 'c started in the memory a left');
    assert.equal(waitD.done, false, 'd still waits');
    assert.equal(backend.created, 3, 'exactly one instance was started for c');
    assert.ok(s.stats().memoryUsedMb <= 512);
    s.release(leaseB, true);
    await settle();
    assert.equal(waitD.done, true);
    assert.equal(backend.created, 4);
    s.release(waitC.value as Lease, true);
    s.release(waitD.value as Lease, true);
    assert.ok(s.stats().memoryUsedMb <= 512);
  });

  it('answers a waiter whose function fails to load once memory frees, and goes on serving', async () => {
    const s = scheduler({ memoryBudgetMb: 256 });
    const hold = await s.acquire(action('hold', { memory: 256 }), noLogs);
    const broken = tracked(s.acquire(action('broken', { memory: 256 }, 'fail'), noLogs));
    await settle();
    s.release(hold, true);
    await settle();
    assert.ok(broken.error instanceof InitFailure, String(broken.error));
    assert.equal(s.stats().memoryUsedMb, 0, 'the holder was evicted for it, and the failed start gave its memory back');
    s.release(await s.acquire(action('hold', { memory: 256 }), noLogs), true);
  });

  it('absorbs the other runs ending on an instance that one run made fail (concurrency 2)', async () => {
    const s = scheduler();
    const a = action('pair', { concurrency: 2 });
    const one = await s.acquire(a, noLogs);
    const two = await s.acquire(a, noLogs);
    s.release(one, false);
    assert.equal(one.instance.state, 'stopping');
    assert.doesNotThrow(() => s.release(two, false));
    assert.doesNotThrow(() => s.release(two, true));
    await settle();
    assert.equal(s.instancesOf(a).length, 0);
    assert.equal(s.stats().memoryUsedMb, 0);
  });

  it('replaces an idle instance whose sandbox died', async () => {
    const s = scheduler();
    const a = action('mortal');
    const lease = await s.acquire(a, noLogs);
    s.release(lease, true);
    backend.sandboxes[0]?.kill();
    assert.equal(s.instancesOf(a).length, 0);
    const next = await s.acquire(a, noLogs);
    assert.equal(next.cold, true);
    s.release(next, true);
  });

  it('stops an instance whose sandbox dies while busy at once, and absorbs its run ending after', async () => {
    const s = scheduler({ memoryBudgetMb: 16 });
    const a = action('doomed');
    const lease = await s.acquire(a, noLogs);
    const waiting = tracked(s.acquire(a, noLogs));
    await settle();
    assert.equal(waiting.done, false);
    backend.sandboxes[0]?.kill();
    assert.equal(lease.instance.state, 'stopping');
    await settle();
    const next = waiting.value as Lease;
    assert.equal(next.cold, true, 'the waiter got a new instance in the memory the dead one left');
    assert.notEqual(next.instance.id, lease.instance.id);
    s.release(lease, false);
    s.checkInvariants();
    assert.equal(next.instance.state, 'busy', 'the late release touched nothing else');
    s.release(next, true);
    assert.equal(s.stats().memoryUsedMb, 16);
  });

  it('keeps provisioned instances ready, and starts a lost one again', async () => {
    const s = scheduler();
    const a = action('ready', {}, 'ok', '0.0.1', [{ key: 'minInstances', value: 2 }]);
    s.provision(a);
    await settle();
    assert.deepEqual(
      s.instancesOf(a).map((i) => i.state),
      ['idle', 'idle'],
    );
    const lease = await s.acquire(a, noLogs);
    assert.equal(lease.cold, false);
    assert.equal(lease.prewarmHit, true, 'the first call on a provisioned instance');
    s.release(lease, true);
    mock.timers.tick(120_000);
    assert.equal(s.instancesOf(a).length, 2, 'the keep-alive never lets them go');
    backend.sandboxes[0]?.kill();
    await settle();
    assert.equal(s.instancesOf(a).length, 2);
    assert.equal(backend.created, 3);
  });

  it('lets an instance started ahead of calls go when its version was retired while it started', async () => {
    const s = scheduler();
    const a = action('gone', { memory: 16 }, 'hold-init', '0.0.1', [{ key: 'minInstances', value: 1 }]);
    s.provision(a);
    await settle();
    s.retireVersions('test', 'gone');
    backend.finishInit();
    await settle();
    assert.equal(s.instancesOf(a).length, 0);
    assert.equal(backend.alive, 0, 'its sandbox was destroyed');
    assert.equal(s.stats().memoryUsedMb, 0);
  });

  it('counts the queue timeout only while a call waits in the queue, not while its instance starts', async () => {
    const s = scheduler({ queueTimeoutMs: 100 });
    const pending = tracked(s.acquire(action('slow', {}, 'hold-init'), noLogs));
    mock.timers.tick(1000);
    await settle();
    assert.equal(pending.done, false);
    backend.finishInit();
    await settle();
    assert.equal((pending.value as Lease).cold, true);
    s.release(pending.value as Lease, true);
  });

  it('rejects a call whose instance is still starting when the platform shuts down, and destroys the sandbox', async () => {
    const s = scheduler();
    const pending = tracked(s.acquire(action('slow', {}, 'hold-init'), noLogs));
    await settle();
    const closing = s.close();
    backend.finishInit();
    await closing;
    await settle();
    assert.ok(pending.error instanceof CapacityError);
    assert.equal(backend.alive, 0);
  });

  it("runs a version stored with annotations that today's checks refuse, with the default settings", async () => {
    const s = scheduler();
    const old = action('old', {}, 'ok', '0.0.1', [{ key: 'keepAlive', value: 'hybrid:0ms' }]);
    const lease = await s.acquire(old, noLogs);
    assert.equal(lease.cold, true);
    s.release(lease, true);
    assert.equal(s.policyOf(old), 'fixed:1m');
  });

  it('prewarms a periodic function under the hybrid policy, so its calls turn warm', async () => {
    // The paper's policy on a time axis where a minute lasts 50 ms; a call every "15 minutes".
    const s = scheduler();
    const a = action('tick', {}, 'ok', '0.0.1', [{ key: 'keepAlive', value: 'hybrid:50ms' }]);
    const cold: boolean[] = [];
    const hits: boolean[] = [];
    for (let i = 0; i < 16; i++) {
      const lease = await s.acquire(a, noLogs);
      cold.push(lease.cold);
      hits.push(lease.prewarmHit);
      s.release(lease, true);
      for (let t = 0; t < 750; t += 50) {
        mock.timers.tick(50);
        await settle();
      }
    }
    assert.ok(cold.slice(0, 3).every(Boolean), `cold while the histogram learns: ${cold}`);
    assert.ok(
      cold.slice(-4).every((c) => !c),
      `warm once prewarmed: ${cold}`,
    );
    assert.ok(hits.slice(-4).every(Boolean), `counted as prewarm hits: ${hits}`);
    assert.equal(parsePolicy('hybrid:50ms').name, s.policyOf(a));
  });
});
