import { Counter, collectDefaultMetrics, Gauge, Registry } from 'prom-client';
import type { Backend } from '../sandbox/backend.js';
import type { Scheduler } from '../scheduler/scheduler.js';

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The label values of the series that sums up every function without a series of its own. */
export const OTHER_FUNCTIONS = '_other';

interface FunctionLabels {
  namespace: string;
  action: string;
}

/**
 * Which functions have series of their own: the `limit` most recently active ones. Namespaces and
 * action names are chosen by tenants, so without a bound their number of series would be too.
 */
class RecentFunctions {
  private readonly order = new Map<string, FunctionLabels>();
  /** The most recently touched key: touching it again (every call of a busy function) changes nothing. */
  private newest: string | undefined;
  readonly evictions: ((fn: FunctionLabels) => void)[] = [];

  constructor(readonly limit: number) {}

  touch(namespace: string, action: string): void {
    const key = functionKey(namespace, action);
    if (key === this.newest) return;
    const known = this.order.get(key);
    if (known) this.order.delete(key);
    this.order.set(key, known ?? { namespace, action });
    this.newest = key;
    if (this.order.size <= this.limit) return;
    const [oldestKey, oldest] = this.order.entries().next().value as [string, FunctionLabels];
    this.order.delete(oldestKey);
    if (oldestKey === this.newest) this.newest = undefined;
    for (const evict of this.evictions) evict(oldest);
  }

  has(namespace: string, action: string): boolean {
    return this.order.has(functionKey(namespace, action));
  }

  forgetNamespace(namespace: string): void {
    for (const [key, fn] of this.order) if (fn.namespace === namespace) this.order.delete(key);
    if (this.newest !== undefined && !this.order.has(this.newest)) this.newest = undefined;
  }

  /** The labels a function's figures go under: its own, or the summary's. */
  labels(namespace: string, action: string): FunctionLabels {
    return this.has(namespace, action) ? { namespace, action } : { namespace: OTHER_FUNCTIONS, action: OTHER_FUNCTIONS };
  }
}

function functionKey(namespace: string, action: string): string {
  return `${namespace}/${action}`;
}

type FunctionCounterLabels<L extends string> = Record<L | 'namespace' | 'action', string>;

/**
 * A counter per function and other labels, with per-function series bounded by RecentFunctions:
 * when a function drops out of the recent ones, its counts move to the summary series, so that the
 * sum over all series still counts everything.
 */
export class FunctionCounter<L extends string> {
  private readonly series = new Map<string, { labels: FunctionCounterLabels<L>; value: number }>();
  /**
   * The keys of each function's series, so that folding one or counting its total looks at its own
   * few series, not at those of every function (a new function past the recent ones folds another
   * on its first call).
   */
  private readonly byFunction = new Map<string, Set<string>>();

  constructor(
    name: string,
    help: string,
    private readonly labelNames: readonly L[],
    registry: Registry,
    private readonly recent: RecentFunctions,
  ) {
    const series = this.series;
    new Counter({
      name,
      help,
      labelNames: [...labelNames.slice(0, 1), 'namespace', 'action', ...labelNames.slice(1)],
      registers: [registry],
      collect() {
        this.reset();
        for (const { labels, value } of series.values()) this.inc(labels, value);
      },
    });
    recent.evictions.push((fn) => this.fold(fn));
  }

  inc(labels: FunctionCounterLabels<L>, value = 1): void {
    this.recent.touch(labels.namespace, labels.action);
    this.add(labels, value);
  }

  /** The function's count over all its series since the server started (0 once it folded into the summary series). */
  total(namespace: string, action: string): number {
    let sum = 0;
    for (const key of this.byFunction.get(functionKey(namespace, action)) ?? []) sum += this.series.get(key)?.value ?? 0;
    return sum;
  }

  /** Drops a deleted namespace's series. */
  forgetNamespace(namespace: string): void {
    // A namespace's name has no slash, so its functions' keys are exactly those starting with it and one.
    const prefix = functionKey(namespace, '');
    for (const [fn, keys] of this.byFunction) {
      if (!fn.startsWith(prefix)) continue;
      for (const key of keys) this.series.delete(key);
      this.byFunction.delete(fn);
    }
  }

  private add(labels: FunctionCounterLabels<L>, value: number): void {
    // Built with a loop: on every call's path, where the arrays of a spread and join showed.
    let key = `${labels.namespace}\u0000${labels.action}`;
    for (const name of this.labelNames) key += `\u0000${labels[name]}`;
    const entry = this.series.get(key);
    if (entry) {
      entry.value += value;
      return;
    }
    this.series.set(key, { labels: { ...labels }, value });
    const fn = functionKey(labels.namespace, labels.action);
    const keys = this.byFunction.get(fn);
    if (keys) keys.add(key);
    else this.byFunction.set(fn, new Set([key]));
  }

  private fold(fn: FunctionLabels): void {
    const name = functionKey(fn.namespace, fn.action);
    const keys = this.byFunction.get(name);
    if (!keys) return;
    this.byFunction.delete(name);
    for (const key of keys) {
      const entry = this.series.get(key);
      if (!entry) continue;
      this.series.delete(key);
      this.add({ ...entry.labels, namespace: OTHER_FUNCTIONS, action: OTHER_FUNCTIONS }, entry.value);
    }
  }
}

/**
 * A histogram by backend (`isolation`), in prom-client's exposition, counted here: prom-client's
 * observe() hashes and checks its labels on every call, about a microsecond each, and every
 * invocation makes two. Registered in the registry as any metric; metrics.test.ts checks that its
 * text is prom-client's Histogram's for the same observations.
 */
export class IsolationHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  private readonly series = new Map<string, { buckets: number[]; sum: number; count: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly upperBounds: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as unknown as Parameters<Registry['registerMetric']>[0]);
  }

  observe(isolation: string, value: number): void {
    if (!Number.isFinite(value)) return;
    let entry = this.series.get(isolation);
    if (!entry) {
      entry = { buckets: this.upperBounds.map(() => 0), sum: 0, count: 0 };
      this.series.set(isolation, entry);
    }
    const bounds = this.upperBounds;
    for (let i = 0; i < bounds.length; i++) {
      if (value <= (bounds[i] as number)) {
        (entry.buckets[i] as number)++;
        break;
      }
    }
    entry.sum += value;
    entry.count++;
  }

  /** What the registry formats: cumulative buckets, +Inf, sum and count per backend. */
  async get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const [isolation, { buckets, sum, count }] of this.series) {
      let cumulative = 0;
      this.upperBounds.forEach((bound, i) => {
        cumulative += buckets[i] as number;
        values.push({ labels: { le: bound, isolation }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { le: '+Inf', isolation }, value: count, metricName: `${this.name}_bucket` });
      values.push({ labels: { isolation }, value: sum, metricName: `${this.name}_sum` });
      values.push({ labels: { isolation }, value: count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    this.series.clear();
  }
}

export interface MetricsOptions {
  /** Functions with series of their own (the most recently active); the rest are summed under `_other`. */
  functions?: number;
}

/** The platform's Prometheus metrics, in a registry of its own. */
export class Metrics {
  readonly registry = new Registry();
  private readonly recent: RecentFunctions;
  readonly activations: FunctionCounter<'isolation' | 'status'>;
  readonly starts: FunctionCounter<'isolation' | 'start'>;
  readonly duration = new IsolationHistogram(
    'isola_activation_duration_seconds',
    'Activation duration, initialisation included.',
    SECONDS_BUCKETS,
    this.registry,
  );
  readonly initTime = new IsolationHistogram(
    'isola_init_duration_seconds',
    'Time to create a sandbox and load the function on a cold start.',
    SECONDS_BUCKETS,
    this.registry,
  );
  readonly waitTime = new IsolationHistogram(
    'isola_wait_duration_seconds',
    'Time an invocation waited before its instance was chosen.',
    SECONDS_BUCKETS,
    this.registry,
  );

  constructor(scheduler: Scheduler, options: MetricsOptions = {}) {
    const recent = new RecentFunctions(options.functions ?? 100);
    this.recent = recent;
    this.activations = new FunctionCounter(
      'isola_activations_total',
      `Finished activations by backend, function and status (the ${recent.limit} most recently active functions; the others summed under namespace and action "${OTHER_FUNCTIONS}").`,
      ['isolation', 'status'],
      this.registry,
      recent,
    );
    this.starts = new FunctionCounter(
      'isola_starts_total',
      'How invocations found their instance: cold (a new one was started), stemcell (a cold start on a blank sandbox made ahead), restore (from a snapshot of the function), warm, or prewarm (the first call on an instance the keep-alive policy started ahead, or a provisioned one).',
      ['isolation', 'start'],
      this.registry,
      recent,
    );
    collectDefaultMetrics({ register: this.registry, prefix: 'isola_process_' });
    new Gauge({
      name: 'isola_instances',
      help: 'Live instances by backend and state.',
      labelNames: ['isolation', 'state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const entry of scheduler.stats().instances)
          this.set({ isolation: entry.isolation, state: entry.state }, entry.count);
      },
    });
    new Gauge({
      name: 'isola_function_instances',
      help: 'Live instances of each function by state.',
      labelNames: ['namespace', 'action', 'state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const fn of scheduler.stats().functions) {
          for (const entry of fn.instances)
            this.inc({ ...recent.labels(fn.namespace, fn.action), state: entry.state }, entry.count);
        }
      },
    });
    new Gauge({
      name: 'isola_function_queue_length',
      help: 'Invocations of each function waiting for an instance.',
      labelNames: ['namespace', 'action'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const fn of scheduler.stats().functions) this.inc(recent.labels(fn.namespace, fn.action), fn.queued);
      },
    });
    new Gauge({
      name: 'isola_memory_used_megabytes',
      help: 'Memory limits of live instances, summed.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().memoryUsedMb);
      },
    });
    new Gauge({
      name: 'isola_memory_budget_megabytes',
      help: 'The memory budget for instances.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().memoryBudgetMb);
      },
    });
    new Gauge({
      name: 'isola_queue_length',
      help: 'Invocations waiting for an instance.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().queued);
      },
    });
    new Gauge({
      name: 'isola_prewarmed_sandboxes',
      help: 'Blank sandboxes made ahead of demand.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().stemCells);
      },
    });
  }

  /** Adds a backend's own series (see Backend.registerMetrics), once it is ready. */
  /** A controller's: the cluster's invokers as it last heard of them, by health. */
  addClusterInvokers(current: () => readonly { draining: boolean }[]): void {
    new Gauge({
      name: 'isola_cluster_invokers',
      help: "The cluster's live invokers as this controller sees them: healthy (taking calls) or draining.",
      labelNames: ['health'] as const,
      registers: [this.registry],
      collect() {
        const invokers = current();
        const draining = invokers.filter((invoker) => invoker.draining).length;
        this.set({ health: 'healthy' }, invokers.length - draining);
        this.set({ health: 'draining' }, draining);
      },
    });
  }

  addBackend(backend: Backend): void {
    backend.registerMetrics?.(this.registry);
  }

  /** A function was deployed: it counts as active, so its instances (provisioned ones too) show under its own name. */
  noteDeployed(namespace: string, action: string): void {
    this.recent.touch(namespace, action);
  }

  /** Forgets a deleted namespace's functions. */
  forgetNamespace(namespace: string): void {
    this.recent.forgetNamespace(namespace);
    this.activations.forgetNamespace(namespace);
    this.starts.forgetNamespace(namespace);
  }
}
