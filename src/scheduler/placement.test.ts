import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { type Effects, Placement, type PoolSpec } from './placement.js';

/**
 * Placement driven by random interleavings of what can happen to calls and instances: arrivals,
 * starts that succeed or fail, runs that end well or badly, queue timeouts, sandbox deaths,
 * deletes (retiring a version), keep-alive expiries, prewarms and the end of a sandbox's
 * destruction. After every step: memory in use never exceeds the budget and equals the live
 * instances' memory, no instance is busy without a run, no call is served twice; and once
 * everything in flight has finished, no call is left waiting.
 */

type Op =
  | { op: 'arrive'; pool: number }
  | { op: 'startDone'; pick: number; ok: boolean }
  | { op: 'runEnded'; pick: number; healthy: boolean }
  | { op: 'endedAgain'; pick: number; healthy: boolean }
  | { op: 'timeout'; pick: number }
  | { op: 'died'; pick: number }
  | { op: 'retire'; pool: number }
  | { op: 'expire'; pick: number }
  | { op: 'stopped'; pick: number }
  | { op: 'provision'; pool: number };

const specArb = (namespace: string, index: number) =>
  fc.record({
    key: fc.constant(`${namespace}/f${index}@0.0.1#r${index}`),
    namespace: fc.constant(namespace),
    memoryMb: fc.constantFrom(64, 128, 256, 512, 1024),
    concurrency: fc.integer({ min: 1, max: 3 }),
    maxInstances: fc.integer({ min: 1, max: 3 }),
    maxQueued: fc.integer({ min: 0, max: 6 }),
  });

const configArb = fc.record({
  budgetMb: fc.constantFrom(256, 512, 768),
  specs: fc.tuple(specArb('a', 0), specArb('a', 1), specArb('b', 2), specArb('c', 3)),
});

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('arrive' as const), pool: fc.nat(3) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('startDone' as const), pick: fc.nat(), ok: fc.boolean() }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('runEnded' as const), pick: fc.nat(), healthy: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('endedAgain' as const), pick: fc.nat(), healthy: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('timeout' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('died' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('retire' as const), pool: fc.nat(3) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('expire' as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('stopped' as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('provision' as const), pool: fc.nat(3) }) },
);

/** What a driver would track, with the checks a correct placement must pass. */
class Model {
  readonly placement: Placement;
  private nextWaiter = 1;
  private now = 0;
  /** Waiters not yet served or refused. */
  readonly pending = new Set<number>();
  /** Waiters that got an instance, refused or gave up: each may end only once. */
  readonly ended = new Set<number>();
  /** Starts in flight, with the waiter each is for. */
  readonly starting = new Map<number, number | undefined>();
  /** Runs in flight per instance. */
  readonly runs = new Map<number, Set<number>>();
  /** The version each waiter called. */
  private readonly poolOf = new Map<number, string>();
  /** Runs that ended, as [instance, run]. */
  readonly endedRuns: (readonly [number, number])[] = [];
  /** Instances being destroyed. */
  readonly stopping = new Set<number>();
  /** Retired versions never get new instances. */
  private readonly retired = new Set<string>();
  /** Retired versions no call has arrived for since: once everything settles, none of their instances is left. */
  readonly drained = new Set<string>();

  constructor(
    budgetMb: number,
    readonly specs: readonly PoolSpec[],
  ) {
    this.placement = new Placement(budgetMb);
  }

  step(op: Op): void {
    this.now += 1;
    switch (op.op) {
      case 'arrive': {
        const spec = this.specs[op.pool] as PoolSpec;
        const id = this.nextWaiter++;
        this.pending.add(id);
        this.poolOf.set(id, spec.key);
        this.drained.delete(spec.key);
        this.apply(this.placement.arrive(spec, id, this.now), spec);
        return;
      }
      case 'startDone': {
        const id = pick(this.starting.keys(), op.pick);
        if (id === undefined) return;
        this.starting.delete(id);
        if (op.ok) this.apply(this.placement.started(id, this.now));
        else {
          const waiter = this.placementStarter(id);
          if (waiter !== undefined) this.end(waiter);
          this.apply(this.placement.startFailed(id, this.now));
          if (this.placement.instance(id)) this.stopping.add(id);
        }
        return;
      }
      case 'runEnded': {
        const entries = [...this.runs].flatMap(([instance, waiters]) => [...waiters].map((w) => [instance, w] as const));
        const entry = entries.length > 0 ? entries[op.pick % entries.length] : undefined;
        if (!entry) return;
        this.runs.get(entry[0])?.delete(entry[1]);
        this.endedRuns.push(entry);
        this.apply(this.placement.runEnded(entry[0], entry[1], op.healthy, this.now));
        return;
      }
      case 'endedAgain': {
        // A run released twice, or its result arriving after it was already counted as ended.
        const entry = pick(this.endedRuns, op.pick);
        if (!entry) return;
        const before = this.placement.instance(entry[0]);
        const state = before?.state;
        const effects = this.placement.runEnded(entry[0], entry[1], op.healthy, this.now);
        assert.deepEqual(effects, { assigned: [], start: [], stop: [], rejected: [] }, 'a run ending twice changes nothing');
        assert.equal(this.placement.instance(entry[0])?.state, state);
        return;
      }
      case 'timeout': {
        const waiter = pick(
          [...this.pending].filter((w) => this.placement.isWaiting(w)),
          op.pick,
        );
        if (waiter === undefined) return;
        this.placement.leave(waiter);
        this.end(waiter);
        return;
      }
      case 'died':
        this.onInstance(op.pick, (id) => this.apply(this.placement.died(id, this.now)));
        return;
      case 'expire':
        this.onInstance(op.pick, (id) => this.apply(this.placement.expire(id, this.now)));
        return;
      case 'retire': {
        const spec = this.specs[op.pool] as PoolSpec;
        this.retired.add(spec.key);
        this.drained.add(spec.key);
        this.apply(this.placement.retire([spec.key], this.now));
        return;
      }
      case 'stopped': {
        const id = pick(this.stopping, op.pick);
        if (id === undefined || this.starting.has(id)) return;
        this.stopping.delete(id);
        this.placement.stopped(id);
        return;
      }
      case 'provision': {
        const spec = this.specs[op.pool] as PoolSpec;
        // The driver never prewarms or provisions a version it retired.
        if (this.retired.has(spec.key)) return;
        const waiting = this.placement.waitingCount();
        const effects = this.placement.provision(spec, 'prewarm', this.now);
        if (waiting > 0) assert.deepEqual(effects.start, [], 'nothing starts ahead of calls while calls wait');
        this.apply(effects, spec);
        return;
      }
    }
  }

  /** Finishes everything in flight, in turn, until nothing is. */
  quiesce(): void {
    for (let rounds = 0; rounds < 10_000; rounds++) {
      const start = this.starting.keys().next();
      if (!start.done) {
        this.starting.delete(start.value);
        this.apply(this.placement.started(start.value, ++this.now));
        continue;
      }
      const busy = [...this.runs].find(([, waiters]) => waiters.size > 0);
      if (busy) {
        const [instance, waiters] = busy;
        const waiter = waiters.values().next().value as number;
        waiters.delete(waiter);
        this.endedRuns.push([instance, waiter]);
        this.apply(this.placement.runEnded(instance, waiter, true, ++this.now));
        continue;
      }
      const stop = this.stopping.values().next();
      if (!stop.done) {
        this.stopping.delete(stop.value);
        this.placement.stopped(stop.value);
        continue;
      }
      return;
    }
    throw new Error('placement did not settle');
  }

  check(): void {
    this.placement.check();
    for (const spec of this.specs)
      assert.ok(this.placement.waitingCount(spec.key) <= spec.maxQueued, `${spec.key} has more calls waiting than its maxQueued`);
    for (const instance of this.placement.allInstances()) {
      const runs = [...(this.runs.get(instance.id) ?? [])].sort();
      assert.deepEqual([...instance.runs].sort(), runs, `instance ${instance.id} holds the runs that are running on it`);
    }
  }

  private placementStarter(instance: number): number | undefined {
    return this.starting.get(instance) ?? this.startedFor.get(instance);
  }

  private readonly startedFor = new Map<number, number | undefined>();

  private onInstance(index: number, act: (id: number) => void): void {
    const id = pick(
      [...this.placement.allInstances()].map((i) => i.id),
      index,
    );
    if (id !== undefined) act(id);
  }

  private end(waiter: number): void {
    assert.ok(!this.ended.has(waiter), `waiter ${waiter} ended twice`);
    this.ended.add(waiter);
    this.pending.delete(waiter);
  }

  private apply(effects: Effects, spec?: PoolSpec): void {
    // First come, first served within a version: nobody served now may have overtaken an older call of its version still waiting.
    const served = [
      ...effects.start.flatMap((s) => (s.waiter === undefined ? [] : [s.waiter])),
      ...effects.assigned.filter((a) => !a.cold).map((a) => a.waiter),
    ];
    for (const waiter of served) {
      const pool = this.poolOf.get(waiter);
      for (const older of this.pending)
        if (older < waiter && this.poolOf.get(older) === pool && this.placement.isWaiting(older))
          assert.fail(`waiter ${waiter} of ${pool} was served before the older ${older}`);
    }
    for (const { waiter } of effects.rejected) this.end(waiter);
    for (const { instance } of effects.stop) this.stopping.add(instance);
    for (const { instance, waiter } of effects.start) {
      const record = this.placement.instance(instance);
      assert.ok(record, 'a started instance exists');
      if (waiter === undefined)
        assert.ok(!this.retired.has(record.pool), `a retired version ${record.pool} was started ahead of calls`);
      if (spec && waiter === undefined) assert.equal(record.pool, spec.key);
      this.starting.set(instance, waiter);
      this.startedFor.set(instance, waiter);
    }
    for (const { waiter, instance, cold } of effects.assigned) {
      assert.ok(this.pending.has(waiter), `waiter ${waiter} was served but was not waiting`);
      if (cold)
        assert.equal(this.startedFor.get(instance), waiter, 'a cold assignment goes to the waiter the instance was started for');
      this.end(waiter);
      let runs = this.runs.get(instance);
      if (!runs) {
        runs = new Set();
        this.runs.set(instance, runs);
      }
      runs.add(waiter);
    }
  }
}

function pick<T>(items: Iterable<T>, index: number): T | undefined {
  const list = [...items];
  return list.length === 0 ? undefined : list[index % list.length];
}

describe('placement, under random interleavings', () => {
  it('keeps memory within the budget, serves every call once, and leaves none waiting', () => {
    fc.assert(
      fc.property(configArb, fc.array(opArb, { minLength: 1, maxLength: 200 }), (config, ops) => {
        const model = new Model(config.budgetMb, config.specs);
        for (const op of ops) {
          model.step(op);
          model.check();
        }
        model.quiesce();
        model.check();
        assert.equal(model.placement.waitingCount(), 0, 'once nothing runs, no call is left waiting');
        for (const key of model.drained)
          assert.deepEqual(model.placement.instancesOf(key), [], `a retired version ${key} keeps no instance once idle`);
        assert.equal(model.pending.size, 0, 'every admitted call was served, refused or gave up');
        assert.equal(
          model.placement.memoryUsedMb,
          [...model.placement.allInstances()].reduce((n, i) => n + i.memoryMb, 0),
        );
      }),
      { numRuns: 400 },
    );
  });

  it('lets an instance started ahead of calls go as soon as it started when its version was retired meanwhile', () => {
    const placement = new Placement(256);
    const spec: PoolSpec = { key: 'ns/f@1#a', namespace: 'ns', memoryMb: 128, concurrency: 1, maxInstances: 2, maxQueued: 10 };
    const instance = placement.provision(spec, 'prewarm', 0).start[0]?.instance as number;
    assert.deepEqual(placement.retire([spec.key], 1).stop, [], 'still starting: nothing to stop yet');
    const effects = placement.started(instance, 2);
    assert.deepEqual(effects.stop, [{ instance, reason: 'retired' }]);
    assert.equal(placement.memoryUsedMb, 0);
    placement.check();
  });

  it('starts nothing ahead of calls while a call waits, even with memory free', () => {
    const placement = new Placement(512);
    const busy: PoolSpec = { key: 'ns/a@1#a', namespace: 'ns', memoryMb: 128, concurrency: 1, maxInstances: 1, maxQueued: 10 };
    const other: PoolSpec = { key: 'ns/b@1#b', namespace: 'ns', memoryMb: 128, concurrency: 1, maxInstances: 1, maxQueued: 10 };
    placement.arrive(busy, 1, 0);
    placement.arrive(busy, 2, 0);
    assert.equal(placement.waitingCount(), 1, "the second call waits for the version's only instance");
    assert.deepEqual(placement.provision(other, 'prewarm', 1).start, []);
    assert.equal(placement.memoryUsedMb, 128);
  });

  it('serves the calls of one version in the order they came, also when memory frees', () => {
    const placement = new Placement(128);
    const spec: PoolSpec = { key: 'ns/f@1#a', namespace: 'ns', memoryMb: 128, concurrency: 1, maxInstances: 1, maxQueued: 10 };
    const instance = placement.arrive(spec, 1, 0).start[0]?.instance as number;
    placement.started(instance, 1);
    for (const waiter of [2, 3, 4]) placement.arrive(spec, waiter, 2);
    assert.deepEqual(placement.runEnded(instance, 1, true, 3).assigned, [{ waiter: 2, instance, cold: false }]);
    assert.deepEqual(placement.runEnded(instance, 2, false, 4).start, [{ instance: instance + 1, waiter: 3 }]);
    placement.check();
  });

  it("refuses a call beyond its version's maxQueued, and only that one", () => {
    const placement = new Placement(128);
    const spec: PoolSpec = { key: 'ns/f@1#a', namespace: 'ns', memoryMb: 128, concurrency: 1, maxInstances: 1, maxQueued: 2 };
    placement.arrive(spec, 1, 0);
    assert.deepEqual(placement.arrive(spec, 2, 0).rejected, []);
    assert.deepEqual(placement.arrive(spec, 3, 0).rejected, []);
    assert.deepEqual(placement.arrive(spec, 4, 0).rejected, [{ waiter: 4, reason: 'queue-full' }]);
    assert.equal(placement.waitingCount(spec.key), 2);
  });

  it('serves a namespace flooding the queue and a quiet one in turn', () => {
    const placement = new Placement(256);
    const hog: PoolSpec = { key: 'hog/f@1#a', namespace: 'hog', memoryMb: 256, concurrency: 1, maxInstances: 10, maxQueued: 100 };
    const quiet: PoolSpec = {
      key: 'quiet/f@1#b',
      namespace: 'quiet',
      memoryMb: 256,
      concurrency: 1,
      maxInstances: 10,
      maxQueued: 100,
    };
    const first = placement.arrive(hog, 1, 0);
    assert.equal(first.start.length, 1);
    const instance = first.start[0]?.instance as number;
    placement.started(instance, 1);
    for (let w = 2; w <= 10; w++) placement.arrive(hog, w, 2);
    placement.arrive(quiet, 100, 3);
    // The hog's run ends: the quiet namespace goes before the hog's next nine.
    const next = placement.runEnded(instance, 1, true, 4);
    assert.deepEqual(
      next.start.map((s) => s.waiter),
      [100],
    );
    assert.deepEqual(next.stop, [{ instance, reason: 'retired' }], "the hog's idle instance made room");
    placement.check();
  });
});
