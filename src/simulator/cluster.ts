import {
  buildRing,
  type CallToPlace,
  canRun,
  DEFAULT_SPILL_LIMIT,
  DEFAULT_VIRTUAL_NODES,
  type InvokerSnapshot,
  leastLoaded,
  type PlacementReason,
  placeCall,
} from '../cluster/placement.js';
import { type Effects, Placement, type PoolSpec } from '../scheduler/placement.js';
import type { FunctionPolicy, KeepAlivePolicy } from '../scheduler/policy.js';
import { MINUTE_MS } from './simulate.js';
import { seededRandom, type TraceApp } from './trace.js';

/**
 * A trace replayed across simulated invokers. Each invoker runs the single-host scheduler's own
 * pure code: a `Placement` (its memory budget, warm instances, least-recently-used eviction and
 * queue of calls waiting for memory) and, per function, the keep-alive policy's state, driven as
 * the scheduler's keep-alive driver drives it (the policy learns idle times on the invoker that
 * served the calls; after its last call ends, its idle instances are kept until the policy's time
 * or unloaded and prewarmed there). Which invoker takes each call is the strategy under test:
 * warm-affinity hashing (src/cluster/placement.ts), random, or least loaded.
 *
 * Time is virtual and the trace has minute resolution, as in `simulate`: each minute's calls of
 * an app arrive at the minute's start as one batch (the first decides cold or warm, the others
 * find its instance), run for the app's average duration, and end. One infinitely large invoker
 * therefore gives exactly `simulate`'s cold starts.
 */

export const PLACEMENTS = ['affinity', 'random', 'least-loaded'] as const;
export type PlacementStrategy = (typeof PLACEMENTS)[number];

export interface ClusterOptions {
  invokers: number;
  /** Each invoker's memory budget; Infinity for the single infinitely large host. */
  invokerMemoryMb: number;
  placement: PlacementStrategy;
  /** Seeds the random placement. */
  seed?: number | undefined;
  spillLimit?: number | undefined;
  virtualNodes?: number | undefined;
}

export interface ClusterReport {
  placement: PlacementStrategy | 'single-host';
  invokers: number;
  /** null for an unlimited budget. */
  invokerMemoryMb: number | null;
  invocations: number;
  coldStarts: number;
  coldStartPct: number;
  /** Calls that waited on their invoker for memory (a minute's calls of an app count once, as for cold starts). */
  waited: number;
  /** Idle instances let go to make room for another function's. */
  evictions: number;
  /** Invocations no invoker could take (an app larger than an invoker's whole budget). */
  refused: number;
  /** Load spread: the busiest invoker's invocations over the mean of all invokers'. */
  invocationsMaxOverMean: number;
  /** Memory spread: the largest peak of memory in use over the mean of the invokers' peaks. */
  peakMemoryMaxOverMean: number;
  /** The largest peak of memory in use of any invoker, MB. */
  peakMemoryMb: number;
  /** For warm-affinity hashing: how many calls each rule placed. */
  reasons?: Partial<Record<PlacementReason, number>>;
}

const BACKEND = 'isolate';

const EVENT_RUN_END = 0;
const EVENT_EXPIRY = 1;
const EVENT_PREWARM = 2;

class SimEvent {
  constructor(
    readonly time: number,
    /** At equal times: runs end, then keep-alives expire, then prewarms start (then the minute's calls arrive). */
    readonly type: number,
    readonly seq: number,
    readonly invoker: number,
    /** Run end and expiry: the instance; prewarm: the app. */
    readonly target: number,
    /** Run end: the run; expiry and prewarm: the token they were scheduled with. */
    readonly token: number,
    /** Prewarm: until when the prewarmed instance is kept. */
    readonly keepUntil: number,
  ) {}
}

/** A binary min-heap of events by (time, type, seq): deterministic order. */
class EventQueue {
  private readonly heap: SimEvent[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  peek(): SimEvent | undefined {
    return this.heap[0];
  }

  push(time: number, type: number, invoker: number, target: number, token: number, keepUntil = 0): void {
    const heap = this.heap;
    const item = new SimEvent(time, type, this.seq++, invoker, target, token, keepUntil);
    let i = heap.length;
    heap.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(item, heap[parent] as SimEvent)) break;
      heap[i] = heap[parent] as SimEvent;
      i = parent;
    }
    heap[i] = item;
  }

  pop(): SimEvent | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && before(heap[right] as SimEvent, heap[left] as SimEvent) ? right : left;
      if (!before(heap[child] as SimEvent, last)) break;
      heap[i] = heap[child] as SimEvent;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.time < b.time || (a.time === b.time && (a.type < b.type || (a.type === b.type && a.seq < b.seq)));
}

/** What an invoker remembers of one app: as the keep-alive driver's FunctionState. */
interface FunctionOnInvoker {
  policy: FunctionPolicy;
  inflight: number;
  lastEnd: number | undefined;
  /** Bumped to cancel a pending prewarm. */
  prewarmToken: number;
}

/** What the simulation knows of an instance, to keep its invoker's snapshot current. */
interface TrackedInstance {
  app: number;
  warm: boolean;
  idle: boolean;
  /** Bumped to cancel a pending expiry. */
  expiryToken: number;
}

interface MutableSnapshot {
  id: string;
  backends: readonly string[];
  memoryBudgetMb: number;
  memoryUsedMb: number;
  memoryIdleMb: number;
  warm: Map<string, number>;
  healthy: boolean;
}

interface SimInvoker {
  index: number;
  snapshot: MutableSnapshot;
  placement: Placement;
  functions: Map<number, FunctionOnInvoker>;
  instances: Map<number, TrackedInstance>;
  invocations: number;
  peakMemoryMb: number;
}

interface Run {
  app: number;
  count: number;
  queued: boolean;
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;

/** The minutes' arrivals: for each minute, the apps called in it, in the trace's order. */
function arrivalsByMinute(apps: readonly TraceApp[]): Int32Array[] {
  const minutes = Math.max(0, ...apps.map((a) => a.perMinute.length));
  const counts = new Int32Array(minutes);
  for (const app of apps) {
    for (let m = 0; m < app.perMinute.length; m++) if ((app.perMinute[m] as number) > 0) counts[m] = (counts[m] as number) + 1;
  }
  const byMinute = Array.from(counts, (n) => new Int32Array(n));
  const filled = new Int32Array(minutes);
  apps.forEach((app, index) => {
    for (let m = 0; m < app.perMinute.length; m++) {
      if ((app.perMinute[m] as number) === 0) continue;
      const at = filled[m] as number;
      (byMinute[m] as Int32Array)[at] = index;
      filled[m] = at + 1;
    }
  });
  return byMinute;
}

export function simulateCluster(apps: readonly TraceApp[], policy: KeepAlivePolicy, options: ClusterOptions): ClusterReport {
  if (!(options.invokers >= 1)) throw new Error('A cluster needs at least one invoker.');
  if (!(options.invokerMemoryMb > 0)) throw new Error('Invokers need a memory budget above 0 MB.');
  const specs: PoolSpec[] = apps.map((app) => ({
    key: app.id,
    namespace: app.id.split('/')[0] ?? app.id,
    memoryMb: app.memoryMb,
    // The minute model: an app's instance takes all the calls that reach it (see simulate.ts).
    concurrency: Number.MAX_SAFE_INTEGER,
    maxInstances: Number.POSITIVE_INFINITY,
    maxQueued: Number.POSITIVE_INFINITY,
  }));
  const calls: CallToPlace[] = apps.map((app) => ({
    poolKey: app.id,
    homeKey: app.id,
    memoryMb: app.memoryMb,
    backend: BACKEND,
  }));
  const invokers: SimInvoker[] = Array.from({ length: options.invokers }, (_, index) => ({
    index,
    snapshot: {
      id: `invoker-${index}`,
      backends: [BACKEND],
      memoryBudgetMb: options.invokerMemoryMb,
      memoryUsedMb: 0,
      memoryIdleMb: 0,
      warm: new Map(),
      healthy: true,
    },
    placement: new Placement(options.invokerMemoryMb),
    functions: new Map(),
    instances: new Map(),
    invocations: 0,
    peakMemoryMb: 0,
  }));
  const snapshots: InvokerSnapshot[] = invokers.map((i) => i.snapshot);
  const byId = new Map<string, InvokerSnapshot>(snapshots.map((s) => [s.id, s]));
  const indexOf = new Map<string, number>(invokers.map((i) => [i.snapshot.id, i.index]));
  const appIndex = new Map<string, number>(apps.map((app, i) => [app.id, i]));
  const ring = buildRing(byId.keys(), options.virtualNodes ?? DEFAULT_VIRTUAL_NODES);
  const spillLimit = options.spillLimit ?? DEFAULT_SPILL_LIMIT;
  const random = seededRandom(options.seed ?? 1);
  const reasons: Partial<Record<PlacementReason, number>> = {};

  const events = new EventQueue();
  const runs = new Map<number, Run>();
  let nextRun = 1;
  let invocations = 0;
  let coldStarts = 0;
  let waited = 0;
  let evictions = 0;
  let refused = 0;

  const choose = (app: number): SimInvoker | undefined => {
    switch (options.placement) {
      case 'affinity': {
        const decision = placeCall(calls[app] as CallToPlace, byId, ring, { spillLimit });
        if (decision.kind === 'refused') return undefined;
        reasons[decision.reason] = (reasons[decision.reason] ?? 0) + 1;
        return invokers[indexOf.get(decision.invoker) as number];
      }
      case 'random': {
        // Every invoker has the same budget: all of them can take the app, or none.
        if (options.invokerMemoryMb < (apps[app] as TraceApp).memoryMb) return undefined;
        return invokers[Math.floor(random() * invokers.length)];
      }
      case 'least-loaded': {
        // The same order as placement's own least loaded: busy memory, then memory in use.
        const best = leastLoaded(snapshots, (snapshot) => canRun(snapshot, calls[app] as CallToPlace));
        return best && invokers[indexOf.get(best.id) as number];
      }
    }
  };

  const functionOn = (invoker: SimInvoker, app: number): FunctionOnInvoker => {
    let fn = invoker.functions.get(app);
    if (!fn) {
      fn = { policy: policy.forFunction(), inflight: 0, lastEnd: undefined, prewarmToken: 0 };
      invoker.functions.set(app, fn);
    }
    return fn;
  };

  /** Brings the invoker's snapshot up to date with one instance's state in its placement. */
  const refresh = (invoker: SimInvoker, id: number): void => {
    const record = invoker.placement.instance(id);
    let tracked = invoker.instances.get(id);
    if (!tracked) {
      if (!record) return;
      tracked = { app: appIndex.get(record.pool) as number, warm: false, idle: false, expiryToken: 0 };
      invoker.instances.set(id, tracked);
    }
    const warm =
      record !== undefined && (record.state === 'idle' || record.state === 'busy') && record.inflight < record.concurrency;
    const idle = record?.state === 'idle';
    const key = (apps[tracked.app] as TraceApp).id;
    const memoryMb = (apps[tracked.app] as TraceApp).memoryMb;
    const { snapshot } = invoker;
    if (warm !== tracked.warm) {
      const count = (snapshot.warm.get(key) ?? 0) + (warm ? 1 : -1);
      if (count > 0) snapshot.warm.set(key, count);
      else snapshot.warm.delete(key);
      tracked.warm = warm;
    }
    if (idle !== tracked.idle) {
      snapshot.memoryIdleMb += idle ? memoryMb : -memoryMb;
      tracked.idle = idle;
    }
    if (!record || record.state === 'stopping' || record.state === 'stopped') invoker.instances.delete(id);
  };

  /** Carries out a decision's effects at `now`, as the scheduler's driver does, starts taking no time. */
  const apply = (invoker: SimInvoker, effects: Effects, now: number, expired?: number): void => {
    const { placement } = invoker;
    for (const { instance, reason } of effects.stop) {
      if (reason === 'retired' && instance !== expired) evictions++;
      placement.stopped(instance);
      refresh(invoker, instance);
    }
    for (const { waiter, reason } of effects.rejected) {
      const run = runs.get(waiter);
      if (!run) continue;
      runs.delete(waiter);
      refused += run.count;
      functionOn(invoker, run.app).inflight--;
      if (reason !== 'too-big') throw new Error(`unexpected rejection ${reason} in the simulation`);
    }
    for (const { waiter, instance, cold } of effects.assigned) {
      const run = runs.get(waiter) as Run;
      invocations += run.count;
      invoker.invocations += run.count;
      if (cold) coldStarts++;
      if (run.queued) waited++;
      const tracked = invoker.instances.get(instance);
      if (tracked) tracked.expiryToken++;
      refresh(invoker, instance);
      const duration = (apps[run.app] as TraceApp).durationMs;
      events.push(now + duration, EVENT_RUN_END, invoker.index, instance, waiter);
    }
    for (const { instance } of effects.start) {
      refresh(invoker, instance);
      apply(invoker, placement.started(instance, now), now);
      refresh(invoker, instance);
    }
    invoker.snapshot.memoryUsedMb = placement.memoryUsedMb;
    if (placement.memoryUsedMb > invoker.peakMemoryMb) invoker.peakMemoryMb = placement.memoryUsedMb;
  };

  const scheduleExpiry = (invoker: SimInvoker, id: number, keepUntil: number): void => {
    const tracked = invoker.instances.get(id);
    if (!tracked) return;
    tracked.expiryToken++;
    events.push(keepUntil, EVENT_EXPIRY, invoker.index, id, tracked.expiryToken);
  };

  const idleInstances = (invoker: SimInvoker, app: number): number[] =>
    invoker.placement
      .instancesOf((apps[app] as TraceApp).id)
      .filter((i) => i.state === 'idle')
      .map((i) => i.id);

  const handle = (event: SimEvent): void => {
    const invoker = invokers[event.invoker] as SimInvoker;
    const { placement } = invoker;
    const now = event.time;
    if (event.type === EVENT_RUN_END) {
      const run = runs.get(event.token) as Run;
      runs.delete(event.token);
      apply(invoker, placement.runEnded(event.target, event.token, true, now), now);
      refresh(invoker, event.target);
      const fn = functionOn(invoker, run.app);
      fn.inflight--;
      if (fn.inflight > 0) return;
      // The function's last call on this invoker ended: its policy decides (keep-alive.ts's callEnded).
      fn.lastEnd = now;
      const decision = fn.policy.onIdle(now);
      const idle = idleInstances(invoker, run.app);
      if (decision.prewarmAt !== undefined) {
        for (const id of idle) {
          apply(invoker, placement.expire(id, now), now, id);
          refresh(invoker, id);
        }
        fn.prewarmToken++;
        events.push(decision.prewarmAt, EVENT_PREWARM, invoker.index, run.app, fn.prewarmToken, decision.keepUntil);
        return;
      }
      for (const id of idle) scheduleExpiry(invoker, id, decision.keepUntil);
    } else if (event.type === EVENT_EXPIRY) {
      const tracked = invoker.instances.get(event.target);
      if (!tracked || tracked.expiryToken !== event.token || placement.instance(event.target)?.state !== 'idle') return;
      apply(invoker, placement.expire(event.target, now), now, event.target);
      refresh(invoker, event.target);
    } else {
      const app = event.target;
      const fn = functionOn(invoker, app);
      if (fn.prewarmToken !== event.token || fn.inflight > 0) return;
      const live = placement.instancesOf((apps[app] as TraceApp).id);
      if (live.some((i) => i.state === 'idle' || i.state === 'starting')) return;
      const effects = placement.provision(specs[app] as PoolSpec, 'prewarm', now);
      const started = effects.start.map((s) => s.instance);
      apply(invoker, effects, now);
      for (const id of started) if (placement.instance(id)?.state === 'idle') scheduleExpiry(invoker, id, event.keepUntil);
    }
  };

  const arrive = (app: number, count: number, now: number): void => {
    const invoker = choose(app);
    if (!invoker) {
      refused += count;
      return;
    }
    const fn = functionOn(invoker, app);
    // keep-alive.ts's callArrived: the policy learns the idle time, and a pending prewarm is not needed.
    fn.policy.onInvocation(now, fn.inflight === 0 && fn.lastEnd !== undefined ? now - fn.lastEnd : undefined);
    fn.prewarmToken++;
    fn.inflight++;
    const id = nextRun++;
    const run: Run = { app, count, queued: false };
    runs.set(id, run);
    const effects = invoker.placement.arrive(specs[app] as PoolSpec, id, now);
    run.queued = invoker.placement.isWaiting(id);
    apply(invoker, effects, now);
  };

  const byMinute = arrivalsByMinute(apps);
  for (let minute = 0; minute < byMinute.length; minute++) {
    const now = minute * MINUTE_MS;
    for (let next = events.peek(); next && next.time <= now; next = events.peek()) handle(events.pop() as SimEvent);
    for (const app of byMinute[minute] as Int32Array) arrive(app, (apps[app] as TraceApp).perMinute[minute] as number, now);
  }
  // Calls still running or waiting at the end of the trace finish; nothing else changes the counts.
  for (let next = events.peek(); next && runs.size > 0; next = events.peek()) handle(events.pop() as SimEvent);

  const perInvoker = invokers.map((i) => i.invocations);
  const peaks = invokers.map((i) => i.peakMemoryMb);
  const spread = (values: number[]) => {
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    return mean > 0 ? round(Math.max(...values) / mean) : 0;
  };
  return {
    placement: options.placement,
    invokers: options.invokers,
    invokerMemoryMb: Number.isFinite(options.invokerMemoryMb) ? options.invokerMemoryMb : null,
    invocations,
    coldStarts,
    coldStartPct: round(invocations > 0 ? (coldStarts / invocations) * 100 : 0),
    waited,
    evictions,
    refused,
    invocationsMaxOverMean: spread(perInvoker),
    peakMemoryMaxOverMean: spread(peaks),
    peakMemoryMb: Math.max(...peaks),
    ...(options.placement === 'affinity' ? { reasons } : {}),
  };
}

/** The baseline: the whole trace on one invoker with unlimited memory. */
export function simulateSingleHost(apps: readonly TraceApp[], policy: KeepAlivePolicy): ClusterReport {
  return {
    ...simulateCluster(apps, policy, { invokers: 1, invokerMemoryMb: Number.POSITIVE_INFINITY, placement: 'least-loaded' }),
    placement: 'single-host',
  };
}

/**
 * Each invoker's budget when the cluster's memory is `headroom` times the most the single
 * infinitely large host ever held at once, rounded up to 256 MB, and never below the largest app.
 */
export function invokerMemoryFor(
  apps: readonly TraceApp[],
  singleHostPeakMb: number,
  invokers: number,
  headroom: number,
): number {
  const largest = Math.max(0, ...apps.map((a) => a.memoryMb));
  return Math.max(largest, Math.ceil((headroom * singleHostPeakMb) / invokers / 256) * 256);
}

export interface ComparisonOptions {
  /** Invoker counts: one cluster of each size. */
  invokers: readonly number[];
  placements?: readonly PlacementStrategy[] | undefined;
  /** Each invoker's memory; when absent, from `headroom`. */
  invokerMemoryMb?: number | undefined;
  /** The cluster's memory as a multiple of the single host's peak (see `invokerMemoryFor`). */
  headroom?: number | undefined;
  seed?: number | undefined;
  spillLimit?: number | undefined;
}

export interface ClusterRun extends ClusterReport {
  /** Cold starts over the single infinitely large host's. */
  coldStartsVsSingleHost: number;
}

export interface ClusterComparison {
  policy: string;
  headroom: number | null;
  singleHost: ClusterReport;
  runs: ClusterRun[];
}

export const DEFAULT_HEADROOM = 1.5;

/** The single infinitely large host, then every placement on a cluster of each size, under one policy. */
export function compareClusters(
  apps: readonly TraceApp[],
  policy: KeepAlivePolicy,
  options: ComparisonOptions,
  progress: (message: string) => void = () => {},
): ClusterComparison {
  const headroom = options.invokerMemoryMb === undefined ? (options.headroom ?? DEFAULT_HEADROOM) : null;
  progress(`${policy.name}: one infinitely large host`);
  const singleHost = simulateSingleHost(apps, policy);
  const runs: ClusterRun[] = [];
  for (const invokers of options.invokers) {
    const invokerMemoryMb =
      options.invokerMemoryMb ?? invokerMemoryFor(apps, singleHost.peakMemoryMb, invokers, headroom as number);
    for (const placement of options.placements ?? PLACEMENTS) {
      progress(`${policy.name}: ${invokers} invokers of ${invokerMemoryMb} MB, ${placement} placement`);
      const report = simulateCluster(apps, policy, {
        invokers,
        invokerMemoryMb,
        placement,
        seed: options.seed,
        spillLimit: options.spillLimit,
      });
      runs.push({
        ...report,
        coldStartsVsSingleHost: singleHost.coldStarts > 0 ? round(report.coldStarts / singleHost.coldStarts) : 0,
      });
    }
  }
  return { policy: policy.name, headroom, singleHost, runs };
}
