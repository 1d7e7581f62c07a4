import { type InstanceEvent, type InstanceState, isLive, transition } from './instance.js';

/**
 * Where invocations run, decided without timers, I/O or promises (after OpenWhisk's
 * `ContainerPool` object): which instance takes a call, when a new one may start, which idle
 * ones to evict for memory, and in which order waiting calls are served. Every change goes
 * through one method that returns the effects for a driver to carry out (start these instances,
 * stop those, hand these waiters their instance); the driver reports back how the effects ended
 * (started, failed, stopped, run ended) through the same methods. Nothing here calls back into
 * the driver, so no decision can be re-entered half made, and the memory account is exact:
 * the sum of the memory of live (starting, idle, busy) instances, never above the budget.
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

export type InstanceOrigin = 'demand' | 'prewarm' | 'provisioned';

export interface InstanceRecord {
  readonly id: number;
  readonly pool: string;
  readonly memoryMb: number;
  readonly concurrency: number;
  /** Started for a waiting call, by the keep-alive policy's prewarm, or to provision. */
  readonly origin: InstanceOrigin;
  state: InstanceState;
  /** Runs on it now. */
  inflight: number;
  /** When it last finished a run (or was made). */
  lastUsed: number;
  /** The waiter it is being started for, until it has started. */
  starter: number | undefined;
}

export interface WaiterRecord {
  readonly id: number;
  readonly pool: string;
  readonly namespace: string;
}

export type Rejection = 'too-big' | 'queue-full';

/** What the driver must do after a decision. */
export interface Effects {
  /** Waiters given an instance; `cold` when the instance was started for that waiter. */
  assigned: { waiter: number; instance: number; cold: boolean }[];
  /** Instances to start, memory already reserved, with the waiter each is for (if any). */
  start: { instance: number; waiter: number | undefined }[];
  /** Instances to stop; their memory is already returned. */
  stop: { instance: number; event: 'Retired' | 'Failed' }[];
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

const MAX_REMEMBERED_NAMESPACES = 4096;

function noEffects(): Effects {
  return { assigned: [], start: [], stop: [], rejected: [] };
}

export class Placement {
  private readonly pools = new Map<string, PoolState>();
  private readonly instances = new Map<number, InstanceRecord>();
  /** Waiting calls per namespace, first come first served. */
  private readonly queues = new Map<string, WaiterRecord[]>();
  /** When each namespace was last served (a counter): the least recently served goes first. */
  private readonly lastServed = new Map<string, number>();
  private serveCount = 0;
  private readonly queued = new Map<number, WaiterRecord>();
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
    return [...pool.instances].map((id) => this.instances.get(id) as InstanceRecord).filter((i) => isLive(i.state));
  }

  /** Calls waiting, in all or one version. */
  waitingCount(poolKey?: string): number {
    if (poolKey === undefined) return this.queued.size;
    return this.pools.get(poolKey)?.waiting ?? 0;
  }

  isWaiting(waiter: number): boolean {
    return this.queued.has(waiter);
  }

  poolSpecs(): PoolSpec[] {
    return [...this.pools.values()].map((p) => p.spec);
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
    const warm = this.queued.size === 0 ? this.pickInstance(pool) : undefined;
    if (warm) {
      this.assign(warm);
      effects.assigned.push({ waiter, instance: warm.id, cold: false });
      return effects;
    }
    const record: WaiterRecord = { id: waiter, pool: spec.key, namespace: spec.namespace };
    this.enqueue(record);
    this.drain(now, effects);
    if (this.queued.has(waiter) && pool.waiting > spec.maxQueued) {
      this.dequeue(record);
      effects.rejected.push({ waiter, reason: 'queue-full' });
    }
    return effects;
  }

  /** A waiting call gave up (its queue timeout passed). */
  leave(waiter: number): void {
    const record = this.queued.get(waiter);
    if (record) this.dequeue(record);
    this.dropPoolIfUnused(record?.pool);
  }

  /** An instance of a version with no call waiting for it (a prewarm, or a provisioned one). */
  provision(spec: PoolSpec, origin: Exclude<InstanceOrigin, 'demand'>, now: number): Effects {
    const effects = noEffects();
    // Calls that wait come first: a speculative instance must not take memory they need.
    if (spec.memoryMb > this.budgetMb || this.queued.size > 0) return effects;
    const pool = this.poolFor(spec);
    if (pool.draining || this.liveCount(pool) >= spec.maxInstances || !this.reserve(spec.memoryMb, effects)) {
      this.dropPoolIfUnused(spec.key);
      return effects;
    }
    const instance = this.newInstance(pool, origin, now, undefined);
    effects.start.push({ instance: instance.id, waiter: undefined });
    return effects;
  }

  /** An instance finished starting: the call it was started for runs on it first. */
  started(id: number, now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (!instance) return effects;
    this.fire(instance, 'Started');
    if (instance.state !== 'idle') return effects;
    instance.lastUsed = now;
    const starter = instance.starter;
    instance.starter = undefined;
    if (starter !== undefined) {
      this.assign(instance);
      effects.assigned.push({ waiter: starter, instance: id, cold: true });
    }
    this.drain(now, effects);
    return effects;
  }

  /** An instance could not be started: its memory comes back (its starter learns why from the driver). */
  startFailed(id: number, now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (!instance) return effects;
    const wasLive = isLive(instance.state);
    this.fire(instance, 'StartFailed');
    instance.starter = undefined;
    if (wasLive) this.usedMb -= instance.memoryMb;
    if (instance.state === 'stopped') this.forget(instance);
    this.drain(now, effects);
    return effects;
  }

  /** A run on an instance ended. An unhealthy instance (timed out, crashed, died) is replaced. */
  runEnded(id: number, healthy: boolean, now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (!instance) return effects;
    if (instance.inflight > 0) instance.inflight--;
    instance.lastUsed = now;
    if (!isLive(instance.state)) {
      this.fire(instance, instance.inflight === 0 ? 'Released' : 'RunEnded');
      return effects;
    }
    if (!healthy) this.stop(instance, 'Failed', effects);
    else {
      this.fire(instance, instance.inflight === 0 ? 'Released' : 'RunEnded');
      if (instance.state === 'idle' && this.pools.get(instance.pool)?.draining) this.stop(instance, 'Retired', effects);
    }
    this.drain(now, effects);
    return effects;
  }

  /** The keep-alive let an idle instance go. Ignored unless it is idle. */
  expire(id: number, now: number): Effects {
    return this.stopIdle(id, 'Retired', now);
  }

  /**
   * An instance's sandbox died on its own. An idle one goes now; a busy one goes when its runs
   * end (they end with the death, unhealthy); a starting one fails its start.
   */
  died(id: number, now: number): Effects {
    return this.stopIdle(id, 'Failed', now);
  }

  private stopIdle(id: number, event: 'Retired' | 'Failed', now: number): Effects {
    const effects = noEffects();
    const instance = this.instances.get(id);
    if (instance?.state !== 'idle') return effects;
    this.stop(instance, event, effects);
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
      for (const id of pool.instances) {
        const instance = this.instances.get(id) as InstanceRecord;
        if (instance.state === 'idle') this.stop(instance, 'Retired', effects);
      }
    }
    this.drain(now, effects);
    return effects;
  }

  /** Stops everything (shutdown): every live instance, and every waiter is rejected by the driver. */
  stopAll(): Effects {
    const effects = noEffects();
    for (const instance of this.instances.values()) if (isLive(instance.state)) this.stop(instance, 'Failed', effects);
    for (const record of [...this.queued.values()]) this.dequeue(record);
    return effects;
  }

  /** The driver finished destroying an instance's sandbox. */
  stopped(id: number): void {
    const instance = this.instances.get(id);
    if (!instance) return;
    this.fire(instance, 'Stopped');
    this.forget(instance);
  }

  /** Checks the invariants; throws describing the first one broken. For tests. */
  check(): void {
    let live = 0;
    for (const instance of this.instances.values()) {
      if (isLive(instance.state)) live += instance.memoryMb;
      if (instance.state === 'busy' && instance.inflight === 0) throw new Error(`instance ${instance.id} is busy without a run`);
      if (instance.state === 'idle' && instance.inflight !== 0) throw new Error(`instance ${instance.id} is idle with runs`);
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
    if (waiting !== this.queued.size) throw new Error(`pools count ${waiting} waiters, the queues hold ${this.queued.size}`);
  }

  // ---- decisions ----------------------------------------------------------------------------

  /**
   * Serves waiting calls while any can be served: namespaces take turns, the least recently
   * served first (so one that just had an instance yields it to another that waits), and within
   * a namespace calls go first come, first served. A call takes a warm
   * instance of its version with room, or else starts one if its version may have another and
   * memory can be found (evicting the least recently used idle instances). A namespace whose
   * oldest call needing memory cannot get it starts nothing else this turn.
   */
  private drain(now: number, effects: Effects): void {
    for (;;) {
      let progressed = false;
      const rank = (namespace: string) => this.lastServed.get(namespace) ?? -1;
      const turns = [...this.queues.keys()].sort((a, b) => rank(a) - rank(b));
      for (const namespace of turns) {
        const queue = this.queues.get(namespace);
        if (queue && this.serveOne(queue, now, effects)) {
          progressed = true;
          this.servedNamespace(namespace);
        }
      }
      if (!progressed) return;
    }
  }

  private servedNamespace(namespace: string): void {
    this.lastServed.delete(namespace);
    this.lastServed.set(namespace, ++this.serveCount);
    // Bounded: the least recently served are forgotten, which only moves them to the front.
    if (this.lastServed.size > MAX_REMEMBERED_NAMESPACES) {
      for (const forgotten of [...this.lastServed.keys()].slice(0, MAX_REMEMBERED_NAMESPACES / 2))
        this.lastServed.delete(forgotten);
    }
  }

  /** Serves the first call of a namespace's queue that can be served now; false if none can. */
  private serveOne(queue: WaiterRecord[], now: number, effects: Effects): boolean {
    const blockedPools = new Set<string>();
    let memoryBlocked = false;
    for (let i = 0; i < queue.length; i++) {
      const waiter = queue[i] as WaiterRecord;
      if (blockedPools.has(waiter.pool)) continue;
      const pool = this.pools.get(waiter.pool) as PoolState;
      const warm = this.pickInstance(pool);
      if (warm) {
        this.dequeue(waiter);
        this.assign(warm);
        effects.assigned.push({ waiter: waiter.id, instance: warm.id, cold: false });
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
      this.dequeue(waiter);
      const instance = this.newInstance(pool, 'demand', now, waiter.id);
      effects.start.push({ instance: instance.id, waiter: waiter.id });
      return true;
    }
    return false;
  }

  /** A live instance with room for another run: busy ones first (fill them), then the freshest idle one. */
  private pickInstance(pool: PoolState): InstanceRecord | undefined {
    let best: InstanceRecord | undefined;
    for (const id of pool.instances) {
      const instance = this.instances.get(id) as InstanceRecord;
      if ((instance.state !== 'idle' && instance.state !== 'busy') || instance.inflight >= instance.concurrency) continue;
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
      const victims: InstanceRecord[] = [];
      for (const instance of idle) {
        if (free >= memoryMb) break;
        victims.push(instance);
        free += instance.memoryMb;
      }
      if (free < memoryMb) return false;
      for (const victim of victims) this.stop(victim, 'Retired', effects);
    }
    this.usedMb += memoryMb;
    return true;
  }

  // ---- bookkeeping --------------------------------------------------------------------------

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
    for (const id of pool.instances) if (isLive((this.instances.get(id) as InstanceRecord).state)) n++;
    return n;
  }

  private newInstance(pool: PoolState, origin: InstanceOrigin, now: number, starter: number | undefined): InstanceRecord {
    const instance: InstanceRecord = {
      id: this.nextInstanceId++,
      pool: pool.spec.key,
      memoryMb: pool.spec.memoryMb,
      concurrency: pool.spec.concurrency,
      origin,
      state: 'starting',
      inflight: 0,
      lastUsed: now,
      starter,
    };
    this.instances.set(instance.id, instance);
    pool.instances.add(instance.id);
    return instance;
  }

  private assign(instance: InstanceRecord): void {
    this.fire(instance, 'Assigned');
    instance.inflight++;
  }

  /** Out of the memory account at once: the sandbox is being destroyed. */
  private stop(instance: InstanceRecord, event: 'Retired' | 'Failed', effects: Effects): void {
    const wasLive = isLive(instance.state);
    this.fire(instance, event);
    if (!wasLive) return;
    this.usedMb -= instance.memoryMb;
    effects.stop.push({ instance: instance.id, event });
  }

  private fire(instance: InstanceRecord, event: InstanceEvent): void {
    instance.state = transition(instance.state, event);
  }

  private forget(instance: InstanceRecord): void {
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
    let queue = this.queues.get(waiter.namespace);
    if (!queue) {
      queue = [];
      this.queues.set(waiter.namespace, queue);
    }
    queue.push(waiter);
    this.queued.set(waiter.id, waiter);
    (this.pools.get(waiter.pool) as PoolState).waiting++;
  }

  private dequeue(waiter: WaiterRecord): void {
    if (!this.queued.delete(waiter.id)) return;
    const pool = this.pools.get(waiter.pool);
    if (pool) pool.waiting--;
    const queue = this.queues.get(waiter.namespace);
    if (!queue) return;
    const index = queue.indexOf(waiter);
    if (index >= 0) queue.splice(index, 1);
    if (queue.length === 0) this.queues.delete(waiter.namespace);
  }
}
