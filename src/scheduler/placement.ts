import { Instance, type InstanceEvent, type InstanceOrigin, isLive, type Reaction } from './instance.js';
import { FairQueue } from './waiters.js';

/**
 * Where invocations run, decided without timers, I/O or promises (after OpenWhisk's
 * `ContainerPool` object): which instance takes a call, when a new one may start, which idle
 * ones to evict for memory, and which waiting call goes next (in the fair order of waiters.ts).
 * Every change goes through one method that returns the effects for a driver to carry out (start
 * these instances, stop those, hand these waiters their instance); the driver reports back how
 * the effects ended (started, failed, stopped, run ended) through the same methods. Nothing here
 * calls back into the driver, so no decision can be re-entered half made, and the memory account
 * is exact: the sum of the memory of live (starting, idle, busy) instances, never above the budget.
 * Each instance keeps its own state and runs (instance.ts); placement only sends it events.
 */

/** One version of a function as placement sees it. */
export interface PoolSpec {
  /** The version's pool key (`namespace/name@version#revision`). */
  key: string;
  namespace: string;
  memoryMb: number;
  /** Calls one instance serves at once. */
  concurrency: number;
  /** Live instances the version may have at once. */
  maxInstances: number;
  /** Calls that may wait for an instance of the version; beyond them a call is refused. */
  maxQueued: number;
}

export type { InstanceOrigin } from './instance.js';

/** An instance as others may see it: read only, and no way to send it events but through placement. */
export type InstanceRecord = Readonly<
  Pick<Instance, 'id' | 'pool' | 'memoryMb' | 'concurrency' | 'origin' | 'state' | 'lastUsed' | 'inflight' | 'runs'>
>;

export interface WaiterRecord {
  readonly id: number;
  readonly pool: string;
  readonly namespace: string;
}

/** Why a waiter will not be served: too big for the budget, its queue is full, or its instance was stopped while starting. */
export type Rejection = 'too-big' | 'queue-full' | 'stopped';

/** Why an instance is stopped: let go while idle, a run failed on it, its sandbox died, or shutdown. */
export type StopReason = 'retired' | 'failed' | 'died' | 'shutdown';

/** What the driver must do after a decision. */
export interface Effects {
  /** Waiters given an instance; `cold` when the instance was started for that waiter. The waiter's id is its run's. */
  assigned: { waiter: number; instance: number; cold: boolean }[];
  /** Instances to start, memory already reserved, with the waiter each is for (if any). */
  start: { instance: number; waiter: number | undefined }[];
  /** Instances to stop; their memory is already returned. */
  stop: { instance: number; reason: StopReason }[];
  /** Waiters that will not be served. */
  rejected: { waiter: number; reason: Rejection }[];
}

interface PoolState {
  spec: PoolSpec;
  /** Instances of this version, live or on their way out. */
  instances: Set<number>;
  /** Calls of this version waiting. */
  waiting: number;
  /** An old version: no new instances, and instances go as soon as they are idle. */
  draining: boolean;
}

function noEffects(): Effects {
  return { assigned: [], start: [], stop: [], rejected: [] };
}

export class Placement {
  private readonly pools = new Map<string, PoolState>();
  private readonly instances = new Map<number, Instance>();
  private readonly queue = new FairQueue<WaiterRecord>();
  private usedMb = 0;
  private nextInstanceId = 1;

  constructor(readonly budgetMb: number) {}

  get memoryUsedMb(): number {
    return this.usedMb;
  }

  instance(id: number): InstanceRecord | undefined {
    return this.instances.get(id);
  }

  allInstances(): IterableIterator<InstanceRecord> {
    return this.instances.values();
  }

  /** Live instances of a version. */
  instancesOf(poolKey: string): InstanceRecord[] {
    const pool = this.pools.get(poolKey);
    if (!pool) return [];
    return [...pool.instances].map((id) => this.instances.get(id) as Instance).filter((i) => isLive(i.state));
  }

  /** Calls waiting, in all or one version. */
  waitingCount(poolKey?: string): number {
    if (poolKey === undefined) return this.queue.size;
    return this.pools.get(poolKey)?.waiting ?? 0;
  }

  isWaiting(waiter: number): boolean {
    return this.queue.has(waiter);
  }

  /** A call arrives: it gets a warm instance, a new one, a place in the queue, or a refusal. */
  arrive(spec: PoolSpec, waiter: number, now: number): Effects {
    const effects = noEffects();
    if (spec.memoryMb > this.budgetMb) {
      effects.rejected.push({ waiter, reason: 'too-big' });
      return effects;
    }
    const pool = this.poolFor(spec);
    // The common case, on every warm call: nobody waits, and an instance has room.
    const warm = this.queue.size === 0 ? this.pickInstance(pool) : undefined;
    if (warm) {
      this.assign(warm, waiter, effects, false);
      return effects;
    }
    const record: WaiterRecord = { id: waiter, pool: spec.key, namespace: spec.namespace };
    this.enqueue(record);
    this.drain(now, effects);
    if (this.queue.has(waiter) && pool.waiting > spec.maxQueued) {
      this.dequeue(waiter);
      effects.rejected.push({ waiter, reason: 'queue-full' });
    }
    return effects;
  }

  /** A waiting call gave up (its queue timeout passed). */
  leave(waiter: number): void {
    const record = this.dequeue(waiter);
    this.dropPoolIfUnused(record?.pool);
  }

  /** An instance of a version with no call waiting for it (a prewarm, or a provisioned one). */
  provision(spec: PoolSpec, origin: Exclude<InstanceOrigin, 'demand'>, now: number): Effects {
    const effects = noEffects();
    // Calls that wait come first: a speculative instance must not take memory they need.
    if (spec.memoryMb > this.budgetMb || this.queue.size > 0) return effects;
    const pool = this.poolFor(spec);
    if (pool.draining || this.liveCount(pool) >= spec.maxInstances || !this.reserve(spec.memoryMb, effects)) {
      this.dropPoolIfUnused(spec.key);
      return effects;
    }
    const instance = this.newInstance(pool, origin, now, undefined);
    effects.start.push({ instance: instance.id, waiter: undefined });
    return effects;
  }

  /**
   * An instance finished starting: the call it was started for runs on it first. One stopped
   * while it started (shutdown) serves nobody: its call is refused.
   */
  started(id: number, now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (!instance) return effects;
    const starter = instance.starter;
    instance.starter = undefined;
    if (this.fire(instance, { type: 'Started' }, effects) !== 'changed') {
      if (starter !== undefined) effects.rejected.push({ waiter: starter, reason: 'stopped' });
      return effects;
    }
    instance.lastUsed = now;
    if (starter !== undefined) this.assign(instance, starter, effects, true);
    // Started ahead of calls for a version retired meanwhile: nothing will ever need it.
    else if (this.pools.get(instance.pool)?.draining) this.fire(instance, { type: 'Retired' }, effects, 'retired');
    this.drain(now, effects);
    return effects;
  }

  /** An instance could not be started: its memory comes back (its starter learns why from the driver). */
  startFailed(id: number, now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (!instance) return effects;
    instance.starter = undefined;
    this.fire(instance, { type: 'StartFailed' }, effects);
    if (instance.state === 'stopped') this.forget(instance);
    this.drain(now, effects);
    return effects;
  }

  /**
   * Run `run` on an instance ended. An unhealthy instance (timed out, crashed, died) is replaced;
   * a run ending on an instance already on its way out, or ending twice, changes nothing else.
   */
  runEnded(id: number, run: number, healthy: boolean, now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (!instance) return effects;
    if (this.fire(instance, { type: 'RunEnded', run, healthy }, effects, 'failed') !== 'changed') return effects;
    instance.lastUsed = now;
    if (instance.state === 'idle' && this.pools.get(instance.pool)?.draining)
      this.fire(instance, { type: 'Retired' }, effects, 'retired');
    this.drain(now, effects);
    return effects;
  }

  /** The keep-alive let an idle instance go. Ignored unless it is idle. */
  expire(id: number, now: number): Effects {
    return this.stopOne(id, { type: 'Retired' }, 'retired', now);
  }

  /**
   * An instance's sandbox died on its own: it stops now, whatever it was doing; the runs on it
   * end with the death (unhealthy), and are absorbed.
   */
  died(id: number, now: number): Effects {
    return this.stopOne(id, { type: 'Died' }, 'died', now);
  }

  private stopOne(id: number, event: InstanceEvent, reason: StopReason, now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (!instance || this.fire(instance, event, effects, reason) !== 'changed') return effects;
    this.drain(now, effects);
    return effects;
  }

  /**
   * Old versions: idle instances go now, busy ones when their runs end; calls already waiting
   * for a version are still served by it, and nothing is started for it ahead of calls.
   */
  retire(poolKeys: Iterable<string>, now: number): Effects {
    const effects = noEffects();
    for (const key of poolKeys) {
      const pool = this.pools.get(key);
      if (!pool) continue;
      pool.draining = true;
      for (const id of pool.instances) this.fire(this.instances.get(id) as Instance, { type: 'Retired' }, effects, 'retired');
    }
    this.drain(now, effects);
    return effects;
  }

  /** Stops everything (shutdown): every live instance, and every waiter is rejected by the driver. */
  stopAll(): Effects {
    const effects = noEffects();
    for (const instance of this.instances.values()) this.fire(instance, { type: 'Stop' }, effects, 'shutdown');
    for (const record of [...this.queue.values()]) this.dequeue(record.id);
    return effects;
  }

  /** The driver finished destroying an instance's sandbox. */
  stopped(id: number): void {
    const instance = this.instances.get(id);
    if (!instance) return;
    this.fire(instance, { type: 'Stopped' }, noEffects());
    this.forget(instance);
  }

  /** Checks the invariants; throws describing the first one broken. For tests. */
  check(): void {
    let live = 0;
    for (const instance of this.instances.values()) {
      if (isLive(instance.state)) live += instance.memoryMb;
      if (instance.state === 'busy' && instance.inflight === 0) throw new Error(`instance ${instance.id} is busy without a run`);
      if ((instance.state === 'idle' || instance.state === 'starting') && instance.inflight !== 0)
        throw new Error(`instance ${instance.id} is ${instance.state} with runs`);
      if (instance.inflight > instance.concurrency) throw new Error(`instance ${instance.id} runs more than its concurrency`);
      if (!this.pools.get(instance.pool)?.instances.has(instance.id))
        throw new Error(`instance ${instance.id} is not in its pool`);
    }
    if (live !== this.usedMb) throw new Error(`memory account ${this.usedMb} MB differs from live instances' ${live} MB`);
    if (this.usedMb > this.budgetMb) throw new Error(`memory in use ${this.usedMb} MB exceeds the budget ${this.budgetMb} MB`);
    let waiting = 0;
    for (const pool of this.pools.values()) {
      waiting += pool.waiting;
      if (pool.waiting < 0) throw new Error(`pool ${pool.spec.key} has a negative queue`);
    }
    if (waiting !== this.queue.size) throw new Error(`pools count ${waiting} waiters, the queue holds ${this.queue.size}`);
  }

  // ---- decisions ----------------------------------------------------------------------------

  /**
   * Serves waiting calls while any can be served, in the fair queue's order: namespaces take
   * turns, least recently served first, and within a namespace first come, first served. A call
   * takes a warm instance of its version with room, or else starts one if its version may have
   * another and memory can be found (evicting the least recently used idle instances). A
   * namespace whose oldest call needing memory cannot get it starts nothing else this turn.
   */
  private drain(now: number, effects: Effects): void {
    for (;;) {
      let progressed = false;
      for (const { namespace, calls } of this.queue.turns()) {
        if (this.serveOne(calls, now, effects)) {
          progressed = true;
          this.queue.served(namespace);
        }
      }
      if (!progressed) return;
    }
  }

  /** Serves the first call of a namespace's queue that can be served now; false if none can. Changes the queue only as it returns. */
  private serveOne(calls: readonly WaiterRecord[], now: number, effects: Effects): boolean {
    const blockedPools = new Set<string>();
    let memoryBlocked = false;
    for (const waiter of calls) {
      if (blockedPools.has(waiter.pool)) continue;
      const pool = this.pools.get(waiter.pool) as PoolState;
      const warm = this.pickInstance(pool);
      if (warm) {
        this.dequeue(waiter.id);
        this.assign(warm, waiter.id, effects, false);
        return true;
      }
      // An old version still serves the calls accepted for it, then its instances go.
      if (memoryBlocked || this.liveCount(pool) >= pool.spec.maxInstances) {
        blockedPools.add(waiter.pool);
        continue;
      }
      if (!this.reserve(pool.spec.memoryMb, effects)) {
        // First come, first served for memory within a namespace: later calls may still take
        // warm instances, but start none before this one.
        memoryBlocked = true;
        blockedPools.add(waiter.pool);
        continue;
      }
      this.dequeue(waiter.id);
      const instance = this.newInstance(pool, 'demand', now, waiter.id);
      effects.start.push({ instance: instance.id, waiter: waiter.id });
      return true;
    }
    return false;
  }

  /** A live instance with room for another run: busy ones first (fill them), then the freshest idle one. */
  private pickInstance(pool: PoolState): Instance | undefined {
    let best: Instance | undefined;
    for (const id of pool.instances) {
      const instance = this.instances.get(id) as Instance;
      if (!instance.hasRoom) continue;
      if (!best) best = instance;
      else if (instance.state === 'busy' && best.state !== 'busy') best = instance;
      else if (instance.state === best.state && instance.lastUsed > best.lastUsed) best = instance;
    }
    return best;
  }

  /** Takes memory for a new instance, evicting the least recently used idle instances if that is enough. */
  private reserve(memoryMb: number, effects: Effects): boolean {
    if (this.usedMb + memoryMb > this.budgetMb) {
      const idle = [...this.instances.values()].filter((i) => i.state === 'idle').sort((a, b) => a.lastUsed - b.lastUsed);
      let free = this.budgetMb - this.usedMb;
      const victims: Instance[] = [];
      for (const instance of idle) {
        if (free >= memoryMb) break;
        victims.push(instance);
        free += instance.memoryMb;
      }
      if (free < memoryMb) return false;
      for (const victim of victims) this.fire(victim, { type: 'Retired' }, effects, 'retired');
    }
    this.usedMb += memoryMb;
    return true;
  }

  // ---- bookkeeping --------------------------------------------------------------------------

  /**
   * Sends an instance an event and keeps the memory account: an instance that leaves the live
   * states gives its memory back at once, and one now stopping is to be destroyed (`reason`).
   */
  private fire(instance: Instance, event: InstanceEvent, effects: Effects, reason: StopReason = 'failed'): Reaction {
    const wasLive = isLive(instance.state);
    const reaction = instance.handle(event);
    if (wasLive && !isLive(instance.state)) {
      this.usedMb -= instance.memoryMb;
      if (instance.state === 'stopping') effects.stop.push({ instance: instance.id, reason });
    }
    return reaction;
  }

  private assign(instance: Instance, waiter: number, effects: Effects, cold: boolean): void {
    // Placement only picks instances with room, so a refusal is a defect here, not a late event.
    if (this.fire(instance, { type: 'Assigned', run: waiter }, effects) !== 'changed')
      throw new Error(`instance ${instance.id} refused run ${waiter} while ${instance.state}`);
    effects.assigned.push({ waiter, instance: instance.id, cold });
  }

  private poolFor(spec: PoolSpec): PoolState {
    let pool = this.pools.get(spec.key);
    if (!pool) {
      pool = { spec, instances: new Set(), waiting: 0, draining: false };
      this.pools.set(spec.key, pool);
    } else pool.spec = spec;
    return pool;
  }

  private liveCount(pool: PoolState): number {
    let n = 0;
    for (const id of pool.instances) if (isLive((this.instances.get(id) as Instance).state)) n++;
    return n;
  }

  private newInstance(pool: PoolState, origin: InstanceOrigin, now: number, starter: number | undefined): Instance {
    const instance = new Instance(
      this.nextInstanceId++,
      pool.spec.key,
      pool.spec.memoryMb,
      pool.spec.concurrency,
      origin,
      now,
      starter,
    );
    this.instances.set(instance.id, instance);
    pool.instances.add(instance.id);
    return instance;
  }

  private forget(instance: Instance): void {
    this.instances.delete(instance.id);
    this.pools.get(instance.pool)?.instances.delete(instance.id);
    this.dropPoolIfUnused(instance.pool);
  }

  private dropPoolIfUnused(key: string | undefined): void {
    if (key === undefined) return;
    const pool = this.pools.get(key);
    if (pool && pool.instances.size === 0 && pool.waiting === 0) this.pools.delete(key);
  }

  private enqueue(waiter: WaiterRecord): void {
    this.queue.add(waiter);
    (this.pools.get(waiter.pool) as PoolState).waiting++;
  }

  private dequeue(id: number): WaiterRecord | undefined {
    const waiter = this.queue.remove(id);
    const pool = waiter && this.pools.get(waiter.pool);
    if (pool) pool.waiting--;
    return waiter;
  }
}
