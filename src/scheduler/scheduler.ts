import type { Isolation } from '../core/kinds.js';
import type { ActionVersion } from '../core/types.js';
import { type Backend, functionCodeOf, type InitOutcome, type LogSink, type Sandbox, versionKey } from '../sandbox/backend.js';
import { type FunctionSettings, functionSettings } from './function-settings.js';
import { Instance, type InstanceState } from './instance.js';
import type { FunctionPolicy, KeepAlivePolicy } from './policy.js';
import { StemCells, type StemCellTarget } from './stem-cells.js';

export interface SchedulerOptions {
  backends: ReadonlyMap<Isolation, Backend>;
  /** Sum of the memory limits of live instances may not exceed this (OpenWhisk's user memory). */
  memoryBudgetMb: number;
  /** When idle instances go, and whether they come back before the next call: the server default. */
  policy: KeepAlivePolicy;
  /** How long a request may wait for memory or a free instance before it fails. */
  queueTimeoutMs: number;
  stemCells?: readonly StemCellTarget[];
  onBackgroundError?: (message: string, error: unknown) => void;
}

/** An instance handed to one invocation; give it back with `release`. */
export interface Lease {
  readonly instance: Instance;
  readonly sandbox: Sandbox;
  readonly cold: boolean;
  /** A cold start on a blank sandbox made ahead of time (a stem cell). */
  readonly prewarmed: boolean;
  /** The sandbox was restored from a snapshot of the function taken after its initialisation. */
  readonly restored: boolean;
  /** Warm on an instance the keep-alive policy started before this call, or a provisioned one. */
  readonly prewarmHit: boolean;
  /** ms spent creating the sandbox and loading the function; 0 when warm. */
  readonly initMs: number;
  /** ms from the request's arrival until its instance was chosen or began to start. */
  readonly waitMs: number;
  /** ms since the epoch when initialisation began (cold) or the instance was assigned (warm). */
  readonly startedAt: number;
}

/** The function could not be loaded into a new instance. */
export class InitFailure extends Error {
  constructor(
    readonly outcome: Extract<InitOutcome, { ok: false }>,
    readonly initMs: number,
    readonly waitMs: number,
    readonly startedAt: number,
  ) {
    super(outcome.error);
  }
}

/** No capacity was found in time, or the function can never fit. */
export class CapacityError extends Error {}

/** The function's queue is full: the caller should come back later (HTTP 429). */
export class QueueFullError extends CapacityError {}

interface Waiter {
  pool: Pool;
  arrived: number;
  onLog: LogSink;
  settled: boolean;
  /** Waits for memory (not only for one of the function's instances to come free). */
  forMemory: boolean;
  timer: NodeJS.Timeout;
  resolve: (lease: Promise<Lease> | Lease) => void;
  reject: (error: Error) => void;
}

class Pool {
  readonly instances = new Set<Instance>();
  waiters: Waiter[] = [];
  draining = false;

  constructor(
    readonly key: string,
    readonly action: ActionVersion,
    readonly fn: FunctionState,
  ) {}

  /** A running instance with room for one more invocation: fill busy ones first, then the freshest idle one. */
  pickInstance(): Instance | undefined {
    let best: Instance | undefined;
    for (const instance of this.instances) {
      if (!instance.hasCapacity) continue;
      if (!best) best = instance;
      else if (instance.state === 'busy' && best.state !== 'busy') best = instance;
      else if (instance.state === best.state && instance.lastUsed > best.lastUsed) best = instance;
    }
    return best;
  }

  /** Instances alive or on their way: what counts against maxInstances and minInstances. */
  get live(): number {
    let n = 0;
    for (const instance of this.instances) if (instance.state !== 'stopping' && instance.state !== 'stopped') n++;
    return n;
  }

  get queued(): number {
    return this.waiters.filter((w) => !w.settled).length;
  }
}

/** What the scheduler remembers of a function (all its versions): its policy's state and load. */
class FunctionState {
  /** Invocations accepted and not yet finished. */
  inflight = 0;
  lastEnd: number | undefined;
  prewarmTimer: NodeJS.Timeout | undefined;
  latest: ActionVersion | undefined;

  constructor(
    readonly key: string,
    readonly policyName: string,
    readonly policy: FunctionPolicy,
    public settings: FunctionSettings,
  ) {}
}

export interface FunctionStats {
  namespace: string;
  action: string;
  instances: { state: InstanceState; count: number }[];
  queued: number;
}

export interface SchedulerStats {
  memoryBudgetMb: number;
  memoryUsedMb: number;
  queued: number;
  stemCells: number;
  instances: { isolation: Isolation; state: InstanceState; count: number }[];
  functions: FunctionStats[];
}

export function poolKey(action: Pick<ActionVersion, 'namespace' | 'name' | 'version' | 'revision'>): string {
  return versionKey(action);
}

function functionKey(action: Pick<ActionVersion, 'namespace' | 'name'>): string {
  return `${action.namespace}/${action.name}`;
}

/**
 * Places invocations on instances: reuses a warm one, starts one when memory allows, evicts idle
 * instances to make room, and queues the rest (fairly across namespaces). After each burst of
 * work the function's keep-alive policy decides how long its idle instances stay, or whether to
 * unload them and start one again just before the next call is expected. It knows instances and
 * their states, never how a backend makes a sandbox.
 */
export class Scheduler {
  private readonly pools = new Map<string, Pool>();
  private readonly functions = new Map<string, FunctionState>();
  private readonly settingsCache = new WeakMap<ActionVersion, FunctionSettings>();
  /** Invocations waiting for memory, per namespace, served round robin. */
  private readonly memoryWaiters = new Map<string, Waiter[]>();
  private memoryUsedMb = 0;
  private readonly stemCells: StemCells;
  private closed = false;
  /** Sandboxes being made or destroyed: shutting down waits for them, so none outlives the server. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly options: SchedulerOptions) {
    this.stemCells = new StemCells(options.backends, options.stemCells ?? [], (isolation, error) =>
      options.onBackgroundError?.(`prewarming a ${isolation} sandbox failed`, error),
    );
    this.stemCells.start();
  }

  /** Throws QueueFullError if another invocation of this function would exceed its queue. */
  admit(action: ActionVersion): void {
    const fn = this.functionFor(action);
    const pool = this.pools.get(poolKey(action));
    if (pool && pool.queued >= fn.settings.maxQueued) {
      throw new QueueFullError(
        `Too many invocations of ${functionKey(action)} are waiting (at most ${fn.settings.maxQueued}); try again later.`,
      );
    }
  }

  /** Finds or starts an instance for this version. Throws InitFailure, CapacityError or QueueFullError. */
  async acquire(action: ActionVersion, onLog: LogSink): Promise<Lease> {
    const arrived = Date.now();
    if (this.closed) throw new CapacityError('The platform is shutting down.');
    const fn = this.functionFor(action);
    fn.policy.onInvocation(arrived, fn.inflight === 0 && fn.lastEnd !== undefined ? arrived - fn.lastEnd : undefined);
    clearTimeout(fn.prewarmTimer);
    fn.inflight++;
    try {
      return await this.place(this.poolFor(action, fn), arrived, onLog);
    } catch (error) {
      this.finish(fn);
      throw error;
    }
  }

  private place(pool: Pool, arrived: number, onLog: LogSink): Promise<Lease> {
    const warm = pool.pickInstance();
    if (warm) return Promise.resolve(this.assign(warm, arrived));
    const { settings } = pool.fn;
    const memory = pool.action.limits.memory;
    if (memory > this.options.memoryBudgetMb) {
      this.dropPoolIfEmpty(pool);
      return Promise.reject(
        new CapacityError(`The action needs ${memory} MB but this host's memory budget is ${this.options.memoryBudgetMb} MB.`),
      );
    }
    const atMax = pool.live >= settings.maxInstances;
    if (!atMax && this.waitingForMemory() === 0 && this.reserve(memory)) return this.startInstance(pool, arrived, onLog);
    if (pool.queued >= settings.maxQueued) {
      this.dropPoolIfEmpty(pool);
      return Promise.reject(
        new QueueFullError(
          `Too many invocations of ${functionKey(pool.action)} are waiting (at most ${settings.maxQueued}); try again later.`,
        ),
      );
    }
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        pool,
        arrived,
        onLog,
        settled: false,
        // At its maximum, the function waits for one of its own instances, not for memory.
        forMemory: !atMax,
        resolve,
        reject,
        timer: setTimeout(() => {
          waiter.settled = true;
          this.forgetWaiter(waiter);
          reject(new CapacityError(`No capacity to run the action within ${this.options.queueTimeoutMs} ms.`));
        }, this.options.queueTimeoutMs),
      };
      pool.waiters.push(waiter);
      if (waiter.forMemory) {
        const namespace = pool.action.namespace;
        const queue = this.memoryWaiters.get(namespace) ?? [];
        queue.push(waiter);
        this.memoryWaiters.set(namespace, queue);
      }
    });
  }

  /** Gives an instance back after a run. An unhealthy one (timed out, crashed) is replaced. */
  release(lease: Lease, healthy: boolean): void {
    const instance = lease.instance;
    instance.inflight--;
    instance.lastUsed = Date.now();
    const pool = this.pools.get(instance.poolKey);
    if (!healthy || !instance.sandbox?.alive) {
      // With concurrency > 1, another run's end may already have stopped the instance.
      if (instance.state === 'idle' || instance.state === 'busy') this.stop(instance, 'Failed');
    } else {
      instance.fire(instance.inflight === 0 ? 'Released' : 'RunEnded');
      const namespace = pool?.action.namespace ?? '';
      if (this.othersWaitForMemory(namespace)) {
        // Fair share: this namespace just had a turn, so it goes to the back of the round and the
        // freed capacity is offered in turn (another namespace may evict this instance).
        const queue = this.memoryWaiters.get(namespace);
        if (queue) {
          this.memoryWaiters.delete(namespace);
          this.memoryWaiters.set(namespace, queue);
        }
      } else {
        while (pool && pool.waiters.length > 0 && instance.hasCapacity) {
          const waiter = pool.waiters.shift() as Waiter;
          if (waiter.settled) continue;
          this.settle(waiter, this.assign(instance, waiter.arrived));
        }
      }
      if (instance.state === 'idle' && pool?.draining) this.stop(instance, 'Retired');
    }
    if (pool) this.finish(pool.fn);
    // Invocations of other functions waiting for memory may evict an instance that is now idle.
    this.wakeMemoryWaiters();
  }

  /** Drains every version of an action except the revision `keep`: idle instances go now, busy ones when done. */
  retireVersions(namespace: string, name: string, keep?: string): void {
    for (const pool of this.pools.values()) {
      const a = pool.action;
      if (a.namespace !== namespace || a.name !== name || a.revision === keep) continue;
      pool.draining = true;
      for (const instance of [...pool.instances]) if (instance.state === 'idle') this.stop(instance, 'Retired');
      this.dropPoolIfEmpty(pool);
    }
    if (keep === undefined) {
      const fn = this.functions.get(`${namespace}/${name}`);
      if (fn) clearTimeout(fn.prewarmTimer);
      this.functions.delete(`${namespace}/${name}`);
    }
  }

  /** Starts instances until the version has its `minInstances` (provisioned concurrency). */
  provision(action: ActionVersion): void {
    if (this.closed) return;
    const fn = this.functionFor(action);
    const pool = this.poolFor(action, fn);
    for (let missing = fn.settings.minInstances - pool.live; missing > 0; missing--) {
      if (!this.reserve(action.limits.memory)) break;
      void this.launchInBackground(pool, 'provisioned', undefined);
    }
  }

  stats(): SchedulerStats {
    const counts = new Map<string, { isolation: Isolation; state: InstanceState; count: number }>();
    const functions = new Map<string, FunctionStats>();
    let queued = 0;
    for (const pool of this.pools.values()) {
      const fnKey = functionKey(pool.action);
      const fnStats = functions.get(fnKey) ?? {
        namespace: pool.action.namespace,
        action: pool.action.name,
        instances: [],
        queued: 0,
      };
      functions.set(fnKey, fnStats);
      fnStats.queued += pool.queued;
      queued += pool.queued;
      for (const instance of pool.instances) {
        const key = `${instance.isolation}:${instance.state}`;
        const entry = counts.get(key) ?? { isolation: instance.isolation, state: instance.state, count: 0 };
        entry.count++;
        counts.set(key, entry);
        const own = fnStats.instances.find((i) => i.state === instance.state);
        if (own) own.count++;
        else fnStats.instances.push({ state: instance.state, count: 1 });
      }
    }
    return {
      memoryBudgetMb: this.options.memoryBudgetMb,
      memoryUsedMb: this.memoryUsedMb,
      queued,
      stemCells: this.stemCells.size,
      instances: [...counts.values()],
      functions: [...functions.values()],
    };
  }

  /** Instances of one version, for tests and the dashboard. */
  instancesOf(action: Pick<ActionVersion, 'namespace' | 'name' | 'version' | 'revision'>): readonly Instance[] {
    return [...(this.pools.get(poolKey(action))?.instances ?? [])];
  }

  /** The keep-alive policy in force for a function, for activation records and metrics. */
  policyOf(action: ActionVersion): string {
    return this.functionFor(action).policyName;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const queue of this.memoryWaiters.values()) {
      for (const waiter of queue) {
        if (!waiter.settled) {
          waiter.settled = true;
          clearTimeout(waiter.timer);
          waiter.reject(new CapacityError('The platform is shutting down.'));
        }
      }
    }
    this.memoryWaiters.clear();
    for (const fn of this.functions.values()) clearTimeout(fn.prewarmTimer);
    const sandboxes: Sandbox[] = [];
    for (const pool of this.pools.values()) {
      for (const waiter of pool.waiters) {
        if (!waiter.settled) {
          waiter.settled = true;
          clearTimeout(waiter.timer);
          waiter.reject(new CapacityError('The platform is shutting down.'));
        }
      }
      for (const instance of pool.instances) {
        clearTimeout(instance.keepAliveTimer);
        if (instance.sandbox) sandboxes.push(instance.sandbox);
      }
    }
    this.pools.clear();
    await Promise.all([...sandboxes.map((s) => s.destroy()), this.stemCells.close()]);
    // Launches finishing now stop their instance at once (see launch), which adds a destroy.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inFlight.add(work);
    void work.then(
      () => this.inFlight.delete(work),
      () => this.inFlight.delete(work),
    );
    return work;
  }

  private functionFor(action: ActionVersion): FunctionState {
    const key = functionKey(action);
    let fn = this.functions.get(key);
    const settings = this.settingsOf(action);
    const policy = settings.policy ?? this.options.policy;
    // A new policy for the function starts with an empty memory of it.
    if (!fn || fn.policyName !== policy.name) {
      fn = new FunctionState(key, policy.name, policy.forFunction(), settings);
      this.functions.set(key, fn);
    }
    fn.settings = settings;
    if (!fn.latest || fn.latest.revision !== action.revision) fn.latest = action;
    return fn;
  }

  /** A version's settings never change, and reading them is on every invocation's path. */
  private settingsOf(action: ActionVersion): FunctionSettings {
    let settings = this.settingsCache.get(action);
    if (!settings) {
      settings = functionSettings(action);
      this.settingsCache.set(action, settings);
    }
    return settings;
  }

  private poolFor(action: ActionVersion, fn: FunctionState): Pool {
    const key = poolKey(action);
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool(key, action, fn);
      this.pools.set(key, pool);
    }
    return pool;
  }

  /** One invocation of the function is done; when it was the last, ask the policy what comes next. */
  private finish(fn: FunctionState): void {
    fn.inflight--;
    if (fn.inflight > 0 || this.closed) return;
    const now = Date.now();
    fn.lastEnd = now;
    const decision = fn.policy.onIdle(now);
    const idle = [...this.pools.values()]
      .filter((p) => p.fn === fn)
      .flatMap((p) => [...p.instances])
      .filter((i) => i.state === 'idle');
    const provisioned = fn.settings.minInstances;
    if (decision.prewarmAt !== undefined) {
      // Unload now (keeping provisioned instances) and load again just before the next call.
      for (const instance of idle.slice(provisioned)) this.stop(instance, 'Retired');
      clearTimeout(fn.prewarmTimer);
      const keepUntil = decision.keepUntil;
      fn.prewarmTimer = setTimeout(() => this.prewarm(fn, keepUntil), Math.max(0, decision.prewarmAt - now));
      fn.prewarmTimer.unref();
      return;
    }
    for (const instance of idle) this.scheduleExpiry(instance, decision.keepUntil);
  }

  /** The policy's prewarm: start an instance of the latest version before the next call is expected. */
  private prewarm(fn: FunctionState, keepUntil: number): void {
    if (this.closed || !fn.latest || fn.inflight > 0 || this.functions.get(fn.key) !== fn) return;
    // The pool may have been dropped when its last instance was unloaded: find or make it anew.
    const pool = this.poolFor(fn.latest, fn);
    if (pool.draining || pool.pickInstance()) return;
    if (!this.reserve(pool.action.limits.memory)) return;
    void this.launchInBackground(pool, 'prewarm', keepUntil);
  }

  private async launchInBackground(pool: Pool, origin: 'prewarm' | 'provisioned', keepUntil: number | undefined): Promise<void> {
    try {
      const { instance } = await this.launch(pool, () => {}, origin);
      if (this.closed) {
        this.stop(instance, 'Failed');
        return;
      }
      // The instance is idle: serve anyone who queued for the function meanwhile.
      while (pool.waiters.length > 0 && instance.hasCapacity) {
        const waiter = pool.waiters.shift() as Waiter;
        if (!waiter.settled) this.settle(waiter, this.assign(instance, waiter.arrived));
      }
      if (instance.state === 'idle' && keepUntil !== undefined) this.scheduleExpiry(instance, keepUntil);
    } catch (error) {
      if (!this.closed) this.options.onBackgroundError?.(`starting a ${origin} instance of ${pool.key} failed`, error);
    }
  }

  private assign(instance: Instance, arrived: number, cold?: { initMs: number; startedAt: number; restored: boolean }): Lease {
    clearTimeout(instance.keepAliveTimer);
    instance.fire('Assigned');
    instance.inflight++;
    const prewarmHit = cold === undefined && instance.origin !== 'demand' && !instance.used;
    instance.used = true;
    const now = Date.now();
    return {
      instance,
      sandbox: instance.sandbox as Sandbox,
      cold: cold !== undefined,
      prewarmed: cold !== undefined && instance.prewarmed,
      restored: cold?.restored ?? false,
      prewarmHit,
      initMs: cold?.initMs ?? 0,
      waitMs: cold ? cold.startedAt - arrived : now - arrived,
      startedAt: cold?.startedAt ?? now,
    };
  }

  private async startInstance(pool: Pool, arrived: number, onLog: LogSink): Promise<Lease> {
    const started = await this.launch(pool, onLog, 'demand', arrived);
    return this.assign(started.instance, arrived, started);
  }

  /**
   * Makes a new instance of the pool's version, with memory already reserved for it: a snapshot
   * restore when the function has one, else a blank sandbox (ahead-made or new) that loads the
   * function. The instance ends idle.
   */
  private launch(
    pool: Pool,
    onLog: LogSink,
    origin: Instance['origin'],
    arrived = Date.now(),
  ): Promise<{ instance: Instance; initMs: number; startedAt: number; restored: boolean }> {
    return this.track(this.launchUntracked(pool, onLog, origin, arrived));
  }

  private async launchUntracked(
    pool: Pool,
    onLog: LogSink,
    origin: Instance['origin'],
    arrived: number,
  ): Promise<{ instance: Instance; initMs: number; startedAt: number; restored: boolean }> {
    const action = pool.action;
    const instance = new Instance(pool.key, action.isolation, action.limits.memory, action.limits.concurrency);
    instance.origin = origin;
    pool.instances.add(instance);
    const startedAt = Date.now();
    const fail = (outcome: Extract<InitOutcome, { ok: false }>) => {
      instance.fire('StartFailed');
      this.forgetInstance(instance);
      return new InitFailure(outcome, Date.now() - startedAt, startedAt - arrived, startedAt);
    };
    const backend = this.options.backends.get(action.isolation);
    if (!backend)
      throw fail({ ok: false, kind: 'crash', error: `The ${action.isolation} backend is not enabled on this server.` });
    const code = functionCodeOf(action);
    const spec = { memoryMb: action.limits.memory };
    let sandbox: Sandbox | undefined;
    // A snapshot of this function, when it asked for one and the backend has it, skips both the
    // sandbox's boot and the function's initialisation.
    if (code.snapshot && backend.restore) sandbox = await backend.restore(code, spec).catch(() => undefined);
    const restored = sandbox !== undefined;
    if (!sandbox) {
      try {
        sandbox = this.stemCells.take(action.isolation, action.limits.memory);
        instance.prewarmed = sandbox !== undefined;
        sandbox ??= await backend.create(spec);
      } catch (error) {
        throw fail({ ok: false, kind: 'crash', error: `The ${action.isolation} sandbox did not start: ${errorText(error)}` });
      }
      const outcome = await sandbox.init(code, startedAt + action.limits.timeout, onLog);
      if (!outcome.ok) {
        await sandbox.destroy();
        throw fail(outcome);
      }
      if (code.snapshot) backend.snapshot?.(code, spec);
    }
    instance.sandbox = sandbox;
    sandbox.onDeath(() => {
      if (instance.state === 'idle') this.stop(instance, 'Failed');
    });
    instance.fire('Started');
    if (this.closed) {
      // Made while the server was shutting down: it goes at once, not with the process.
      this.stop(instance, 'Failed');
      throw new CapacityError('The platform is shutting down.');
    }
    return { instance, initMs: Date.now() - startedAt, startedAt, restored };
  }

  private scheduleExpiry(instance: Instance, keepUntil: number): void {
    clearTimeout(instance.keepAliveTimer);
    instance.keepAliveTimer = setTimeout(
      () => {
        if (instance.state !== 'idle') return;
        const pool = this.pools.get(instance.poolKey);
        // Provisioned instances of the latest version are never let go.
        if (pool && pool.fn.latest?.revision === pool.action.revision && pool.live <= pool.fn.settings.minInstances) return;
        this.stop(instance, 'Retired');
      },
      Math.max(0, keepUntil - Date.now()),
    );
    instance.keepAliveTimer.unref();
  }

  private stop(instance: Instance, event: 'Retired' | 'Failed'): void {
    clearTimeout(instance.keepAliveTimer);
    instance.fire(event);
    const sandbox = instance.sandbox;
    const pool = this.pools.get(instance.poolKey);
    this.forgetInstance(instance);
    void this.track(
      (async () => {
        try {
          await sandbox?.destroy();
        } catch (error) {
          this.options.onBackgroundError?.(`stopping instance ${instance.id} failed`, error);
        }
        instance.fire('Stopped');
      })(),
    );
    // A provisioned function that lost an instance gets it back.
    if (
      pool &&
      !pool.draining &&
      pool.fn.latest?.revision === pool.action.revision &&
      pool.live < pool.fn.settings.minInstances
    ) {
      this.provision(pool.action);
    }
  }

  /** Removes an instance from its pool and returns its memory, then lets waiters use it. */
  private forgetInstance(instance: Instance): void {
    const pool = this.pools.get(instance.poolKey);
    pool?.instances.delete(instance);
    this.memoryUsedMb -= instance.memoryMb;
    if (pool) this.dropPoolIfEmpty(pool);
    this.wakeMemoryWaiters();
  }

  private dropPoolIfEmpty(pool: Pool): void {
    if (pool.instances.size === 0 && pool.waiters.every((w) => w.settled)) this.pools.delete(pool.key);
  }

  /** Takes memory for a new instance, evicting the least recently used idle instances if needed. */
  private reserve(memoryMb: number): boolean {
    const budget = this.options.memoryBudgetMb;
    if (this.memoryUsedMb + memoryMb > budget) {
      const idle = [...this.pools.values()]
        .flatMap((p) => [...p.instances])
        .filter((i) => i.state === 'idle')
        .sort((a, b) => a.lastUsed - b.lastUsed);
      let freeable = budget - this.memoryUsedMb;
      const victims: Instance[] = [];
      for (const instance of idle) {
        if (freeable >= memoryMb) break;
        victims.push(instance);
        freeable += instance.memoryMb;
      }
      if (freeable < memoryMb) return false;
      for (const victim of victims) this.stop(victim, 'Retired');
    }
    this.memoryUsedMb += memoryMb;
    return true;
  }

  private othersWaitForMemory(namespace: string): boolean {
    for (const [other, queue] of this.memoryWaiters) if (other !== namespace && queue.some((w) => !w.settled)) return true;
    return false;
  }

  private waitingForMemory(): number {
    let n = 0;
    for (const queue of this.memoryWaiters.values()) for (const w of queue) if (!w.settled) n++;
    return n;
  }

  /**
   * Serves invocations waiting for memory, one namespace at a time in turn, so that a namespace
   * with a flood of invocations cannot keep another's from ever starting.
   */
  private wakeMemoryWaiters(): void {
    for (;;) {
      let progressed = false;
      for (const [namespace, queue] of [...this.memoryWaiters]) {
        while (queue.length > 0 && (queue[0] as Waiter).settled) queue.shift();
        const waiter = queue[0];
        if (!waiter) {
          this.memoryWaiters.delete(namespace);
          continue;
        }
        const warm = waiter.pool.pickInstance();
        if (warm) {
          queue.shift();
          this.settle(waiter, this.assign(warm, waiter.arrived));
          progressed = true;
          continue;
        }
        if (waiter.pool.live >= waiter.pool.fn.settings.maxInstances || !this.reserve(waiter.pool.action.limits.memory)) continue;
        queue.shift();
        this.settle(waiter, this.startInstance(waiter.pool, waiter.arrived, waiter.onLog));
        progressed = true;
        // Rotate: this namespace goes to the back of the round.
        this.memoryWaiters.delete(namespace);
        if (queue.length > 0) this.memoryWaiters.set(namespace, queue);
      }
      if (!progressed) return;
    }
  }

  private settle(waiter: Waiter, lease: Lease | Promise<Lease>): void {
    waiter.settled = true;
    clearTimeout(waiter.timer);
    this.forgetWaiter(waiter);
    waiter.resolve(lease);
  }

  private forgetWaiter(waiter: Waiter): void {
    waiter.pool.waiters = waiter.pool.waiters.filter((w) => w !== waiter);
    const queue = this.memoryWaiters.get(waiter.pool.action.namespace);
    if (queue) {
      const remaining = queue.filter((w) => w !== waiter);
      if (remaining.length > 0) this.memoryWaiters.set(waiter.pool.action.namespace, remaining);
      else this.memoryWaiters.delete(waiter.pool.action.namespace);
    }
    this.dropPoolIfEmpty(waiter.pool);
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
