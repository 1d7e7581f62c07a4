import { defaultKindOf, type Isolation, type Kind } from '../core/kinds.js';
import type { RuntimeStart } from '../guest/protocol.js';
import type { Backend, Sandbox, SandboxSpec } from '../sandbox/backend.js';

const REFILL_DELAY_MS = 20;

export interface StemCellTarget {
  isolation: Isolation;
  memoryMb: number;
  /** The kind the blank sandboxes are made for (their image); the backend's first kind when absent. */
  kind?: Kind;
  count: number;
  /** The kind's runtime, started in each blank sandbox ahead of its function (interpreted kinds). */
  runtime?: RuntimeStart;
}

function poolKey(isolation: Isolation, memoryMb: number, kind: Kind | undefined): string {
  return `${isolation}:${memoryMb}:${kind ?? defaultKindOf(isolation)}`;
}

/**
 * Blank sandboxes made ahead of time, before anyone asks for them (OpenWhisk's "stem cell"
 * prewarm containers): a cold start takes one and only has to load the function's code. Each
 * one taken is replaced in the background.
 */
export class StemCells {
  private readonly ready = new Map<string, Sandbox[]>();
  private readonly filling = new Set<string>();
  private readonly refills = new Set<Promise<void>>();
  private closed = false;

  constructor(
    private readonly backends: ReadonlyMap<Isolation, Backend>,
    private readonly targets: readonly StemCellTarget[],
    private readonly onError: (isolation: Isolation, error: unknown) => void = () => {},
  ) {}

  start(): void {
    for (const target of this.targets) this.refill(target);
  }

  /**
   * A blank sandbox for this spec (its isolation, memory size and kind), if one is ready. The
   * caller calls `replenish` once the cold start that took it has loaded its function.
   */
  take(isolation: Isolation, spec: SandboxSpec): Sandbox | undefined {
    // Blank sandboxes are made without a network: one that needs egress is made for it.
    if (spec.network === 'egress') return undefined;
    const cells = this.ready.get(poolKey(isolation, spec.memoryMb, spec.kind));
    let cell = cells?.shift();
    while (cell && !cell.alive) cell = cells?.shift();
    return cell;
  }

  /**
   * Refills the pool this spec takes from, a little later: making a sandbox holds the main thread
   * (a V8 isolate takes ~2 ms to construct) and, on two cores, the CPU, which must not land on
   * the cold start that just took one, so the caller calls this once that has loaded its function.
   */
  replenish(isolation: Isolation, spec: SandboxSpec): void {
    if (spec.network === 'egress') return;
    const key = poolKey(isolation, spec.memoryMb, spec.kind);
    const target = this.targets.find((t) => poolKey(t.isolation, t.memoryMb, t.kind) === key);
    if (target) setTimeout(() => this.refill(target), REFILL_DELAY_MS).unref();
  }

  get size(): number {
    let n = 0;
    for (const cells of this.ready.values()) n += cells.length;
    return n;
  }

  /** Destroys the ready sandboxes, and those still being made once they are. */
  async close(): Promise<void> {
    this.closed = true;
    const all = [...this.ready.values()].flat();
    this.ready.clear();
    await Promise.all([...all.map((s) => s.destroy()), ...this.refills]);
  }

  private refill(target: StemCellTarget): void {
    const key = poolKey(target.isolation, target.memoryMb, target.kind);
    const backend = this.backends.get(target.isolation);
    if (!backend || this.filling.has(key) || this.closed) return;
    this.filling.add(key);
    const refill = (async () => {
      try {
        for (;;) {
          const cells = this.ready.get(key) ?? [];
          this.ready.set(key, cells);
          if (this.closed || cells.length >= target.count) break;
          const sandbox = await backend.create({
            memoryMb: target.memoryMb,
            kind: target.kind ?? defaultKindOf(target.isolation),
            ahead: true,
          });
          if (this.closed) {
            await sandbox.destroy();
            break;
          }
          if (target.runtime) sandbox.prestart?.(target.runtime, target.memoryMb);
          cells.push(sandbox);
        }
      } catch (error) {
        this.onError(target.isolation, error);
      } finally {
        this.filling.delete(key);
      }
    })();
    this.refills.add(refill);
    void refill.finally(() => this.refills.delete(refill));
  }
}
