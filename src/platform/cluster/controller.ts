import type { Bus, InvocationReply, InvokerWatch, LiveInvoker } from '../../cluster/bus.js';
import {
  buildRing,
  type CallToPlace,
  canRun,
  type HashRing,
  type InvokerSnapshot,
  type PlacementDecision,
  placeCall,
  ringOrder,
} from '../../cluster/placement.js';
import { IsolaError } from '../../core/errors.js';
import { newActivationId } from '../../core/ids.js';
import type { ActionVersion, ActivationRecord } from '../../core/types.js';
import { versionKey } from '../../sandbox/backend.js';
import { TooBigError } from '../../scheduler/scheduler.js';
import type { QueuedActivation, Store } from '../../store/store.js';
import type { Executor } from '../executor.js';
import { failedRecord, type Invocation, withPlatformRules } from '../invoker.js';
import { decodeInvokeAnswer, type InvokeAnswer, invokeMessageFor, workMessageFor } from './messages.js';

/** Placements a blocking call gets when the chosen invoker turns out to be gone before it took the call. */
const MAX_PLACEMENTS = 3;
/** Beyond the function's own time limit, how long a controller waits for an invoker's answer (queueing, a cold start). */
const ANSWER_GRACE_MS = 120_000;

/** The cluster's invokers as this controller last heard of them, and placement over them. */
export class ClusterView {
  private invokers: LiveInvoker[] = [];
  private snapshots = new Map<string, InvokerSnapshot>();
  private ring: HashRing = buildRing([]);
  private ringIds = '';
  private readonly listeners = new Set<(invokers: readonly LiveInvoker[]) => void>();

  private constructor(private watch: InvokerWatch | undefined) {}

  static async follow(bus: Bus): Promise<ClusterView> {
    const view = new ClusterView(undefined);
    view.watch = await bus.watchInvokers((invokers) => view.update(invokers));
    view.update(view.watch.current());
    return view;
  }

  private update(invokers: LiveInvoker[]): void {
    this.invokers = invokers;
    this.snapshots = new Map(
      invokers.map((invoker) => [
        invoker.id,
        {
          id: invoker.id,
          backends: invoker.backends,
          memoryBudgetMb: invoker.memoryBudgetMb,
          memoryUsedMb: invoker.memoryInUseMb,
          memoryIdleMb: invoker.memoryIdleMb,
          warm: new Map(Object.entries(invoker.warm)),
          healthy: !invoker.draining,
        },
      ]),
    );
    // The ring holds every registered invoker (placement skips the unhealthy): it changes only with membership.
    const ids = invokers.map((invoker) => invoker.id).join(',');
    if (ids !== this.ringIds) {
      this.ring = buildRing(invokers.map((invoker) => invoker.id));
      this.ringIds = ids;
    }
    for (const listener of this.listeners) listener(invokers);
  }

  /** The live invokers, by id. */
  current(): readonly LiveInvoker[] {
    return this.invokers;
  }

  /** Calls `listener` whenever the invokers change; returns how to stop. */
  onChange(listener: (invokers: readonly LiveInvoker[]) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Where a call of `fn` goes, leaving out `excluded` invokers. */
  place(fn: ActionVersion, excluded: ReadonlySet<string> = new Set()): PlacementDecision {
    const call = callOf(fn);
    const snapshots = excluded.size === 0 ? this.snapshots : new Map([...this.snapshots].filter(([id]) => !excluded.has(id)));
    return placeCall(call, snapshots, this.ring);
  }

  /**
   * The invokers that could run `fn` (healthy, with its backend and the memory), in ring order
   * from its home: the order its provisioned instances are shared out in.
   */
  provisionOrder(fn: ActionVersion): string[] {
    const call = callOf(fn);
    return ringOrder(this.ring, call.homeKey, (id) => {
      const snapshot = this.snapshots.get(id);
      return snapshot !== undefined && canRun(snapshot, call);
    });
  }

  /** Which invokers can take which functions: changes with membership, health and backends, not with load. */
  membershipKey(): string {
    return this.invokers
      .map(
        (invoker) =>
          `${invoker.id}:${invoker.draining ? 'draining' : 'ready'}:${invoker.memoryBudgetMb}:${invoker.backends.join('+')}`,
      )
      .join(',');
  }

  /** A function's instances across the invokers, every version: starting or running, and of those started. */
  replicasOf(namespace: string, name: string): { live: number; ready: number } {
    const prefix = `${namespace}/${name}@`;
    const sum = (counts: Record<string, number>) =>
      Object.entries(counts).reduce((total, [pool, count]) => (pool.startsWith(prefix) ? total + count : total), 0);
    let live = 0;
    let ready = 0;
    for (const invoker of this.invokers) {
      live += sum(invoker.live);
      ready += sum(invoker.ready);
    }
    return { live, ready };
  }

  /**
   * What deploying under `isolation` is checked against: the least memory its invokers give an
   * instance and the largest budget among them; undefined when no live invoker has the backend.
   */
  backend(isolation: string): { minMemoryMb: number; memoryBudgetMb: number } | undefined {
    const having = this.invokers.filter((invoker) => invoker.backends.includes(isolation));
    if (having.length === 0) return undefined;
    return {
      minMemoryMb: Math.max(...having.map((invoker) => invoker.minMemoryMb[isolation] ?? 0)),
      memoryBudgetMb: Math.max(...having.map((invoker) => invoker.memoryBudgetMb)),
    };
  }

  stop(): void {
    this.watch?.stop();
    this.listeners.clear();
  }
}

export interface ClusterExecutorOptions {
  bus: Bus;
  store: Store;
  view: ClusterView;
  warn: (message: string) => void;
}

/**
 * A controller's executor: places each call on an invoker (warm affinity, then the function's
 * home by consistent hashing: see cluster/placement), sends blocking calls by request/reply, and
 * hands asynchronous ones to the work stream of their backend. When the invoker running a call
 * leaves the cluster first, the call's record is a whisk internal error.
 */
export class ClusterExecutor implements Executor {
  /** Calls waiting on each invoker, aborted when it leaves the registry. */
  private readonly waiting = new Map<string, Set<AbortController>>();
  private readonly stopWatching: () => void;

  constructor(private readonly options: ClusterExecutorOptions) {
    this.stopWatching = options.view.onChange((invokers) => {
      const live = new Set(invokers.map((invoker) => invoker.id));
      for (const [id, calls] of this.waiting) {
        if (live.has(id)) continue;
        for (const call of calls) call.abort();
        this.waiting.delete(id);
      }
    });
  }

  /** Refused when no invoker could take the call now; the cluster has no queue of its own to fill. */
  admit(fn: ActionVersion): void {
    refusal(this.options.view.place(fn));
  }

  assertFits(fn: ActionVersion): void {
    this.admit(fn);
  }

  async invoke(invocation: Invocation): Promise<ActivationRecord> {
    const action = invocation.action;
    const activationId = invocation.activationId ?? newActivationId();
    const accepted = invocation.accepted ?? Date.now();
    // A door's rule on the result, or a system action's own part, is applied here: the record is then stored here.
    const storeRecord = !invocation.checkResult && !invocation.applyResult;
    const message = invokeMessageFor(action, {
      params: invocation.params,
      subject: invocation.subject,
      activationId,
      accepted,
      annotations: invocation.annotations ?? [],
      storeRecord,
      ...(invocation.clientContext !== undefined ? { clientContext: invocation.clientContext } : {}),
    });
    const pending: QueuedActivation = {
      activationId,
      namespace: action.namespace,
      name: action.name,
      version: action.version,
      subject: invocation.subject,
      accepted,
      params: undefined,
      annotations: invocation.annotations ?? [],
      attempts: 1,
      notBefore: 0,
    };
    const gone = new Set<string>();
    for (let placement = 1; placement <= MAX_PLACEMENTS; placement++) {
      const decision = this.options.view.place(action, gone);
      if (decision.kind === 'refused') {
        if (gone.size === 0) refusal(decision);
        break;
      }
      const invokerId = decision.invoker;
      const abort = new AbortController();
      const calls = this.waiting.get(invokerId) ?? new Set();
      calls.add(abort);
      this.waiting.set(invokerId, calls);
      let reply: InvocationReply<InvokeAnswer>;
      try {
        reply = await this.options.bus.requestInvocation(invokerId, message, {
          timeoutMs: action.limits.timeout + ANSWER_GRACE_MS,
          decode: decodeInvokeAnswer,
          signal: abort.signal,
        });
      } finally {
        calls.delete(abort);
      }
      switch (reply.kind) {
        case 'no-invoker':
          // It left before taking the call: nothing ran, so another invoker may take it.
          gone.add(invokerId);
          continue;
        case 'result': {
          const record = reply.value.record;
          if (storeRecord) return record;
          const ruled = { ...record, response: await withPlatformRules(record.response, invocation) };
          await this.options.store.completeActivation(ruled, accepted);
          return ruled;
        }
        case 'too-large':
          if (storeRecord) {
            const stored = await this.options.store.getActivation(action.namespace, activationId);
            if (stored) return stored;
          }
          return this.failed(
            pending,
            `The activation's record (${reply.bytes} bytes) is larger than the cluster's messages can carry.`,
          );
        case 'error':
          return this.failed(pending, `The invoker ${invokerId} could not run the activation: ${reply.message}`);
        case 'timeout':
          return this.failed(pending, `The invoker ${invokerId} did not answer within the action's time limit and more.`);
        case 'aborted':
          return this.failed(
            pending,
            `The invoker ${invokerId} left the cluster (it stopped, or lost its connection) before the activation ended.`,
          );
      }
    }
    throw new IsolaError(503, `No invoker of the cluster could take the call of ${action.namespace}/${action.name} now.`);
  }

  /** Records the failure unless the invoker stored the activation's own record first; answers the stored one. */
  private async failed(pending: QueuedActivation, reason: string): Promise<ActivationRecord> {
    const record = failedRecord(pending, 'whisk internal error', reason);
    // Never over the run's own record, if the invoker stored it first (see upsertActivations).
    await this.options.store.completeActivation(record, pending.accepted, pending.attempts);
    return (await this.options.store.getActivation(pending.namespace, pending.activationId)) ?? record;
  }

  /** Hands a queued activation to the work stream of its backend; throws (503) when NATS does not take it. */
  async submit(queued: QueuedActivation, fn: ActionVersion): Promise<void> {
    await this.options.bus.publishWork(fn.isolation, queued.activationId, workMessageFor(fn, queued.activationId));
  }

  async runQueued(queued: QueuedActivation, action: ActionVersion | undefined): Promise<ActivationRecord | undefined> {
    if (!action) {
      const record = failedRecord(queued, 'whisk internal error', 'The action version was deleted before the activation ran.');
      await this.options.store.completeActivation(record, queued.accepted, queued.attempts + 1);
      return record;
    }
    await this.submit(queued, action);
    return undefined;
  }

  async fail(pending: QueuedActivation, reason: string): Promise<void> {
    await this.options.store.completeActivation(
      failedRecord(pending, 'whisk internal error', reason),
      pending.accepted,
      pending.attempts,
    );
  }

  close(): void {
    this.stopWatching();
  }
}

function callOf(fn: ActionVersion): CallToPlace {
  return {
    poolKey: versionKey(fn),
    homeKey: `${fn.namespace}/${fn.name}`,
    memoryMb: fn.limits.memory,
    backend: fn.isolation,
  };
}

/** Throws what a refused placement means for the caller; returns when the call was placed. */
function refusal(decision: PlacementDecision): void {
  if (decision.kind === 'placed') return;
  if (decision.reason === 'too-big') throw new TooBigError(decision.message);
  throw new IsolaError(503, `${decision.message} The cluster cannot run this function now.`);
}
