import type { Isolation } from '../core/kinds.js';
import type { ActionVersion } from '../core/types.js';
import { type Backend, type LogSink, type Sandbox, versionKey } from '../sandbox/backend.js';
import { type FunctionSettings, storedFunctionSettings } from './function-settings.js';
import type { InstanceState } from './instance.js';
import { InitFailure, type Launched, Launcher } from './launcher.js';
import { type Effects, type InstanceRecord, Placement, type PoolSpec } from './placement.js';
import type { FunctionPolicy, KeepAlivePolicy } from './policy.js';
import { StemCells, type StemCellTarget } from './stem-cells.js';

export { InitFailure } from './launcher.js';

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

/** An instance handed to one invocation; give it back with `release`, exactly once. */
export interface Lease {
  readonly instance: Readonly<InstanceRecord>;
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

/** No capacity was found in time, or the function can never fit. */
export class CapacityError extends Error {}

/** The function needs more memory than this host's whole budget: no call of it can ever run here. */
export class TooBigError extends CapacityError {}

/** The function's queue is full: the caller should come back later (HTTP 429). */
export class QueueFullError extends CapacityError {}

/** A call waiting for its instance. */
interface Waiter {
  readonly id: number;
  readonly action: ActionVersion;
  readonly fn: FunctionState;
  readonly onLog: LogSink;
  readonly arrived: number;
  timer: NodeJS.Timeout | undefined;
  resolve: (lease: Lease) => void;
  reject: (error: Error) => void;
}

/** What the driver keeps of an instance beside placement's record: its sandbox and timers. */
interface InstanceRuntime {
  readonly action: ActionVersion;
  readonly fn: FunctionState;
  sandbox: Sandbox | undefined;
  launched: Launched | undefined;
  keepAliveTimer: NodeJS.Timeout | undefined;
  /** For a prewarmed instance: when the policy lets it go if unused. */
  keepUntil: number | undefined;
  /** Has served a call. */
  served: boolean;
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

function functionKey(action: Pick<ActionVersion, 'namespace' | 'name'>): string {
  return `${action.namespace}/${action.name}`;
}

/**
 * Places invocations on instances and carries the decisions out: placement (pure, in
 * placement.ts) decides which instance takes a call, what starts and what stops; this driver
 * launches and destroys sandboxes, keeps the queue timeouts, and after each burst of work asks
 * the function's keep-alive policy how long its idle instances stay, or whether to unload them
 * and start one again just before the next call is expected. It knows instances and their
 * states, never how a backend makes a sandbox.
 */
export class Scheduler {
  private readonly placement: Placement;
  private readonly functions = new Map<string, FunctionState>();
  private readonly settingsCache = new WeakMap<ActionVersion, FunctionSettings>();
  private readonly waiters = new Map<number, Waiter>();
  private readonly runtimes = new Map<number, InstanceRuntime>();
  /** Leases not yet given back, with the function each counts against. */
  private readonly outstanding = new WeakMap<Lease, FunctionState>();
  private readonly stemCells: StemCells;
  private readonly launcher: Launcher;
  private nextWaiterId = 1;
  private closed = false;
  /** Sandboxes being made or destroyed: shutting down waits for them, so none outlives the server. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly options: SchedulerOptions) {
    this.placement = new Placement(options.memoryBudgetMb);
    const warn = (message: string, error: unknown) => options.onBackgroundError?.(message, error);
    this.stemCells = new StemCells(options.backends, options.stemCells ?? [], (isolation, error) =>
      warn(`prewarming a ${isolation} sandbox failed`, error),
    );
    this.launcher = new Launcher(options.backends, this.stemCells, warn);
    this.stemCells.start();
  }

  /**
   * Throws before anything is recorded when a call of this version cannot be taken now: the
   * function needs more memory than the whole budget (TooBigError), or its queue is full.
   */
  admit(action: ActionVersion): void {
    this.assertFits(action);
    const fn = this.functionFor(action);
    if (this.placement.waitingCount(versionKey(action)) >= fn.settings.maxQueued) throw queueFull(action, fn.settings.maxQueued);
  }

  /** Throws TooBigError when the function needs more memory than the whole budget: no call of it can ever run here. */
  assertFits(action: ActionVersion): void {
    if (action.limits.memory > this.options.memoryBudgetMb) throw tooBig(action, this.options.memoryBudgetMb);
  }

  /** Finds or starts an instance for this version. Throws InitFailure or CapacityError (and its kinds). */
  acquire(action: ActionVersion, onLog: LogSink): Promise<Lease> {
    const arrived = Date.now();
    if (this.closed) return Promise.reject(new CapacityError('The platform is shutting down.'));
    const fn = this.functionFor(action);
    fn.policy.onInvocation(arrived, fn.inflight === 0 && fn.lastEnd !== undefined ? arrived - fn.lastEnd : undefined);
    clearTimeout(fn.prewarmTimer);
    fn.inflight++;
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        id: this.nextWaiterId++,
        action,
        fn,
        onLog,
        arrived,
        timer: undefined,
        resolve,
        reject: (error) => {
          this.finish(fn);
          reject(error);
        },
      };
      this.waiters.set(waiter.id, waiter);
      this.apply(this.placement.arrive(this.specOf(action, fn), waiter.id, arrived));
      if (this.placement.isWaiting(waiter.id)) {
        waiter.timer = setTimeout(() => {
          if (!this.placement.isWaiting(waiter.id)) return;
          this.placement.leave(waiter.id);
          this.takeWaiter(waiter.id)?.reject(
            new CapacityError(`No capacity to run the action within ${this.options.queueTimeoutMs} ms.`),
          );
        }, this.options.queueTimeoutMs);
      }
    });
  }

  /** Gives an instance back after a run. An unhealthy one (timed out, crashed) is replaced. Idempotent. */
  release(lease: Lease, healthy: boolean): void {
    const fn = this.outstanding.get(lease);
    if (!fn) return;
    this.outstanding.delete(lease);
    this.apply(this.placement.runEnded(lease.instance.id, healthy && lease.sandbox.alive, Date.now()));
    this.finish(fn);
  }

  /** Drains every version of an action except the revision `keep`: idle instances go now, busy ones when done. */
  retireVersions(namespace: string, name: string, keep?: string): void {
    const keys = new Set<string>();
    for (const runtime of this.runtimes.values()) {
      const a = runtime.action;
      if (a.namespace === namespace && a.name === name && a.revision !== keep) keys.add(versionKey(a));
    }
    for (const waiter of this.waiters.values()) {
      const a = waiter.action;
      if (a.namespace === namespace && a.name === name && a.revision !== keep) keys.add(versionKey(a));
    }
    this.apply(this.placement.retire(keys, Date.now()));
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
    const key = versionKey(action);
    for (let missing = fn.settings.minInstances - this.placement.instancesOf(key).length; missing > 0; missing--) {
      const effects = this.placement.provision(this.specOf(action, fn), 'provisioned', Date.now());
      if (effects.start.length === 0) break;
      this.apply(effects, { action, fn });
    }
  }

  stats(): SchedulerStats {
    const counts = new Map<string, { isolation: Isolation; state: InstanceState; count: number }>();
    const functions = new Map<string, FunctionStats>();
    const statsOf = (action: ActionVersion) => {
      const key = functionKey(action);
      let entry = functions.get(key);
      if (!entry) {
        entry = { namespace: action.namespace, action: action.name, instances: [], queued: 0 };
        functions.set(key, entry);
      }
      return entry;
    };
    for (const instance of this.placement.allInstances()) {
      const runtime = this.runtimes.get(instance.id);
      if (!runtime || instance.state === 'stopped') continue;
      const isolation = runtime.action.isolation;
      const key = `${isolation}:${instance.state}`;
      const entry = counts.get(key) ?? { isolation, state: instance.state, count: 0 };
      entry.count++;
      counts.set(key, entry);
      const own = statsOf(runtime.action);
      const byState = own.instances.find((i) => i.state === instance.state);
      if (byState) byState.count++;
      else own.instances.push({ state: instance.state, count: 1 });
    }
    for (const waiter of this.waiters.values()) if (this.placement.isWaiting(waiter.id)) statsOf(waiter.action).queued++;
    return {
      memoryBudgetMb: this.options.memoryBudgetMb,
      memoryUsedMb: this.placement.memoryUsedMb,
      queued: this.placement.waitingCount(),
      stemCells: this.stemCells.size,
      instances: [...counts.values()],
      functions: [...functions.values()],
    };
  }

  /** Live instances of one version, for tests and the dashboard. */
  instancesOf(action: Pick<ActionVersion, 'namespace' | 'name' | 'version' | 'revision'>): readonly Readonly<InstanceRecord>[] {
    return this.placement.instancesOf(versionKey(action));
  }

  /** The keep-alive policy in force for a function, for activation records and metrics. */
  policyOf(action: ActionVersion): string {
    return this.functionFor(action).policyName;
  }

  /** Checks placement's invariants (memory account, states); throws on the first broken. For tests. */
  checkInvariants(): void {
    this.placement.check();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const fn of this.functions.values()) clearTimeout(fn.prewarmTimer);
    const waiting = [...this.waiters.values()];
    this.waiters.clear();
    this.apply(this.placement.stopAll());
    for (const waiter of waiting) {
      clearTimeout(waiter.timer);
      waiter.reject(new CapacityError('The platform is shutting down.'));
    }
    await this.stemCells.close();
    // Launches finishing now stop their instance at once (see launch), which adds a destroy.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  // ---- carrying out placement's decisions ----------------------------------------------------

  /**
   * Carries out effects. `speculative` names the version of instances started without a waiter
   * (prewarm, provision), which placement's effects do not carry.
   */
  private apply(effects: Effects, speculative?: { action: ActionVersion; fn: FunctionState; keepUntil?: number }): void {
    for (const { waiter: id, reason } of effects.rejected) {
      const waiter = this.takeWaiter(id);
      waiter?.reject(
        reason === 'too-big'
          ? tooBig(waiter.action, this.options.memoryBudgetMb)
          : queueFull(waiter.action, waiter.fn.settings.maxQueued),
      );
    }
    for (const { instance } of effects.stop) this.stopInstance(instance);
    for (const { instance, waiter: waiterId } of effects.start) {
      const waiter = waiterId === undefined ? undefined : this.waiters.get(waiterId);
      if (waiter) clearTimeout(waiter.timer);
      const origin = waiter ?? speculative;
      if (!origin) {
        // Nobody to start it for any more: give its memory back at once.
        this.apply(this.placement.startFailed(instance, Date.now()));
        continue;
      }
      const runtime: InstanceRuntime = {
        action: origin.action,
        fn: origin.fn,
        sandbox: undefined,
        launched: undefined,
        keepAliveTimer: undefined,
        keepUntil: waiter ? undefined : speculative?.keepUntil,
        served: false,
      };
      this.runtimes.set(instance, runtime);
      void this.track(this.launch(instance, runtime, waiter));
    }
    for (const { waiter: id, instance, cold } of effects.assigned) {
      const waiter = this.takeWaiter(id);
      const runtime = this.runtimes.get(instance);
      const record = this.placement.instance(instance);
      if (!waiter || !runtime?.sandbox || !record) {
        // The run placement counted will never happen: end it, so the instance is not busy without one.
        this.apply(this.placement.runEnded(instance, true, Date.now()));
        continue;
      }
      clearTimeout(runtime.keepAliveTimer);
      const lease = this.lease(record, runtime, waiter, cold);
      this.outstanding.set(lease, waiter.fn);
      waiter.resolve(lease);
    }
  }

  /** Removes a waiter for good (served, refused or failed); undefined if it was already settled. */
  private takeWaiter(id: number): Waiter | undefined {
    const waiter = this.waiters.get(id);
    if (!waiter) return undefined;
    this.waiters.delete(id);
    clearTimeout(waiter.timer);
    return waiter;
  }

  private lease(record: InstanceRecord, runtime: InstanceRuntime, waiter: Waiter, cold: boolean): Lease {
    const now = Date.now();
    const launched = cold ? runtime.launched : undefined;
    const firstCall = !runtime.served;
    runtime.served = true;
    return {
      instance: record,
      sandbox: runtime.sandbox as Sandbox,
      cold,
      prewarmed: launched?.prewarmed ?? false,
      restored: launched?.restored ?? false,
      // The first call on an instance started ahead of it (by the policy or to provision).
      prewarmHit: !cold && record.origin !== 'demand' && firstCall,
      initMs: launched?.initMs ?? 0,
      waitMs: launched ? launched.startedAt - waiter.arrived : now - waiter.arrived,
      startedAt: launched?.startedAt ?? now,
    };
  }

  private async launch(id: number, runtime: InstanceRuntime, waiter: Waiter | undefined): Promise<void> {
    let launched: Launched;
    try {
      launched = await this.launcher.launch(runtime.action, waiter?.onLog ?? (() => {}), waiter?.arrived ?? Date.now());
    } catch (error) {
      this.runtimes.delete(id);
      const failure =
        error instanceof InitFailure
          ? error
          : new InitFailure({ ok: false, kind: 'crash', error: String(error) }, 0, 0, Date.now());
      if (waiter) this.takeWaiter(waiter.id)?.reject(failure);
      else if (!this.closed) {
        this.options.onBackgroundError?.(
          `starting a ${runtime.action.isolation} instance of ${versionKey(runtime.action)} failed`,
          failure,
        );
      }
      this.apply(this.placement.startFailed(id, Date.now()));
      // Stopped while it was starting (shutdown): placement still holds it until told it is gone.
      if (this.placement.instance(id)) this.placement.stopped(id);
      return;
    }
    runtime.sandbox = launched.sandbox;
    runtime.launched = launched;
    if (this.placement.instance(id)?.state !== 'starting') {
      // Stopped while starting (the server is shutting down): it goes at once, not with the process.
      if (waiter) this.takeWaiter(waiter.id)?.reject(new CapacityError('The platform is shutting down.'));
      await this.destroy(id, launched.sandbox);
      return;
    }
    launched.sandbox.onDeath(() => this.apply(this.placement.died(id, Date.now())));
    this.apply(this.placement.started(id, Date.now()));
    const record = this.placement.instance(id);
    if (record?.state === 'idle' && runtime.keepUntil !== undefined) this.scheduleExpiry(id, runtime.keepUntil);
  }

  private stopInstance(id: number): void {
    const runtime = this.runtimes.get(id);
    if (!runtime) {
      this.placement.stopped(id);
      return;
    }
    clearTimeout(runtime.keepAliveTimer);
    // A sandbox still being made is destroyed when its launch finishes (see launch).
    if (runtime.sandbox) void this.track(this.destroy(id, runtime.sandbox));
    // A provisioned function that lost an instance gets it back.
    const latest = runtime.fn.latest;
    if (
      !this.closed &&
      latest &&
      latest.revision === runtime.action.revision &&
      this.functions.get(runtime.fn.key) === runtime.fn &&
      this.placement.instancesOf(versionKey(latest)).length < runtime.fn.settings.minInstances
    ) {
      queueMicrotask(() => this.provision(latest));
    }
  }

  private async destroy(id: number, sandbox: Sandbox): Promise<void> {
    try {
      await sandbox.destroy();
    } catch (error) {
      this.options.onBackgroundError?.(`stopping instance ${id} failed`, error);
    }
    this.runtimes.delete(id);
    this.placement.stopped(id);
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inFlight.add(work);
    void work.then(
      () => this.inFlight.delete(work),
      () => this.inFlight.delete(work),
    );
    return work;
  }

  // ---- functions and their keep-alive policy -----------------------------------------------

  private specOf(action: ActionVersion, fn: FunctionState): PoolSpec {
    return {
      key: versionKey(action),
      namespace: action.namespace,
      memoryMb: action.limits.memory,
      concurrency: action.limits.concurrency,
      maxInstances: fn.settings.maxInstances,
      maxQueued: fn.settings.maxQueued,
    };
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
      settings = storedFunctionSettings(action);
      this.settingsCache.set(action, settings);
    }
    return settings;
  }

  /** Instances of a function (any version) that are idle now. */
  private idleInstancesOf(fn: FunctionState): number[] {
    const ids: number[] = [];
    for (const [id, runtime] of this.runtimes) {
      if (runtime.fn === fn && this.placement.instance(id)?.state === 'idle') ids.push(id);
    }
    return ids;
  }

  /** One invocation of the function is done; when it was the last, ask the policy what comes next. */
  private finish(fn: FunctionState): void {
    fn.inflight--;
    if (fn.inflight > 0 || this.closed) return;
    const now = Date.now();
    fn.lastEnd = now;
    const decision = fn.policy.onIdle(now);
    const idle = this.idleInstancesOf(fn);
    if (decision.prewarmAt !== undefined) {
      // Unload now (keeping provisioned instances) and load again just before the next call.
      for (const id of idle.slice(fn.settings.minInstances)) this.apply(this.placement.expire(id, now));
      clearTimeout(fn.prewarmTimer);
      const keepUntil = decision.keepUntil;
      fn.prewarmTimer = setTimeout(() => this.prewarm(fn, keepUntil), Math.max(0, decision.prewarmAt - now));
      fn.prewarmTimer.unref();
      return;
    }
    for (const id of idle) this.scheduleExpiry(id, decision.keepUntil);
  }

  /** The policy's prewarm: start an instance of the latest version before the next call is expected. */
  private prewarm(fn: FunctionState, keepUntil: number): void {
    const action = fn.latest;
    if (this.closed || !action || fn.inflight > 0 || this.functions.get(fn.key) !== fn) return;
    if (this.placement.instancesOf(versionKey(action)).some((i) => i.state === 'idle' || i.state === 'starting')) return;
    this.apply(this.placement.provision(this.specOf(action, fn), 'prewarm', Date.now()), { action, fn, keepUntil });
  }

  private scheduleExpiry(id: number, keepUntil: number): void {
    const runtime = this.runtimes.get(id);
    if (!runtime) return;
    clearTimeout(runtime.keepAliveTimer);
    runtime.keepAliveTimer = setTimeout(
      () => {
        const record = this.placement.instance(id);
        if (record?.state !== 'idle') return;
        const latest = runtime.fn.latest;
        // Provisioned instances of the latest version are never let go.
        if (
          latest?.revision === runtime.action.revision &&
          this.placement.instancesOf(versionKey(latest)).length <= runtime.fn.settings.minInstances
        )
          return;
        this.apply(this.placement.expire(id, Date.now()));
      },
      Math.max(0, keepUntil - Date.now()),
    );
    runtime.keepAliveTimer.unref();
  }
}

function tooBig(action: ActionVersion, budgetMb: number): TooBigError {
  return new TooBigError(
    `The action needs ${action.limits.memory} MB but this host's memory budget is ${budgetMb} MB: ` +
      'lower its limits.memory or raise the server memory budget.',
  );
}

function queueFull(action: ActionVersion, maxQueued: number): QueueFullError {
  return new QueueFullError(
    `Too many invocations of ${functionKey(action)} are waiting (at most ${maxQueued}); try again later.`,
  );
}
