import type { Isolation } from '../core/kinds.js';
import type { ActionVersion } from '../core/types.js';
import { type Backend, type LogSink, type PreparedCode, type Sandbox, versionKey } from '../sandbox/backend.js';
import type { FunctionSettings } from './function-settings.js';
import type { InstanceState } from './instance.js';
import { type FunctionState, functionKey, KeepAliveDriver } from './keep-alive.js';
import { InitFailure, type Launched, Launcher } from './launcher.js';
import { type Effects, type InstanceRecord, Placement, type PoolSpec, type Rejection } from './placement.js';
import type { KeepAlivePolicy } from './policy.js';
import { StemCells, type StemCellTarget } from './stem-cells.js';
import { type Waiter, Waiters } from './waiters.js';

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
  /** What the deploy made of an action (a package, compiled code), for the launcher. */
  prepare?: (action: ActionVersion) => Promise<PreparedCode>;
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

/** What a waiting call carries. */
interface Call {
  readonly action: ActionVersion;
  readonly fn: FunctionState;
  readonly onLog: LogSink;
}

/** What the driver keeps of an instance beside placement's record: its sandbox and how it was made. */
interface InstanceRuntime {
  readonly action: ActionVersion;
  readonly fn: FunctionState;
  sandbox: Sandbox | undefined;
  launched: Launched | undefined;
  /** Has served a call. */
  served: boolean;
}

/** A lease not yet given back: the function it counts against and its run on the instance. */
interface Outstanding {
  readonly fn: FunctionState;
  readonly run: number;
}

export interface FunctionStats {
  namespace: string;
  action: string;
  instances: { state: InstanceState; count: number }[];
  queued: number;
}

/**
 * What a cluster's placement needs to know of this host, for its invoker's heartbeat: its memory,
 * how much of it idle instances hold (which they give back when evicted), and per version (pool
 * key) how many instances could take one more call now (idle, or busy below their concurrency).
 */
export interface PlacementSnapshot {
  memoryBudgetMb: number;
  memoryUsedMb: number;
  memoryIdleMb: number;
  /** Per version (pool key): instances that could take one more call now. */
  warm: Record<string, number>;
  /** Per version: instances starting or running (an OpenFaaS function's replicas). */
  live: Record<string, number>;
  /** Per version: instances started, idle or busy (its available replicas). */
  ready: Record<string, number>;
  instances: number;
}

/** One function's instances on this host, for the dashboard (see `instancesOfNamespace`). */
export interface NamespaceInstances {
  name: string;
  prewarmAt: number | undefined;
  expiresAt: Map<number, number>;
  instances: {
    id: number;
    version: string;
    isolation: Isolation;
    state: InstanceState;
    origin: string;
    memoryMb: number;
    inflight: number;
    concurrency: number;
    lastUsed: number;
    unloadAt: number | undefined;
  }[];
}

export interface SchedulerStats {
  memoryBudgetMb: number;
  memoryUsedMb: number;
  queued: number;
  stemCells: number;
  instances: { isolation: Isolation; state: InstanceState; count: number }[];
  functions: FunctionStats[];
}

/**
 * Places invocations on instances, after OpenWhisk's `ContainerPool`: a thin driver that carries
 * out the decisions of placement (pure, in placement.ts: which instance takes a call, what starts,
 * what stops, who waits) with the launcher (making sandboxes), the waiters (the calls' promises
 * and queue timeouts) and the keep-alive driver (idle expiry, the policy's prewarms, provisioned
 * instances). It knows instances and their states, never how a backend makes a sandbox.
 */
export class Scheduler {
  private readonly placement: Placement;
  private readonly waiters: Waiters<Call, Lease>;
  private readonly keepAlive: KeepAliveDriver;
  private readonly runtimes = new Map<number, InstanceRuntime>();
  /** Leases not yet given back. */
  private readonly outstanding = new WeakMap<Lease, Outstanding>();
  private readonly stemCells: StemCells;
  private readonly launcher: Launcher;
  private closed = false;
  /** Sandboxes being made or destroyed: shutting down waits for them, so none outlives the server. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(private readonly options: SchedulerOptions) {
    this.placement = new Placement(options.memoryBudgetMb);
    const warn = (message: string, error: unknown) => options.onBackgroundError?.(message, error);
    this.stemCells = new StemCells(options.backends, options.stemCells ?? [], (isolation, error) =>
      warn(`prewarming a ${isolation} sandbox failed`, error),
    );
    this.launcher = new Launcher(options.backends, this.stemCells, warn, options.prepare);
    this.waiters = new Waiters<Call, Lease>({
      timeoutMs: options.queueTimeoutMs,
      onTimeout: (waiter) => {
        if (!this.placement.isWaiting(waiter.id)) return false;
        this.placement.leave(waiter.id);
        return true;
      },
      timeoutError: () => new CapacityError(`No capacity to run the action within ${options.queueTimeoutMs} ms.`),
      onRejected: (waiter) => this.keepAlive.callEnded(waiter.payload.fn, Date.now()),
    });
    this.keepAlive = new KeepAliveDriver(options.policy, {
      stateOf: (id) => this.placement.instance(id)?.state,
      liveInstances: (action) => this.placement.instancesOf(versionKey(action)),
      expire: (id) => this.apply(this.placement.expire(id, Date.now())),
      startAhead: (action, fn, origin, keepUntil) => {
        const effects = this.placement.provision(this.specOf(action, fn), origin, Date.now());
        this.apply(effects, { action, fn, keepUntil });
        return effects.start.length > 0;
      },
    });
    this.stemCells.start();
  }

  /**
   * Throws before anything is recorded when a call of this version cannot be taken now: the
   * function needs more memory than the whole budget (TooBigError), or its queue is full.
   */
  admit(action: ActionVersion): void {
    this.assertFits(action);
    const fn = this.keepAlive.functionFor(action);
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
    const fn = this.keepAlive.functionFor(action);
    this.keepAlive.callArrived(fn, arrived);
    const { id, promise } = this.waiters.add({ action, fn, onLog }, arrived);
    this.apply(this.placement.arrive(this.specOf(action, fn), id, arrived));
    if (this.placement.isWaiting(id)) this.waiters.queued(id);
    return promise;
  }

  /** Gives an instance back after a run. An unhealthy one (timed out, crashed) is replaced. Idempotent. */
  release(lease: Lease, healthy: boolean): void {
    const outstanding = this.outstanding.get(lease);
    if (!outstanding) return;
    this.outstanding.delete(lease);
    const now = Date.now();
    this.apply(this.placement.runEnded(lease.instance.id, outstanding.run, healthy && lease.sandbox.alive, now));
    this.keepAlive.callEnded(outstanding.fn, now);
  }

  /** Drains every version of an action except the revision `keep`: idle instances go now, busy ones when done. */
  retireVersions(namespace: string, name: string, keep?: string): void {
    const keys = new Set<string>();
    const old = (a: ActionVersion) => a.namespace === namespace && a.name === name && a.revision !== keep;
    for (const runtime of this.runtimes.values()) if (old(runtime.action)) keys.add(versionKey(runtime.action));
    for (const waiter of this.waiters.values()) if (old(waiter.payload.action)) keys.add(versionKey(waiter.payload.action));
    this.apply(this.placement.retire(keys, Date.now()));
    if (keep === undefined) this.keepAlive.forget(namespace, name);
  }

  /** Starts instances until the version has its `minInstances` (provisioned concurrency). */
  provision(action: ActionVersion): void {
    if (this.closed) return;
    this.keepAlive.provision(action);
  }

  /**
   * Sets (undefined: clears) how many instances a function keeps provisioned, in place of its
   * minInstances annotation, and acts on it for `action`, its latest version: missing instances
   * start now, idle ones beyond the count go now. No version is retired.
   */
  scale(action: ActionVersion, count: number | undefined): void {
    if (this.closed) return;
    this.keepAlive.scale(action, count);
  }

  /** Records a function's provisioned count (see `scale`) without starting or stopping anything: for a restart. */
  setScale(namespace: string, name: string, count: number | undefined): void {
    this.keepAlive.setScale(namespace, name, count);
  }

  /** The settings a version runs with: its annotations', with the provisioned count scaling set. */
  settingsOf(action: ActionVersion): FunctionSettings {
    return this.keepAlive.settingsFor(action);
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
    for (const waiter of this.waiters.values()) if (this.placement.isWaiting(waiter.id)) statsOf(waiter.payload.action).queued++;
    return {
      memoryBudgetMb: this.options.memoryBudgetMb,
      memoryUsedMb: this.placement.memoryUsedMb,
      queued: this.placement.waitingCount(),
      stemCells: this.stemCells.size,
      instances: [...counts.values()],
      functions: [...functions.values()],
    };
  }

  /**
   * A namespace's live instances on this host, by function, with what the keep-alive policy will
   * do next: when each idle instance goes and when a pending prewarm starts one. For the dashboard.
   */
  instancesOfNamespace(namespace: string): NamespaceInstances[] {
    const byFunction = new Map<string, NamespaceInstances>();
    for (const instance of this.placement.allInstances()) {
      const runtime = this.runtimes.get(instance.id);
      if (!runtime || instance.state === 'stopped' || runtime.action.namespace !== namespace) continue;
      const name = runtime.action.name;
      let entry = byFunction.get(name);
      if (!entry) {
        const plan = this.keepAlive.planOf(namespace, name);
        entry = { name, prewarmAt: plan.prewarmAt, instances: [], expiresAt: plan.expiresAt };
        byFunction.set(name, entry);
      }
      entry.instances.push({
        id: instance.id,
        version: runtime.action.version,
        isolation: runtime.action.isolation,
        state: instance.state,
        origin: instance.origin,
        memoryMb: instance.memoryMb,
        inflight: instance.inflight,
        concurrency: instance.concurrency,
        lastUsed: instance.lastUsed,
        unloadAt: entry.expiresAt.get(instance.id),
      });
    }
    // Functions whose instances were unloaded until a prewarm: nothing runs, something is planned.
    for (const [name, prewarmAt] of this.keepAlive.pendingPrewarms(namespace))
      if (!byFunction.has(name)) byFunction.set(name, { name, prewarmAt, instances: [], expiresAt: new Map() });
    return [...byFunction.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  }

  /** This host as a cluster's placement sees it (see PlacementSnapshot). */
  placementSnapshot(): PlacementSnapshot {
    let memoryIdleMb = 0;
    let instances = 0;
    const warm: Record<string, number> = {};
    const live: Record<string, number> = {};
    const ready: Record<string, number> = {};
    for (const instance of this.placement.allInstances()) {
      if (instance.state === 'stopped' || instance.state === 'stopping') continue;
      instances++;
      live[instance.pool] = (live[instance.pool] ?? 0) + 1;
      if (instance.state === 'idle' || instance.state === 'busy') ready[instance.pool] = (ready[instance.pool] ?? 0) + 1;
      if (instance.state === 'idle') memoryIdleMb += instance.memoryMb;
      const free = instance.state === 'idle' || (instance.state === 'busy' && instance.inflight < instance.concurrency);
      if (free) warm[instance.pool] = (warm[instance.pool] ?? 0) + 1;
    }
    return {
      memoryBudgetMb: this.options.memoryBudgetMb,
      memoryUsedMb: this.placement.memoryUsedMb,
      memoryIdleMb,
      warm,
      live,
      ready,
      instances,
    };
  }

  /** Live instances of one version, for tests and the dashboard. */
  instancesOf(action: Pick<ActionVersion, 'namespace' | 'name' | 'version' | 'revision'>): readonly Readonly<InstanceRecord>[] {
    return this.placement.instancesOf(versionKey(action));
  }

  /** The keep-alive policy in force for a function, for activation records and metrics. */
  policyOf(action: ActionVersion): string {
    return this.keepAlive.policyOf(action);
  }

  /** Checks placement's invariants (memory account, states); throws on the first broken. For tests. */
  checkInvariants(): void {
    this.placement.check();
  }

  async close(): Promise<void> {
    this.closed = true;
    this.keepAlive.close();
    this.apply(this.placement.stopAll());
    this.waiters.rejectAll(() => new CapacityError('The platform is shutting down.'));
    await this.stemCells.close();
    // Launches finishing now stop their instance at once (see launch), which adds a destroy.
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  // ---- carrying out placement's decisions ----------------------------------------------------

  /**
   * Carries out effects. `speculative` names the version of instances started without a waiter
   * (prewarm, provision), which placement's effects do not carry.
   */
  private apply(
    effects: Effects,
    speculative?: { action: ActionVersion; fn: FunctionState; keepUntil: number | undefined },
  ): void {
    for (const { waiter, reason } of effects.rejected) this.refuse(waiter, reason);
    for (const { instance } of effects.stop) this.stopInstance(instance);
    for (const { instance, waiter: waiterId } of effects.start) {
      const waiter = waiterId === undefined ? undefined : this.waiters.get(waiterId);
      if (waiter) this.waiters.dequeued(waiter.id);
      const origin = waiter?.payload ?? speculative;
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
        served: false,
      };
      this.runtimes.set(instance, runtime);
      this.keepAlive.instanceStarting(instance, origin.action, origin.fn, waiter ? undefined : speculative?.keepUntil);
      void this.track(this.launch(instance, runtime, waiter));
    }
    for (const { waiter: id, instance, cold } of effects.assigned) {
      const waiter = this.waiters.get(id);
      const runtime = this.runtimes.get(instance);
      const record = this.placement.instance(instance);
      if (!waiter || !runtime?.sandbox || !record) {
        // The run placement counted will never happen: end it, so the instance is not busy without one.
        this.apply(this.placement.runEnded(instance, id, true, Date.now()));
        continue;
      }
      this.keepAlive.instanceBusy(instance);
      const lease = this.lease(record, runtime, waiter, cold);
      this.outstanding.set(lease, { fn: waiter.payload.fn, run: id });
      this.waiters.resolve(id, lease);
    }
  }

  private refuse(id: number, reason: Rejection): void {
    const waiter = this.waiters.get(id);
    if (!waiter) return;
    const { action, fn } = waiter.payload;
    this.waiters.reject(
      id,
      reason === 'too-big'
        ? tooBig(action, this.options.memoryBudgetMb)
        : reason === 'queue-full'
          ? queueFull(action, fn.settings.maxQueued)
          : new CapacityError(
              this.closed ? 'The platform is shutting down.' : 'The instance started for the call was stopped before it ran.',
            ),
    );
  }

  private lease(record: InstanceRecord, runtime: InstanceRuntime, waiter: Waiter<Call>, cold: boolean): Lease {
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

  private async launch(id: number, runtime: InstanceRuntime, waiter: Waiter<Call> | undefined): Promise<void> {
    let launched: Launched;
    try {
      launched = await this.launcher.launch(runtime.action, waiter?.payload.onLog ?? (() => {}), waiter?.arrived ?? Date.now());
    } catch (error) {
      this.runtimes.delete(id);
      this.keepAlive.instanceGone(id);
      const failure =
        error instanceof InitFailure
          ? error
          : new InitFailure({ ok: false, kind: 'crash', error: String(error) }, 0, 0, Date.now());
      if (waiter) this.waiters.reject(waiter.id, failure);
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
      // Stopped while starting (the server is shutting down): its call is refused, and it goes
      // at once, not with the process.
      this.apply(this.placement.started(id, Date.now()));
      await this.destroy(id, launched.sandbox);
      return;
    }
    launched.sandbox.onDeath(() => this.apply(this.placement.died(id, Date.now())));
    const now = Date.now();
    this.apply(this.placement.started(id, now));
    if (this.placement.instance(id)?.state === 'idle') this.keepAlive.instanceIdle(id, now);
  }

  private stopInstance(id: number): void {
    this.keepAlive.instanceStopping(id);
    const runtime = this.runtimes.get(id);
    if (!runtime) {
      this.placement.stopped(id);
      return;
    }
    // A sandbox still being made is destroyed when its launch finishes (see launch).
    if (runtime.sandbox) void this.track(this.destroy(id, runtime.sandbox));
  }

  private async destroy(id: number, sandbox: Sandbox): Promise<void> {
    try {
      await sandbox.destroy();
    } catch (error) {
      this.options.onBackgroundError?.(`stopping instance ${id} failed`, error);
    }
    this.runtimes.delete(id);
    this.keepAlive.instanceGone(id);
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
