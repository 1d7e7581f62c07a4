import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { DEFAULT_LIMITS, type Limits } from '../core/limits.js';
import type { ActionVersion } from '../core/types.js';
import { IsolateBackend } from '../sandbox/isolate/isolate-backend.js';
import { IllegalTransition, transition } from './instance.js';
import { FixedKeepAlive } from './policy.js';
import { CapacityError, InitFailure, type Lease, Scheduler, type SchedulerOptions } from './scheduler.js';

const backend = new IsolateBackend();
const schedulers: Scheduler[] = [];
const noLogs = () => {};

function action(
  name: string,
  limits: Partial<Limits> = {},
  code = 'function main(p) { return p; }',
  version = '0.0.1',
): ActionVersion {
  return {
    namespace: 'test',
    name,
    version,
    revision: `r-${name}-${version}`,
    exec: { kind: 'nodejs:20', code, binary: false },
    limits: { ...DEFAULT_LIMITS, memory: 16, timeout: 2000, ...limits },
    parameters: [],
    annotations: [],
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

after(async () => {
  await Promise.all(schedulers.map((s) => s.close()));
});

describe('instance state machine', () => {
  it('follows the named events', () => {
    assert.equal(transition('starting', 'Started'), 'idle');
    assert.equal(transition('idle', 'Assigned'), 'busy');
    assert.equal(transition('busy', 'Assigned'), 'busy');
    assert.equal(transition('busy', 'Released'), 'idle');
    assert.equal(transition('idle', 'Retired'), 'stopping');
    assert.equal(transition('busy', 'Failed'), 'stopping');
    assert.equal(transition('stopping', 'Stopped'), 'stopped');
  });
  it('refuses transitions that make no sense', () => {
    assert.throws(() => transition('starting', 'Assigned'), IllegalTransition);
    assert.throws(() => transition('busy', 'Retired'), IllegalTransition, 'a busy instance is never retired under a run');
    assert.throws(() => transition('stopped', 'Started'), IllegalTransition);
  });
});

describe('scheduler', () => {
  it('starts cold, then reuses the warm instance', async () => {
    const s = scheduler();
    const a = action('warm');
    const first = await s.acquire(a, noLogs);
    assert.equal(first.cold, true);
    assert.ok(first.initMs >= 0);
    s.release(first, true);
    const second = await s.acquire(a, noLogs);
    assert.equal(second.cold, false);
    assert.equal(second.instance, first.instance);
    assert.equal(second.initMs, 0);
    s.release(second, true);
  });

  it('shares an instance up to its concurrency limit, then starts another', async () => {
    const s = scheduler();
    const a = action('shared', { concurrency: 2 });
    const one = await s.acquire(a, noLogs);
    const two = await s.acquire(a, noLogs);
    const three = await s.acquire(a, noLogs);
    assert.equal(one.instance, two.instance);
    assert.notEqual(three.instance, one.instance);
    assert.equal(one.instance.inflight, 2);
    for (const lease of [one, two, three]) s.release(lease, true);
    assert.equal(s.instancesOf(a).length, 2);
  });

  it('queues when the memory budget is full and evicts an idle instance for a waiting function', async () => {
    const s = scheduler({ memoryBudgetMb: 32 });
    const a = action('a');
    const b = action('b');
    const a1 = await s.acquire(a, noLogs);
    const a2 = await s.acquire(a, noLogs);
    assert.equal(s.stats().memoryUsedMb, 32);
    let bLease: Lease | undefined;
    const waiting = s.acquire(b, noLogs).then((lease) => {
      bLease = lease;
      return lease;
    });
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(bLease, undefined, 'b waits while both instances are busy');
    assert.equal(s.stats().queued, 1);
    s.release(a1, true);
    const lease = await waiting;
    assert.equal(lease.cold, true);
    assert.ok(lease.waitMs >= 40, `waitTime ${lease.waitMs} counts the time in the queue`);
    assert.equal(s.instancesOf(a).length, 1, 'the idle instance of a was evicted');
    s.release(a2, true);
    s.release(lease, true);
  });

  it('hands a released instance straight to a waiting invocation of the same version', async () => {
    const s = scheduler({ memoryBudgetMb: 16 });
    const a = action('handoff');
    const first = await s.acquire(a, noLogs);
    const next = s.acquire(a, noLogs);
    await new Promise((r) => setTimeout(r, 20));
    s.release(first, true);
    const lease = await next;
    assert.equal(lease.cold, false);
    assert.equal(lease.instance, first.instance);
    s.release(lease, true);
  });

  it('gives up on a queued invocation after the queue timeout', async () => {
    const s = scheduler({ memoryBudgetMb: 16, queueTimeoutMs: 100 });
    const held = await s.acquire(action('hold'), noLogs);
    await assert.rejects(s.acquire(action('other'), noLogs), CapacityError);
    assert.equal(s.stats().queued, 0);
    s.release(held, true);
  });

  it('refuses at once a function bigger than the whole budget', async () => {
    const s = scheduler({ memoryBudgetMb: 64 });
    await assert.rejects(
      s.acquire(action('huge', { memory: 128 }), noLogs),
      /needs 128 MB but this host's memory budget is 64 MB/,
    );
  });

  it('removes an instance idle longer than the keep-alive', async () => {
    const s = scheduler({ policy: new FixedKeepAlive(100) });
    const a = action('brief');
    s.release(await s.acquire(a, noLogs), true);
    assert.equal(s.instancesOf(a).length, 1);
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(s.instancesOf(a).length, 0);
    assert.equal(s.stats().memoryUsedMb, 0);
  });

  it('drains old versions: idle ones go at once, busy ones when their run ends', async () => {
    const s = scheduler();
    const v1 = action('versioned', {}, undefined, '0.0.1');
    const idle = await s.acquire(v1, noLogs);
    const busy = await s.acquire(v1, noLogs);
    s.release(idle, true);
    s.retireVersions('test', 'versioned', '0.0.2');
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

  it('reports a failed initialisation and returns its memory', async () => {
    const s = scheduler({ memoryBudgetMb: 16 });
    await assert.rejects(s.acquire(action('broken', {}, 'function main( {'), noLogs), (error: unknown) => {
      assert.ok(error instanceof InitFailure);
      assert.match(error.outcome.error, /SyntaxError/);
      return true;
    });
    assert.equal(s.stats().memoryUsedMb, 0);
    const ok = await s.acquire(action('fine'), noLogs);
    s.release(ok, true);
  });

  it('uses a prewarmed blank sandbox for a cold start', async () => {
    const s = scheduler({ stemCells: [{ isolation: 'isolate', memoryMb: 16, count: 1 }] });
    for (let i = 0; i < 100 && s.stats().stemCells === 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(s.stats().stemCells, 1);
    const lease = await s.acquire(action('stem'), noLogs);
    assert.equal(lease.cold, true);
    assert.equal(lease.prewarmed, true);
    s.release(lease, true);
  });
});
