import { Worker } from 'node:worker_threads';
import type { LogSink, RunOutcome } from '../backend.js';
import type { RunMessage, WorkerMessage, WorkerOutcome } from './messages.js';

// Mirrors the worker's own module cache (insertion order, no refresh) so the host knows when it
// must send the compiled module along.
const WORKER_MODULE_CACHE = 64;
// Workers added beyond the pool's size while it was busy go again after this long idle.
const EXTRA_WORKER_IDLE_MS = 10_000;
/**
 * A run on a worker this long is a long run: the pool adds a worker for each, so that it does not
 * hold up the runs waiting behind it. Short runs queue instead: measured here, growing to eight
 * workers on two cores under many short runs took a scratch run from 1.5 to 2.2 ms of CPU and
 * the pool's throughput down by 40% (threads competing for the cores, new workers cold).
 */
export const LONG_RUN_MS = 50;

interface Job {
  message: Omit<RunMessage, 'module'>;
  module: WebAssembly.Module;
  deadline: number;
  onLog: LogSink;
  /** Told how long a run that ended on its own took on the worker; Infinity for a timeout or a crash. */
  measured: ((ms: number) => void) | undefined;
  resolve: (outcome: RunOutcome) => void;
  queueTimer?: NodeJS.Timeout;
}

class Slot {
  readonly worker: Worker;
  readonly ready: Promise<boolean>;
  readonly modules: string[] = [];
  job: Job | undefined;
  /** When the current job started (performance.now()). */
  startedAt = 0;
  runTimer: NodeJS.Timeout | undefined;
  idleTimer: NodeJS.Timeout | undefined;
  dead = false;

  constructor(script: string) {
    this.worker = new Worker(script, { stdout: false, stderr: false, env: {}, execArgv: [] });
    this.worker.unref();
    this.ready = new Promise((resolve) => {
      const onMessage = (message: WorkerMessage) => {
        if (message.type === 'ready') {
          this.worker.off('message', onMessage);
          resolve(true);
        }
      };
      this.worker.on('message', onMessage);
      this.worker.once('error', () => resolve(false));
      this.worker.once('exit', () => resolve(false));
    });
  }

  hasModule(key: string): boolean {
    return this.modules.includes(key);
  }

  rememberModule(key: string): void {
    this.modules.push(key);
    if (this.modules.length > WORKER_MODULE_CACHE) this.modules.shift();
  }
}

/** A worker's outcome as the platform's: the module's JSON text parsed here. */
export function runOutcome(outcome: WorkerOutcome): RunOutcome {
  if (outcome.kind !== 'json') return outcome;
  if (outcome.text.trim() === '') return { kind: 'result', result: {} };
  try {
    return { kind: 'result', result: JSON.parse(outcome.text) };
  } catch {
    return { kind: 'error', error: `${outcome.source} that is not JSON: ${outcome.text.slice(0, 200)}` };
  }
}

/**
 * Worker threads that run wasm invocations, one at a time each. A run that overruns its deadline
 * has its worker terminated (nothing else stops a loop in wasm) and a spare, started ahead of
 * time, takes the worker's place. When every worker is busy a run waits for one; but for every
 * run that has been going LONG_RUN_MS or more (a busy loop waiting for its timeout, say) the pool
 * may grow by a worker, up to `maxSize`, so that long runs share the CPU with the others instead
 * of making them queue; the extra workers go again once idle.
 */
export class WorkerPool {
  private readonly slots: Slot[] = [];
  private spare: Slot | undefined;
  private readonly queue: Job[] = [];
  private closed = false;
  /** Looks again, while runs wait, for long runs to grow the pool for. */
  private growTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly script: string,
    readonly size: number,
    readonly maxSize = size * 4,
  ) {
    for (let i = 0; i < size; i++) this.slots.push(this.spawn());
    this.spare = this.spawn();
  }

  /** Workers now, extra ones included (not the spare). */
  get workers(): number {
    return this.slots.length;
  }

  /** Waits until the workers have started; false if they cannot. */
  async ready(): Promise<boolean> {
    const results = await Promise.all(this.slots.map((s) => s.ready));
    return results.every(Boolean);
  }

  run(
    message: Omit<RunMessage, 'module'>,
    module: WebAssembly.Module,
    deadline: number,
    onLog: LogSink,
    measured?: (ms: number) => void,
  ): Promise<RunOutcome> {
    return new Promise((resolve) => {
      const job: Job = { message, module, deadline, onLog, measured, resolve };
      const free = this.pick(message.key) ?? this.growForLongRuns();
      if (free) {
        this.start(free, job);
        return;
      }
      job.queueTimer = setTimeout(
        () => {
          const index = this.queue.indexOf(job);
          if (index >= 0) this.queue.splice(index, 1);
          resolve({ kind: 'timeout' });
        },
        Math.max(0, deadline - Date.now()),
      );
      this.queue.push(job);
      this.watchForLongRuns();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.growTimer);
    for (const job of this.queue.splice(0)) {
      clearTimeout(job.queueTimer);
      job.resolve({ kind: 'crash', reason: 'The platform is shutting down.' });
    }
    const all = [...this.slots, ...(this.spare ? [this.spare] : [])];
    this.slots.length = 0;
    await Promise.all(
      all.map(async (slot) => {
        slot.dead = true;
        clearTimeout(slot.runTimer);
        clearTimeout(slot.idleTimer);
        slot.job?.resolve({ kind: 'crash', reason: 'The platform is shutting down.' });
        await slot.worker.terminate();
      }),
    );
  }

  private spawn(): Slot {
    const slot = new Slot(this.script);
    slot.worker.on('message', (message: WorkerMessage) => this.onMessage(slot, message));
    slot.worker.on('error', (error) => this.retire(slot, { kind: 'crash', reason: `The wasm worker failed: ${error.message}` }));
    // A message that cannot be deserialised would otherwise vanish and leave its run waiting for
    // its timeout.
    slot.worker.on('messageerror', (error) =>
      this.retire(slot, { kind: 'crash', reason: `The wasm worker's answer could not be read: ${error.message}` }),
    );
    slot.worker.on('exit', () => this.retire(slot, { kind: 'crash', reason: 'The wasm worker exited.' }));
    return slot;
  }

  /** An idle worker, preferring one that already has the module. */
  private pick(key: string): Slot | undefined {
    let fallback: Slot | undefined;
    for (const slot of this.slots) {
      if (slot.job || slot.dead) continue;
      if (slot.hasModule(key)) return slot;
      fallback ??= slot;
    }
    return fallback;
  }

  /**
   * Adds a worker (the spare, which is ready) if runs of LONG_RUN_MS or more hold more workers
   * than were added for them, while below the maximum.
   */
  private growForLongRuns(): Slot | undefined {
    if (this.closed || this.slots.length >= this.maxSize) return undefined;
    const now = performance.now();
    let longRuns = 0;
    for (const slot of this.slots) if (slot.job && !slot.dead && now - slot.startedAt >= LONG_RUN_MS) longRuns++;
    if (this.slots.length >= this.size + longRuns) return undefined;
    const slot = this.spare ?? this.spawn();
    this.spare = this.spawn();
    this.slots.push(slot);
    return slot;
  }

  /** While runs wait, checks again when the youngest busy run would count as long. */
  private watchForLongRuns(): void {
    if (this.growTimer || this.closed || this.queue.length === 0 || this.slots.length >= this.maxSize) return;
    const now = performance.now();
    let youngest = Number.POSITIVE_INFINITY;
    for (const slot of this.slots) {
      if (slot.job && !slot.dead && now - slot.startedAt < LONG_RUN_MS) youngest = Math.min(youngest, now - slot.startedAt);
    }
    const wait = Number.isFinite(youngest) ? LONG_RUN_MS - youngest : LONG_RUN_MS;
    this.growTimer = setTimeout(() => {
      this.growTimer = undefined;
      this.drain();
      this.watchForLongRuns();
    }, Math.ceil(wait));
    this.growTimer.unref();
  }

  /** Lets an extra worker go once it has been idle for a while. */
  private shrinkLater(slot: Slot): void {
    if (this.slots.length <= this.size || slot.dead) return;
    clearTimeout(slot.idleTimer);
    slot.idleTimer = setTimeout(() => {
      if (slot.job || slot.dead || this.slots.length <= this.size) return;
      slot.dead = true;
      this.slots.splice(this.slots.indexOf(slot), 1);
      void slot.worker.terminate();
    }, EXTRA_WORKER_IDLE_MS);
    slot.idleTimer.unref();
  }

  private start(slot: Slot, job: Job): void {
    clearTimeout(slot.idleTimer);
    slot.job = job;
    slot.startedAt = performance.now();
    const remaining = job.deadline - Date.now();
    if (remaining <= 0) {
      this.finish(slot, { kind: 'timeout' });
      return;
    }
    slot.runTimer = setTimeout(() => this.retire(slot, { kind: 'timeout' }), remaining);
    const sendModule = !slot.hasModule(job.message.key);
    if (sendModule) slot.rememberModule(job.message.key);
    slot.worker.postMessage({ ...job.message, ...(sendModule ? { module: job.module } : {}) } satisfies RunMessage);
  }

  private onMessage(slot: Slot, message: WorkerMessage): void {
    const job = slot.job;
    if (!job) return;
    if (message.type === 'log' && message.id === job.message.id) job.onLog(message.stream, message.text);
    else if (message.type === 'done' && message.id === job.message.id) {
      job.measured?.(message.ms);
      this.finish(slot, runOutcome(message.outcome));
    }
  }

  private finish(slot: Slot, outcome: RunOutcome): void {
    const job = slot.job;
    clearTimeout(slot.runTimer);
    slot.job = undefined;
    job?.resolve(outcome);
    this.drain();
    if (!slot.job) this.shrinkLater(slot);
  }

  /** Ends a worker (deadline passed, or it died) and puts the spare in its place. */
  private retire(slot: Slot, outcome: RunOutcome): void {
    if (slot.dead) return;
    slot.dead = true;
    clearTimeout(slot.runTimer);
    clearTimeout(slot.idleTimer);
    const job = slot.job;
    slot.job = undefined;
    void slot.worker.terminate();
    job?.measured?.(Number.POSITIVE_INFINITY);
    const index = this.slots.indexOf(slot);
    if (!this.closed) {
      if (slot === this.spare) this.spare = this.spawn();
      else if (index >= 0) {
        this.slots[index] = this.spare ?? this.spawn();
        this.spare = this.spawn();
      }
    }
    job?.resolve(outcome);
    this.drain();
  }

  private drain(): void {
    while (this.queue.length > 0) {
      const job = this.queue[0] as Job;
      const slot = this.pick(job.message.key) ?? this.growForLongRuns();
      if (!slot) return;
      this.queue.shift();
      clearTimeout(job.queueTimer);
      this.start(slot, job);
    }
  }
}
