import type { Isolation } from '../core/kinds.js';
import type { ActionVersion } from '../core/types.js';
import { type Backend, functionCodeOf, type InitOutcome, type LogSink, type Sandbox } from '../sandbox/backend.js';
import { Instance, type InstanceState } from './instance.js';
import { StemCells, type StemCellTarget } from './stem-cells.js';

export interface SchedulerOptions {
  backends: ReadonlyMap<Isolation, Backend>;
  /** Sum of the memory limits of live instances may not exceed this (OpenWhisk's user memory). */
  memoryBudgetMb: number;
  /** An idle instance is removed after this long without work. */
  keepAliveMs: number;
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
  /** The sandbox was made ahead of time (a stem cell). */
  readonly prewarmed: boolean;
  /** The sandbox was restored from a snapshot of the function taken after its initialisation. */
  readonly restored: boolean;
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

interface Waiter {
  pool: Pool;
  arrived: number;
  onLog: LogSink;
  settled: boolean;
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
}

export interface SchedulerStats {
  memoryBudgetMb: number;
  memoryUsedMb: number;
  queued: number;
  stemCells: number;
  instances: { isolation: Isolation; state: InstanceState; count: number }[];
}

export function poolKey(action: Pick<ActionVersion, 'namespace' | 'name' | 'version'>): string {
  return `${action.namespace}/${action.name}@${action.version}`;
}

/**
 * Places invocations on instances: reuses a warm one, starts one when memory allows, evicts idle
 * instances to make room, and queues the rest. It knows instances and their states, never how a
 * backend makes a sandbox.
 */
export class Scheduler {
  private readonly pools = new Map<string, Pool>();
  private memoryWaiters: Waiter[] = [];
  private memoryUsedMb = 0;
  private readonly stemCells: StemCells;
  private closed = false;

  constructor(private readonly options: SchedulerOptions) {
    this.stemCells = new StemCells(options.backends, options.stemCells ?? [], (isolation, error) =>
      options.onBackgroundError?.(`prewarming a ${isolation} sandbox failed`, error),
    );
    this.stemCells.start();
  }

  /** Finds or starts an instance for this version. Throws InitFailure or CapacityError. */
  acquire(action: ActionVersion, onLog: LogSink): Promise<Lease> {
    const arrived = Date.now();
    if (this.closed) return Promise.reject(new CapacityError('The platform is shutting down.'));
    const pool = this.poolFor(action);
    const warm = pool.pickInstance();
    if (warm) return Promise.resolve(this.assign(warm, arrived));
    const memory = action.limits.memory;
    if (memory > this.options.memoryBudgetMb) {
      this.dropPoolIfEmpty(pool);
      return Promise.reject(
        new CapacityError(`The action needs ${memory} MB but this host's memory budget is ${this.options.memoryBudgetMb} MB.`),
      );
    }
    if (this.memoryWaiters.length === 0 && this.reserve(memory)) return this.startInstance(pool, arrived, onLog);
    return new Promise<Lease>((resolve, reject) => {
      const waiter: Waiter = {
        pool,
        arrived,
        onLog,
        settled: false,
        resolve,
        reject,
        timer: setTimeout(() => {
          waiter.settled = true;
          this.forgetWaiter(waiter);
          reject(new CapacityError(`No capacity to run the action within ${this.options.queueTimeoutMs} ms.`));
        }, this.options.queueTimeoutMs),
      };
      pool.waiters.push(waiter);
      this.memoryWaiters.push(waiter);
    });
  }

  /** Gives an instance back after a run. An unhealthy one (timed out, crashed) is replaced. */
  release(lease: Lease, healthy: boolean): void {
    const instance = lease.instance;
    instance.inflight--;
    instance.lastUsed = Date.now();
    if (!healthy || !instance.sandbox?.alive) {
      this.stop(instance, 'Failed');
      return;
    }
    instance.fire(instance.inflight === 0 ? 'Released' : 'RunEnded');
    const pool = this.pools.get(instance.poolKey);
    while (pool && pool.waiters.length > 0 && instance.hasCapacity) {
      const waiter = pool.waiters.shift() as Waiter;
      if (waiter.settled) continue;
      this.settle(waiter, this.assign(instance, waiter.arrived));
    }
    if (instance.state === 'idle') {
      if (pool?.draining) this.stop(instance, 'Retired');
      else {
        this.scheduleKeepAlive(instance);
        // Invocations of other functions waiting for memory may evict this now idle instance.
        this.wakeMemoryWaiters();
      }
    }
  }

  /** Drains every version of an action except `keep`: idle instances go now, busy ones when done. */
  retireVersions(namespace: string, name: string, keep?: string): void {
    for (const pool of this.pools.values()) {
      const a = pool.action;
      if (a.namespace !== namespace || a.name !== name || a.version === keep) continue;
      pool.draining = true;
      for (const instance of [...pool.instances]) if (instance.state === 'idle') this.stop(instance, 'Retired');
      this.dropPoolIfEmpty(pool);
    }
  }

  stats(): SchedulerStats {
    const counts = new Map<string, { isolation: Isolation; state: InstanceState; count: number }>();
    let queued = 0;
    for (const pool of this.pools.values()) {
      queued += pool.waiters.filter((w) => !w.settled).length;
      for (const instance of pool.instances) {
        const key = `${instance.isolation}:${instance.state}`;
        const entry = counts.get(key) ?? { isolation: instance.isolation, state: instance.state, count: 0 };
        entry.count++;
        counts.set(key, entry);
      }
    }
    return {
      memoryBudgetMb: this.options.memoryBudgetMb,
      memoryUsedMb: this.memoryUsedMb,
      queued,
      stemCells: this.stemCells.size,
      instances: [...counts.values()],
    };
  }

  /** Instances of one version, for tests and the dashboard. */
  instancesOf(action: Pick<ActionVersion, 'namespace' | 'name' | 'version'>): readonly Instance[] {
    return [...(this.pools.get(poolKey(action))?.instances ?? [])];
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const waiter of this.memoryWaiters) {
      if (!waiter.settled) {
        waiter.settled = true;
        clearTimeout(waiter.timer);
        waiter.reject(new CapacityError('The platform is shutting down.'));
      }
    }
    this.memoryWaiters = [];
    const sandboxes: Sandbox[] = [];
    for (const pool of this.pools.values()) {
      for (const instance of pool.instances) {
        clearTimeout(instance.keepAliveTimer);
        if (instance.sandbox) sandboxes.push(instance.sandbox);
      }
    }
    this.pools.clear();
    await Promise.all([...sandboxes.map((s) => s.destroy()), this.stemCells.close()]);
  }

  private poolFor(action: ActionVersion): Pool {
    const key = poolKey(action);
    let pool = this.pools.get(key);
    if (!pool) {
      pool = new Pool(key, action);
      this.pools.set(key, pool);
    }
    return pool;
  }

  private assign(instance: Instance, arrived: number, cold?: { initMs: number; startedAt: number; restored: boolean }): Lease {
    clearTimeout(instance.keepAliveTimer);
    instance.fire('Assigned');
    instance.inflight++;
    const now = Date.now();
    return {
      instance,
      sandbox: instance.sandbox as Sandbox,
      cold: cold !== undefined,
      prewarmed: cold !== undefined && instance.prewarmed,
      restored: cold?.restored ?? false,
      initMs: cold?.initMs ?? 0,
      waitMs: cold ? cold.startedAt - arrived : now - arrived,
      startedAt: cold?.startedAt ?? now,
    };
  }

  private async startInstance(pool: Pool, arrived: number, onLog: LogSink): Promise<Lease> {
    const action = pool.action;
    const instance = new Instance(pool.key, action.isolation, action.limits.memory, action.limits.concurrency);
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
      this.stop(instance, 'Failed');
      throw new CapacityError('The platform is shutting down.');
    }
    return this.assign(instance, arrived, { initMs: Date.now() - startedAt, startedAt, restored });
  }

  private scheduleKeepAlive(instance: Instance): void {
    clearTimeout(instance.keepAliveTimer);
    instance.keepAliveTimer = setTimeout(() => {
      if (instance.state === 'idle') this.stop(instance, 'Retired');
    }, this.options.keepAliveMs);
    instance.keepAliveTimer.unref();
  }

  private stop(instance: Instance, event: 'Retired' | 'Failed'): void {
    clearTimeout(instance.keepAliveTimer);
    instance.fire(event);
    const sandbox = instance.sandbox;
    this.forgetInstance(instance);
    void (async () => {
      try {
        await sandbox?.destroy();
      } catch (error) {
        this.options.onBackgroundError?.(`stopping instance ${instance.id} failed`, error);
      }
      instance.fire('Stopped');
    })();
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

  private wakeMemoryWaiters(): void {
    while (this.memoryWaiters.length > 0) {
      const waiter = this.memoryWaiters[0] as Waiter;
      if (waiter.settled) {
        this.memoryWaiters.shift();
        continue;
      }
      const warm = waiter.pool.pickInstance();
      if (warm) {
        this.memoryWaiters.shift();
        this.settle(waiter, this.assign(warm, waiter.arrived));
        continue;
      }
      if (!this.reserve(waiter.pool.action.limits.memory)) return;
      this.memoryWaiters.shift();
      this.settle(waiter, this.startInstance(waiter.pool, waiter.arrived, waiter.onLog));
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
    this.memoryWaiters = this.memoryWaiters.filter((w) => w !== waiter);
    this.dropPoolIfEmpty(waiter.pool);
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
