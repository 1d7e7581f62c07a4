import type { Store } from './store.js';

export interface RetentionSettings {
  /** Finished activations older than this go; 0 keeps them whatever their age. */
  maxAgeMs: number;
  /** At most this many finished activations are kept per namespace; 0 for no limit. */
  perNamespace: number;
  /** Time between two passes. */
  intervalMs: number;
  /** Rows deleted at a time; the event loop serves requests between two batches. */
  batchSize?: number;
}

const DEFAULT_BATCH = 250;

/**
 * Prunes finished activations in the background, per namespace, by age and by count. It works in
 * small batches and yields between them, so that requests are never held up by more than one
 * small delete; queued and running activations are never pruned.
 */
export class ActivationRetention {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<unknown> | undefined;
  private stopped = false;

  constructor(
    private readonly store: Store,
    private readonly settings: RetentionSettings,
    private readonly warn: (message: string) => void = () => {},
  ) {}

  get enabled(): boolean {
    return this.settings.maxAgeMs > 0 || this.settings.perNamespace > 0;
  }

  start(): void {
    if (this.enabled && !this.stopped) this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.running;
  }

  private schedule(): void {
    this.timer = setTimeout(() => {
      this.running = this.pass()
        .catch((error: unknown) =>
          this.warn(`pruning activations failed: ${error instanceof Error ? error.message : String(error)}`),
        )
        .finally(() => {
          this.running = undefined;
          if (!this.stopped) this.schedule();
        });
    }, this.settings.intervalMs);
    this.timer.unref();
  }

  /** One pass over every namespace; returns how many activations were pruned. */
  async pass(): Promise<number> {
    const batch = this.settings.batchSize ?? DEFAULT_BATCH;
    let pruned = 0;
    let namespace = await this.store.nextNamespaceWithActivations(undefined);
    while (namespace !== undefined && !this.stopped) {
      if (this.settings.maxAgeMs > 0) {
        const before = Date.now() - this.settings.maxAgeMs;
        pruned += await this.drain(() => this.store.pruneActivations(namespace as string, { before }, batch), batch);
      }
      if (this.settings.perNamespace > 0) {
        const through = await this.store.activationCountBoundary(namespace, this.settings.perNamespace);
        if (through)
          pruned += await this.drain(() => this.store.pruneActivations(namespace as string, { through }, batch), batch);
      }
      await nextTurn();
      namespace = await this.store.nextNamespaceWithActivations(namespace);
    }
    return pruned;
  }

  /** Runs a batch delete until a batch comes back short, letting other work run in between. */
  private async drain(deleteBatch: () => Promise<number>, batch: number): Promise<number> {
    let total = 0;
    while (!this.stopped) {
      const deleted = await deleteBatch();
      total += deleted;
      if (deleted < batch) break;
      await nextTurn();
    }
    return total;
  }
}

/** Lets the event loop serve what is waiting (SQLite's calls are synchronous underneath). */
function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
