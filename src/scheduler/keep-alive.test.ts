import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it, mock } from 'node:test';
import { DEFAULT_LIMITS } from '../core/limits.js';
import type { ActionVersion, KeyValue } from '../core/types.js';
import { type InstanceState, isLive } from './instance.js';
import { type FunctionState, KeepAliveDriver, type KeepAliveHost } from './keep-alive.js';
import { FixedKeepAlive, type IdleDecision, type KeepAlivePolicy } from './policy.js';

const T0 = 1_000_000;

function action(revision = 'r1', annotations: KeyValue[] = []): ActionVersion {
  return {
    namespace: 'ns',
    name: 'fn',
    version: '0.0.1',
    revision,
    exec: { kind: 'nodejs:20', code: 'ok', binary: false },
    limits: { ...DEFAULT_LIMITS, memory: 16 },
    parameters: [],
    annotations,
    isolation: 'isolate',
    updated: 0,
  };
}

/** A policy that decides what the test says, and remembers the idle times it was told. */
class ScriptedPolicy implements KeepAlivePolicy {
  readonly name = 'scripted';
  readonly idleTimes: (number | undefined)[] = [];
  constructor(private readonly decide: (now: number) => IdleDecision) {}
  forFunction() {
    return {
      mode: 'scripted',
      onInvocation: (_now: number, idleMs: number | undefined) => {
        this.idleTimes.push(idleMs);
      },
      onIdle: this.decide,
    };
  }
}

/** Placement as the driver sees it: instances with states, started and stopped when asked. */
class Host implements KeepAliveHost {
  readonly states = new Map<number, InstanceState>();
  readonly revisions = new Map<number, string>();
  readonly expired: number[] = [];
  readonly started: { id: number; origin: string; keepUntil: number | undefined }[] = [];
  /** Instances placement still has memory for. */
  room = 10;
  private nextId = 1;
  driver!: KeepAliveDriver;

  stateOf(id: number): InstanceState | undefined {
    return this.states.get(id);
  }

  liveInstances(version: ActionVersion): { id: number; state: InstanceState }[] {
    return [...this.states]
      .filter(([id, state]) => this.revisions.get(id) === version.revision && isLive(state))
      .map(([id, state]) => ({ id, state }));
  }

  expire(id: number): void {
    if (this.states.get(id) !== 'idle') return;
    this.expired.push(id);
    this.stop(id);
  }

  startAhead(
    version: ActionVersion,
    fn: FunctionState,
    origin: 'prewarm' | 'provisioned',
    keepUntil: number | undefined,
  ): boolean {
    if (this.room === 0) return false;
    this.room--;
    const id = this.instance(version, fn, keepUntil);
    this.started.push({ id, origin, keepUntil });
    return true;
  }

  /** An instance starts (for a call, or ahead of calls). */
  instance(version: ActionVersion, fn: FunctionState, keepUntil?: number): number {
    const id = this.nextId++;
    this.states.set(id, 'starting');
    this.revisions.set(id, version.revision);
    this.driver.instanceStarting(id, version, fn, keepUntil);
    return id;
  }

  /** It started, and nobody took it. */
  ready(id: number): void {
    this.states.set(id, 'idle');
    this.driver.instanceIdle(id, Date.now());
  }

  busy(id: number): void {
    this.states.set(id, 'busy');
    this.driver.instanceBusy(id);
  }

  idle(id: number): void {
    this.states.set(id, 'idle');
  }

  stop(id: number): void {
    this.states.set(id, 'stopping');
    this.driver.instanceStopping(id);
    this.states.delete(id);
    this.driver.instanceGone(id);
  }
}

let host: Host;
const drivers: KeepAliveDriver[] = [];

function driver(policy: KeepAlivePolicy): KeepAliveDriver {
  host = new Host();
  const d = new KeepAliveDriver(policy, host);
  host.driver = d;
  drivers.push(d);
  return d;
}

/** One call served by instance `id`: it arrives, takes the instance, ends. */
function serve(d: KeepAliveDriver, fn: FunctionState, id: number): void {
  d.callArrived(fn, Date.now());
  host.busy(id);
  host.idle(id);
  d.callEnded(fn, Date.now());
}

beforeEach(() => mock.timers.enable({ apis: ['setTimeout', 'Date'], now: T0 }));
afterEach(() => {
  for (const d of drivers.splice(0)) d.close();
  mock.timers.reset();
});

describe('the keep-alive driver', () => {
  it('lets an idle instance go once the fixed keep-alive has passed since the last call ended', () => {
    const d = driver(new FixedKeepAlive(100));
    const fn = d.functionFor(action());
    const id = host.instance(action(), fn);
    host.ready(id);
    serve(d, fn, id);
    mock.timers.tick(99);
    assert.deepEqual(host.expired, []);
    mock.timers.tick(1);
    assert.deepEqual(host.expired, [id]);
  });

  it('keeps an instance a call took before its time, and counts its idle time again from that call', () => {
    const d = driver(new FixedKeepAlive(100));
    const fn = d.functionFor(action());
    const id = host.instance(action(), fn);
    host.ready(id);
    serve(d, fn, id);
    mock.timers.tick(80);
    d.callArrived(fn, Date.now());
    host.busy(id);
    mock.timers.tick(50);
    assert.deepEqual(host.expired, [], 'busy at its old expiry');
    host.idle(id);
    d.callEnded(fn, Date.now());
    mock.timers.tick(99);
    assert.deepEqual(host.expired, []);
    mock.timers.tick(1);
    assert.deepEqual(host.expired, [id]);
  });

  it("does not let an instance go on an old expiry while the function's calls go on", () => {
    const d = driver(new FixedKeepAlive(100));
    const fn = d.functionFor(action());
    const a = host.instance(action(), fn);
    host.ready(a);
    serve(d, fn, a);
    mock.timers.tick(50);
    // Two calls overlap: one takes the idle instance and ends, the other still runs elsewhere.
    d.callArrived(fn, Date.now());
    d.callArrived(fn, Date.now());
    host.busy(a);
    host.idle(a);
    d.callEnded(fn, Date.now());
    mock.timers.tick(60);
    assert.deepEqual(host.expired, [], 'idle again, but its old expiry no longer counts');
    d.callEnded(fn, Date.now());
    mock.timers.tick(100);
    assert.deepEqual(host.expired, [a]);
  });

  it('lets an instance go at the expiry its last idle time set, whether later or earlier than the one before', () => {
    const keepFor = [300, 100, 50, 400];
    const d = driver(new ScriptedPolicy((now) => ({ keepUntil: now + (keepFor.shift() ?? 0) })));
    const fn = d.functionFor(action());
    const id = host.instance(action(), fn);
    host.ready(id);
    serve(d, fn, id);
    assert.deepEqual(d.planOf('ns', 'fn').expiresAt, new Map([[id, T0 + 300]]));
    mock.timers.tick(10);
    d.callArrived(fn, Date.now());
    host.busy(id);
    assert.deepEqual(d.planOf('ns', 'fn').expiresAt, new Map(), 'no expiry while busy');
    host.idle(id);
    d.callEnded(fn, Date.now());
    // Earlier than the first expiry: the instance goes at T0 + 110.
    mock.timers.tick(50);
    serve(d, fn, id);
    // Later again (T0 + 110 is passed without letting it go), then later still.
    mock.timers.tick(40);
    serve(d, fn, id);
    mock.timers.tick(399);
    assert.deepEqual(host.expired, [], 'kept until its last expiry');
    assert.deepEqual(d.planOf('ns', 'fn').expiresAt, new Map([[id, T0 + 500]]));
    mock.timers.tick(1);
    assert.deepEqual(host.expired, [id]);
  });

  it('sets expiries for the function whose call ended only, and forgets an instance that is gone', () => {
    const d = driver(new FixedKeepAlive(100));
    const other = { ...action(), name: 'other' };
    const fn = d.functionFor(action());
    const otherFn = d.functionFor(other);
    const [a, b] = [host.instance(action(), fn), host.instance(action(), fn)];
    const c = host.instance(other, otherFn);
    for (const id of [a, b, c]) host.ready(id);
    serve(d, fn, a);
    assert.deepEqual(
      d.planOf('ns', 'fn').expiresAt,
      new Map([
        [a, T0 + 100],
        [b, T0 + 100],
      ]),
    );
    assert.deepEqual(d.planOf('ns', 'other').expiresAt, new Map());
    mock.timers.tick(30);
    host.stop(b);
    serve(d, otherFn, c);
    assert.deepEqual(d.planOf('ns', 'fn').expiresAt, new Map([[a, T0 + 100]]));
    assert.deepEqual(d.planOf('ns', 'other').expiresAt, new Map([[c, T0 + 130]]));
    mock.timers.tick(100);
    assert.deepEqual(host.expired, [a, c]);
  });

  it('asks the policy only when the last of overlapping calls ends', () => {
    const decisions: number[] = [];
    const d = driver(
      new ScriptedPolicy((now) => {
        decisions.push(now);
        return { keepUntil: now + 100 };
      }),
    );
    const fn = d.functionFor(action());
    d.callArrived(fn, Date.now());
    d.callArrived(fn, Date.now());
    mock.timers.tick(10);
    d.callEnded(fn, Date.now());
    assert.deepEqual(decisions, []);
    mock.timers.tick(10);
    d.callEnded(fn, Date.now());
    assert.deepEqual(decisions, [T0 + 20]);
  });

  it('tells the policy how long the function was idle between calls', () => {
    const policy = new ScriptedPolicy((now) => ({ keepUntil: now + 100 }));
    const d = driver(policy);
    const fn = d.functionFor(action());
    d.callArrived(fn, Date.now());
    d.callEnded(fn, Date.now());
    mock.timers.tick(250);
    d.callArrived(fn, Date.now());
    assert.deepEqual(policy.idleTimes, [undefined, 250]);
  });

  it("unloads at once and prewarms at the policy's time; the prewarmed instance goes at its keep-until if unused", () => {
    const d = driver(new ScriptedPolicy((now) => ({ prewarmAt: now + 500, keepUntil: now + 800 })));
    const fn = d.functionFor(action());
    const id = host.instance(action(), fn);
    host.ready(id);
    serve(d, fn, id);
    assert.deepEqual(host.expired, [id], 'unloaded as the burst ended');
    mock.timers.tick(499);
    assert.deepEqual(host.started, []);
    mock.timers.tick(1);
    assert.deepEqual(host.started, [{ id: 2, origin: 'prewarm', keepUntil: T0 + 800 }]);
    host.ready(2);
    mock.timers.tick(299);
    assert.deepEqual(host.expired, [id]);
    mock.timers.tick(1);
    assert.deepEqual(host.expired, [id, 2]);
  });

  it('cancels a prewarm when a call arrives first, and prewarms nothing when an instance is ready', () => {
    const d = driver(new ScriptedPolicy((now) => ({ prewarmAt: now + 500, keepUntil: now + 800 })));
    const fn = d.functionFor(action());
    d.callArrived(fn, Date.now());
    d.callEnded(fn, Date.now());
    mock.timers.tick(100);
    d.callArrived(fn, Date.now());
    mock.timers.tick(1000);
    assert.deepEqual(host.started, [], 'the call came before the prewarm');
    // The next burst ends; an idle instance of another origin is still there at prewarm time.
    d.callEnded(fn, Date.now());
    const other = host.instance(action(), fn);
    host.ready(other);
    mock.timers.tick(500);
    assert.deepEqual(host.started, []);
  });

  it('starts the provisioned instances, never lets them expire, and starts a lost one again', async () => {
    const provisioned = action('r1', [{ key: 'minInstances', value: 2 }]);
    const d = driver(new FixedKeepAlive(100));
    d.provision(provisioned);
    assert.deepEqual(
      host.started.map((s) => s.origin),
      ['provisioned', 'provisioned'],
    );
    const fn = d.functionFor(provisioned);
    for (const { id } of host.started) host.ready(id);
    serve(d, fn, 1);
    mock.timers.tick(1000);
    assert.deepEqual(host.expired, [], 'kept at its minimum');
    host.stop(1);
    assert.equal(host.started.length, 2, 'started again on the next turn, not inside the stop');
    await Promise.resolve();
    assert.equal(host.started.length, 3);
    assert.equal(host.liveInstances(provisioned).length, 2);
  });

  it('lets the provisioned instances of an old version go, and stops provisioning when memory is short', () => {
    const v1 = action('r1', [{ key: 'minInstances', value: 1 }]);
    const d = driver(new FixedKeepAlive(100));
    d.provision(v1);
    host.ready(1);
    const v2 = action('r2', [{ key: 'minInstances', value: 3 }]);
    host.room = 1;
    d.provision(v2);
    assert.equal(host.liveInstances(v2).length, 1, 'as many as placement had room for');
    const fn = d.functionFor(v2);
    serve(d, fn, 1);
    mock.timers.tick(100);
    assert.deepEqual(host.expired, [1], 'the old version is not the one provisioned');
  });

  it('scales a function: its count replaces minInstances, starts the missing instances and lets surplus idle ones go', () => {
    const v1 = action('r1', [{ key: 'minInstances', value: 1 }]);
    const d = driver(new FixedKeepAlive(100));
    const fn = d.functionFor(v1);
    const warm = host.instance(v1, fn);
    host.ready(warm);
    serve(d, fn, warm);
    d.scale(v1, 3);
    assert.equal(d.settingsFor(v1).minInstances, 3);
    assert.deepEqual(
      host.started.map((s) => s.origin),
      ['provisioned', 'provisioned'],
      'two more beside the warm one',
    );
    for (const { id } of host.started) host.ready(id);
    mock.timers.tick(1000);
    assert.deepEqual(host.expired, [], 'the warm one is kept as one of the three');
    assert.equal(host.liveInstances(v1).length, 3);
    // A busy instance stays through a scale down; idle ones beyond the count go at once.
    host.busy(warm);
    d.scale(v1, 2);
    assert.equal(host.liveInstances(v1).length, 2);
    assert.equal(host.stateOf(warm), 'busy');
    d.scale(v1, 0);
    assert.deepEqual(host.liveInstances(v1), [{ id: warm, state: 'busy' }]);
    // Cleared, the annotation decides again; never more than maxInstances.
    d.scale(v1, undefined);
    assert.equal(d.settingsFor(v1).minInstances, 1);
    const capped = action('r2', [{ key: 'maxInstances', value: 2 }]);
    d.setScale('ns', 'fn', 5);
    assert.equal(d.settingsFor(capped).minInstances, 2);
    d.forget('ns', 'fn');
    assert.equal(d.settingsFor(capped).minInstances, 0, 'a deleted function loses its count');
  });

  it('forgets a deleted function: no prewarm comes for it', () => {
    const d = driver(new ScriptedPolicy((now) => ({ prewarmAt: now + 500, keepUntil: now + 800 })));
    const fn = d.functionFor(action());
    d.callArrived(fn, Date.now());
    d.callEnded(fn, Date.now());
    d.forget('ns', 'fn');
    mock.timers.tick(1000);
    assert.deepEqual(host.started, []);
    assert.notEqual(d.functionFor(action()), fn, 'a new function starts with an empty memory');
  });

  it('starts a function afresh when its policy changes', () => {
    const d = driver(new FixedKeepAlive(100));
    const fixed = d.functionFor(action());
    const hybrid = d.functionFor(action('r2', [{ key: 'keepAlive', value: 'hybrid' }]));
    assert.notEqual(hybrid, fixed);
    assert.equal(d.policyOf(action('r2', [{ key: 'keepAlive', value: 'hybrid' }])), 'hybrid');
    assert.equal(d.policyOf(action('r3')), 'fixed:100ms');
  });

  it('runs no timer after it is closed', () => {
    const d = driver(new FixedKeepAlive(100));
    const fn = d.functionFor(action());
    const id = host.instance(action(), fn);
    host.ready(id);
    serve(d, fn, id);
    d.close();
    mock.timers.tick(1000);
    assert.deepEqual(host.expired, []);
  });
});
