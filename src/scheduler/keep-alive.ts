import type { ActionVersion } from '../core/types.js';
import { type FunctionSettings, storedFunctionSettings } from './function-settings.js';
import type { InstanceState } from './instance.js';
import type { FunctionPolicy, KeepAlivePolicy } from './policy.js';

/** What the keep-alive driver remembers of a function (all its versions): its policy's state and load. */
export class FunctionState {
  /** Invocations accepted and not yet finished. */
  inflight = 0;
  lastEnd: number | undefined;
  prewarmTimer: NodeJS.Timeout | undefined;
  /** When the pending prewarm will start an instance (for the dashboard). */
  prewarmAt: number | undefined;
  latest: ActionVersion | undefined;
  /**
   * The ids of its tracked instances: a call's end looks at these only, not at every instance on
   * the host, whose number grows with the functions kept warm.
   */
  readonly instanceIds = new Set<number>();

  constructor(
    readonly key: string,
    readonly policyName: string,
    readonly policy: FunctionPolicy,
    public settings: FunctionSettings,
  ) {}
}

/** What the keep-alive driver asks of the scheduler: instances' states, and the two things it may do. */
export interface KeepAliveHost {
  /** An instance's state; undefined once it is gone. */
  stateOf(id: number): InstanceState | undefined;
  /** Live instances of a version. */
  liveInstances(action: ActionVersion): readonly { readonly id: number; readonly state: InstanceState }[];
  /** Lets an idle instance go. */
  expire(id: number): void;
  /**
   * Starts an instance of the version with no call waiting for it (told back through
   * `instanceStarting`); false when placement would not start one now.
   */
  startAhead(action: ActionVersion, fn: FunctionState, origin: 'prewarm' | 'provisioned', keepUntil: number | undefined): boolean;
}

interface TrackedInstance {
  readonly action: ActionVersion;
  readonly fn: FunctionState;
  /** For a prewarmed instance: when the policy lets it go if unused. */
  readonly keepUntil: number | undefined;
  /**
   * The expiry timer. It stays armed while the instance is busy and when a later idle time moves
   * the expiry on: clearing and setting a timer on every call is a visible share of a warm call.
   * When it fires before `expiresAt` it is armed again for the rest.
   */
  expiry: NodeJS.Timeout | undefined;
  /** When the armed expiry timer fires. */
  expiryDue?: number | undefined;
  /** When the expiry timer lets the instance go (for the dashboard); undefined while it is busy. */
  expiresAt?: number | undefined;
}

export function functionKey(action: Pick<ActionVersion, 'namespace' | 'name'>): string {
  return `${action.namespace}/${action.name}`;
}

/**
 * The timers of keeping instances: after each burst of a function's work, its keep-alive policy
 * says how long its idle instances stay (an expiry timer per instance), or to unload them and
 * start one again just before the next call is expected (a prewarm timer per function); and a
 * function with `minInstances` keeps that many instances of its latest version (provisioned
 * concurrency), started again when one is lost. It decides when, never where: starting and
 * stopping go through the host, that is placement.
 */
export class KeepAliveDriver {
  private readonly functions = new Map<string, FunctionState>();
  private readonly settingsCache = new WeakMap<ActionVersion, FunctionSettings>();
  private readonly instances = new Map<number, TrackedInstance>();
  /** Provisioned counts set by scaling, by function: they take the place of the minInstances annotation. */
  private readonly scaled = new Map<string, number>();
  private closed = false;

  constructor(
    /** The server default; a function's `keepAlive` annotation chooses its own. */
    private readonly defaultPolicy: KeepAlivePolicy,
    private readonly host: KeepAliveHost,
  ) {}

  /** The function of a version, with the settings of this version; remembers it as the latest. */
  functionFor(action: ActionVersion): FunctionState {
    const key = functionKey(action);
    let fn = this.functions.get(key);
    const settings = this.settingsFor(action);
    const policy = settings.policy ?? this.defaultPolicy;
    // A new policy for the function starts with an empty memory of it.
    if (!fn || fn.policyName !== policy.name) {
      fn = new FunctionState(key, policy.name, policy.forFunction(), settings);
      this.functions.set(key, fn);
    }
    fn.settings = settings;
    if (!fn.latest || fn.latest.revision !== action.revision) fn.latest = action;
    return fn;
  }

  /** A call of the function arrived: the policy learns the idle time, and a pending prewarm is not needed. */
  callArrived(fn: FunctionState, now: number): void {
    fn.policy.onInvocation(now, fn.inflight === 0 && fn.lastEnd !== undefined ? now - fn.lastEnd : undefined);
    clearTimeout(fn.prewarmTimer);
    fn.prewarmAt = undefined;
    fn.inflight++;
  }

  /** A call of the function ended (served, refused or failed); when it was the last, the policy decides what comes next. */
  callEnded(fn: FunctionState, now: number): void {
    fn.inflight--;
    if (fn.inflight > 0 || this.closed) return;
    fn.lastEnd = now;
    const decision = fn.policy.onIdle(now);
    const idle = this.idleInstancesOf(fn);
    if (decision.prewarmAt !== undefined) {
      // Unload now (keeping provisioned instances) and load again just before the next call.
      for (const id of idle.slice(fn.settings.minInstances)) this.host.expire(id);
      clearTimeout(fn.prewarmTimer);
      const keepUntil = decision.keepUntil;
      fn.prewarmTimer = setTimeout(
        () => {
          fn.prewarmAt = undefined;
          this.prewarm(fn, keepUntil);
        },
        Math.max(0, decision.prewarmAt - now),
      );
      fn.prewarmTimer.unref();
      fn.prewarmAt = decision.prewarmAt;
      return;
    }
    for (const id of idle) this.scheduleExpiry(id, decision.keepUntil, now);
  }

  /** An instance is being started; `keepUntil` when the policy prewarmed it. */
  instanceStarting(id: number, action: ActionVersion, fn: FunctionState, keepUntil?: number): void {
    this.instances.get(id)?.fn.instanceIds.delete(id);
    this.instances.set(id, { action, fn, keepUntil, expiry: undefined });
    fn.instanceIds.add(id);
  }

  /** An instance started and nobody took it: a prewarmed one stays until the policy's time. */
  instanceIdle(id: number, now: number): void {
    const tracked = this.instances.get(id);
    if (tracked?.keepUntil !== undefined) this.scheduleExpiry(id, tracked.keepUntil, now);
  }

  /** What the policy will do next for a function: when a pending prewarm starts an instance, and when each idle instance goes. */
  planOf(namespace: string, name: string): { prewarmAt: number | undefined; expiresAt: Map<number, number> } {
    const fn = this.functions.get(functionKey({ namespace, name }));
    const expiresAt = new Map<number, number>();
    for (const id of fn?.instanceIds ?? []) {
      const tracked = this.instances.get(id);
      if (tracked?.expiresAt !== undefined) expiresAt.set(id, tracked.expiresAt);
    }
    return { prewarmAt: fn?.prewarmAt, expiresAt };
  }

  /** The namespace's functions with a prewarm pending, and when it starts an instance. */
  pendingPrewarms(namespace: string): Map<string, number> {
    const pending = new Map<string, number>();
    for (const fn of this.functions.values())
      if (fn.prewarmAt !== undefined && fn.key.startsWith(`${namespace}/`))
        pending.set(fn.key.slice(namespace.length + 1), fn.prewarmAt);
    return pending;
  }

  /** A call took the instance: its expiry waits for the next idle time. */
  instanceBusy(id: number): void {
    const tracked = this.instances.get(id);
    // The timer stays armed: if it fires before the instance is idle again, it finds no expiry to act on.
    if (tracked) tracked.expiresAt = undefined;
  }

  /** An instance is being stopped. A provisioned function that lost one gets it back. */
  instanceStopping(id: number): void {
    const tracked = this.instances.get(id);
    if (!tracked) return;
    clearTimeout(tracked.expiry);
    const { fn, action } = tracked;
    const latest = fn.latest;
    if (
      !this.closed &&
      latest &&
      latest.revision === action.revision &&
      this.functions.get(fn.key) === fn &&
      this.host.liveInstances(latest).length < fn.settings.minInstances
    ) {
      queueMicrotask(() => this.provision(latest));
    }
  }

  /** The instance is gone (destroyed, or its start failed). */
  instanceGone(id: number): void {
    const tracked = this.instances.get(id);
    if (!tracked) return;
    clearTimeout(tracked.expiry);
    tracked.fn.instanceIds.delete(id);
    this.instances.delete(id);
  }

  /** Starts instances until the version has its `minInstances` (provisioned concurrency). */
  provision(action: ActionVersion): void {
    if (this.closed) return;
    const fn = this.functionFor(action);
    for (let missing = fn.settings.minInstances - this.host.liveInstances(action).length; missing > 0; missing--) {
      if (!this.host.startAhead(action, fn, 'provisioned', undefined)) break;
    }
  }

  /**
   * Sets (undefined: clears) how many instances a function keeps provisioned, in place of its
   * versions' minInstances annotation. Nothing starts or stops: see `scale`.
   */
  setScale(namespace: string, name: string, count: number | undefined): void {
    const key = functionKey({ namespace, name });
    if (count === undefined) this.scaled.delete(key);
    else this.scaled.set(key, count);
  }

  /**
   * Sets a function's provisioned count (see `setScale`) and acts on it for `action`, its latest
   * version: the missing instances start now, and idle ones beyond the count go now (busy ones
   * follow the keep-alive policy once their run ends). Nothing is retired: the version stays.
   */
  scale(action: ActionVersion, count: number | undefined): void {
    this.setScale(action.namespace, action.name, count);
    if (this.closed) return;
    const fn = this.functionFor(action);
    const live = this.host.liveInstances(action);
    const surplus = live.length - fn.settings.minInstances;
    if (surplus < 0) this.provision(action);
    else for (const instance of live.filter((i) => i.state === 'idle').slice(0, surplus)) this.host.expire(instance.id);
  }

  /** The settings a version runs with: its annotations', with the provisioned count scaling set (never above maxInstances). */
  settingsFor(action: ActionVersion): FunctionSettings {
    const settings = this.settingsOf(action);
    const count = this.scaled.get(functionKey(action));
    return count === undefined ? settings : { ...settings, minInstances: Math.min(count, settings.maxInstances) };
  }

  /** The function was deleted: its policy's memory, pending prewarm and provisioned count go. */
  forget(namespace: string, name: string): void {
    const key = functionKey({ namespace, name });
    this.scaled.delete(key);
    clearTimeout(this.functions.get(key)?.prewarmTimer);
    this.functions.delete(key);
  }

  close(): void {
    this.closed = true;
    for (const fn of this.functions.values()) clearTimeout(fn.prewarmTimer);
    for (const tracked of this.instances.values()) clearTimeout(tracked.expiry);
  }

  /** The keep-alive policy in force for a function, for activation records and metrics. */
  policyOf(action: ActionVersion): string {
    return this.functionFor(action).policyName;
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
    for (const id of fn.instanceIds) if (this.host.stateOf(id) === 'idle') ids.push(id);
    return ids;
  }

  /** The policy's prewarm: start an instance of the latest version before the next call is expected. */
  private prewarm(fn: FunctionState, keepUntil: number): void {
    const action = fn.latest;
    if (this.closed || !action || fn.inflight > 0 || this.functions.get(fn.key) !== fn) return;
    if (this.host.liveInstances(action).some((i) => i.state === 'idle' || i.state === 'starting')) return;
    this.host.startAhead(action, fn, 'prewarm', keepUntil);
  }

  private scheduleExpiry(id: number, keepUntil: number, now: number): void {
    const tracked = this.instances.get(id);
    if (!tracked) return;
    tracked.expiresAt = keepUntil;
    // An armed timer that fires no later than the new expiry will arm itself again for the rest.
    if (tracked.expiry !== undefined && tracked.expiryDue !== undefined && tracked.expiryDue <= keepUntil) return;
    this.armExpiry(id, tracked, now, keepUntil);
  }

  private armExpiry(id: number, tracked: TrackedInstance, now: number, due: number): void {
    clearTimeout(tracked.expiry);
    tracked.expiryDue = due;
    tracked.expiry = setTimeout(
      () => {
        tracked.expiry = undefined;
        tracked.expiryDue = undefined;
        const expiresAt = tracked.expiresAt;
        // Busy since it was armed: the next idle time arms a timer again.
        if (expiresAt === undefined) return;
        // Idle again since, with a later expiry: wait for the rest (callers' `now` is Date.now()).
        if (expiresAt > due) return this.armExpiry(id, tracked, Date.now(), expiresAt);
        tracked.expiresAt = undefined;
        if (this.host.stateOf(id) !== 'idle') return;
        const latest = tracked.fn.latest;
        // Provisioned instances of the latest version are never let go.
        if (
          latest?.revision === tracked.action.revision &&
          this.host.liveInstances(latest).length <= tracked.fn.settings.minInstances
        )
          return;
        this.host.expire(id);
      },
      Math.max(0, due - now),
    );
    tracked.expiry.unref();
  }
}
