import type { Isolation } from '../core/kinds.js';
import type { Sandbox } from '../sandbox/backend.js';

/**
 * The life of one instance: a sandbox loaded with one version of one function.
 *
 *   starting --Started--> idle --Assigned--> busy --Released--> idle
 *   starting --StartFailed--> stopped
 *   busy --Assigned--> busy (concurrency > 1)     busy --RunEnded--> busy (others still running)
 *   idle --Retired--> stopping (keep-alive expired, evicted for memory, old version drained)
 *   idle|busy --Failed--> stopping (sandbox died, timed out or ran out of memory)
 *   stopping --Stopped--> stopped
 */
export type InstanceState = 'starting' | 'idle' | 'busy' | 'stopping' | 'stopped';

export type InstanceEvent = 'Started' | 'StartFailed' | 'Assigned' | 'RunEnded' | 'Released' | 'Retired' | 'Failed' | 'Stopped';

const TRANSITIONS: Record<InstanceState, Partial<Record<InstanceEvent, InstanceState>>> = {
  starting: { Started: 'idle', StartFailed: 'stopped' },
  idle: { Assigned: 'busy', Retired: 'stopping', Failed: 'stopping' },
  busy: { Assigned: 'busy', RunEnded: 'busy', Released: 'idle', Failed: 'stopping' },
  stopping: { Stopped: 'stopped' },
  stopped: {},
};

export class IllegalTransition extends Error {}

export function transition(state: InstanceState, event: InstanceEvent): InstanceState {
  const next = TRANSITIONS[state][event];
  if (!next) throw new IllegalTransition(`An instance cannot take ${event} while ${state}`);
  return next;
}

let instanceCounter = 0;

export class Instance {
  readonly id = `i${++instanceCounter}`;
  state: InstanceState = 'starting';
  sandbox: Sandbox | undefined;
  inflight = 0;
  /** ms since the epoch when it last finished a run (or started). */
  lastUsed = Date.now();
  keepAliveTimer: NodeJS.Timeout | undefined;
  /** Came from a pool of blank sandboxes made ahead of time. */
  prewarmed = false;
  /** Started for a waiting invocation, by the keep-alive policy's prewarm, or to provision. */
  origin: 'demand' | 'prewarm' | 'provisioned' = 'demand';
  /** Has served an invocation. */
  used = false;

  constructor(
    readonly poolKey: string,
    readonly isolation: Isolation,
    readonly memoryMb: number,
    readonly concurrency: number,
  ) {}

  fire(event: InstanceEvent): void {
    this.state = transition(this.state, event);
  }

  get hasCapacity(): boolean {
    return (this.state === 'idle' || this.state === 'busy') && this.inflight < this.concurrency;
  }
}
