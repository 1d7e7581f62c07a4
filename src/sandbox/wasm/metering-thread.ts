import { Worker } from 'node:worker_threads';

/** A metering job that takes longer than this is given up (the module runs on workers only). */
const JOB_TIMEOUT_MS = 30_000;
/** The thread is ended once idle this long: WABT's heap is large and kept while it lives. */
const IDLE_MS = 30_000;

/**
 * Makes metered copies of modules on a thread of its own (meter-worker.ts), started when a copy is
 * first asked for and ended when idle. Resolves to undefined for a module that cannot be metered,
 * and when the thread fails or takes too long: then the module keeps running on workers.
 */
export class MeteringThread {
  private worker: Worker | undefined;
  private nextId = 0;
  private readonly pending = new Map<number, (bytes: Uint8Array | undefined) => void>();
  private idleTimer: NodeJS.Timeout | undefined;

  constructor(private readonly script: string) {}

  meter(bytes: Uint8Array): Promise<Uint8Array | undefined> {
    const worker = this.start();
    clearTimeout(this.idleTimer);
    const id = ++this.nextId;
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.stop(), JOB_TIMEOUT_MS);
      this.pending.set(id, (result) => {
        clearTimeout(timer);
        resolve(result);
      });
      worker.postMessage({ id, bytes });
    });
  }

  close(): Promise<void> {
    return this.stop();
  }

  private start(): Worker {
    if (this.worker) return this.worker;
    const worker = new Worker(this.script);
    worker.unref();
    worker.on('message', (message: { id: number; bytes?: Uint8Array }) => {
      this.settle(message.id, message.bytes);
      if (this.pending.size === 0) {
        this.idleTimer = setTimeout(() => void this.stop(), IDLE_MS);
        this.idleTimer.unref();
      }
    });
    worker.on('error', () => void this.stop());
    worker.on('exit', () => {
      if (this.worker === worker) this.worker = undefined;
      for (const id of [...this.pending.keys()]) this.settle(id, undefined);
    });
    this.worker = worker;
    return worker;
  }

  private settle(id: number, bytes: Uint8Array | undefined): void {
    const resolve = this.pending.get(id);
    this.pending.delete(id);
    resolve?.(bytes);
  }

  private async stop(): Promise<void> {
    clearTimeout(this.idleTimer);
    const worker = this.worker;
    this.worker = undefined;
    for (const id of [...this.pending.keys()]) this.settle(id, undefined);
    if (worker) await worker.terminate();
  }
}
