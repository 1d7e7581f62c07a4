/**
 * The life of one instance: a sandbox loaded with one version of one function, and the runs on
 * it (after OpenWhisk's `ContainerProxy`).
 *
 *   starting --Started--> idle --Assigned--> busy --RunEnded(last, healthy)--> idle
 *   starting --StartFailed--> stopped
 *   busy --Assigned--> busy (concurrency > 1)     busy --RunEnded(others left, healthy)--> busy
 *   busy --RunEnded(unhealthy: timed out, crashed)--> stopping, its other runs still on it
 *   idle --Retired--> stopping (keep-alive expired, evicted for memory, old version drained)
 *   starting|idle|busy --Died|Stop--> stopping (its sandbox died; shutdown)
 *   stopping --Stopped--> stopped
 *
 * Every event is handled in every state. Like OpenWhisk's `Removing`, `stopping` and `stopped`
 * absorb what can still arrive once an instance is on its way out: the other runs on it ending
 * late, its sandbox's death being noticed, a start that finishes after shutdown began. Events
 * that mean nothing in a state (a second release of the same run, retiring a busy instance,
 * which goes when its version drains) are ignored; assigning a run to an instance with no room
 * is refused, and the caller decides what a refusal means.
 */
export type InstanceState = 'starting' | 'idle' | 'busy' | 'stopping' | 'stopped';

export type InstanceEvent =
  | { type: 'Started' }
  | { type: 'StartFailed' }
  | { type: 'Assigned'; run: number }
  | { type: 'RunEnded'; run: number; healthy: boolean }
  | { type: 'Retired' }
  | { type: 'Died' }
  | { type: 'Stop' }
  | { type: 'Stopped' };

export type InstanceEventType = InstanceEvent['type'];

/** How an instance took an event: it changed, ignored it (late or meaningless), or refused it. */
export type Reaction = 'changed' | 'ignored' | 'refused';

export const INSTANCE_STATES: readonly InstanceState[] = ['starting', 'idle', 'busy', 'stopping', 'stopped'];

export type InstanceOrigin = 'demand' | 'prewarm' | 'provisioned';

/** States in which an instance holds memory and counts against its function's maximum. */
export function isLive(state: InstanceState): boolean {
  return state === 'starting' || state === 'idle' || state === 'busy';
}

export class Instance {
  state: InstanceState = 'starting';
  private readonly active = new Set<number>();

  constructor(
    readonly id: number,
    /** The version's pool key. */
    readonly pool: string,
    readonly memoryMb: number,
    /** Runs it may have at once. */
    readonly concurrency: number,
    /** Started for a waiting call, by the keep-alive policy's prewarm, or to provision. */
    readonly origin: InstanceOrigin,
    /** When it last finished a run (or was made). */
    public lastUsed: number,
    /** The waiter it is being started for, until it has started. */
    public starter: number | undefined,
  ) {}

  /** Runs on it now, including those still ending on an instance on its way out. */
  get runs(): ReadonlySet<number> {
    return this.active;
  }

  get inflight(): number {
    return this.active.size;
  }

  /** Can take another run now. */
  get hasRoom(): boolean {
    return (this.state === 'idle' || this.state === 'busy') && this.active.size < this.concurrency;
  }

  handle(event: InstanceEvent): Reaction {
    const state = this.state;
    switch (event.type) {
      case 'Started':
        return state === 'starting' ? this.move('idle') : 'ignored';
      case 'StartFailed':
        return state === 'starting' ? this.move('stopped') : 'ignored';
      case 'Assigned':
        if (!this.hasRoom || this.active.has(event.run)) return 'refused';
        this.active.add(event.run);
        return this.move('busy');
      case 'RunEnded': {
        if (!this.active.delete(event.run)) return 'ignored';
        // On its way out, a run ending changes nothing but the runs left.
        if (state !== 'busy') return 'ignored';
        if (!event.healthy) return this.move('stopping');
        return this.move(this.active.size === 0 ? 'idle' : 'busy');
      }
      case 'Retired':
        return state === 'idle' ? this.move('stopping') : 'ignored';
      case 'Died':
      case 'Stop':
        return isLive(state) ? this.move('stopping') : 'ignored';
      case 'Stopped':
        // The sandbox is gone, whatever was believed of it.
        return state === 'stopped' ? 'ignored' : this.move('stopped');
    }
  }

  private move(next: InstanceState): Reaction {
    this.state = next;
    return 'changed';
  }
}
