/**
 * The life of one instance: a sandbox loaded with one version of one function.
 *
 *   starting --Started--> idle --Assigned--> busy --Released--> idle
 *   starting --StartFailed--> stopped
 *   busy --Assigned--> busy (concurrency > 1)     busy --RunEnded--> busy (others still running)
 *   idle --Retired--> stopping (keep-alive expired, evicted for memory, old version drained)
 *   starting|idle|busy --Failed--> stopping (sandbox died, timed out, ran out of memory, shutdown)
 *   stopping --Stopped--> stopped
 *
 * Like OpenWhisk's `Removing` state, `stopping` and `stopped` absorb the events that can still
 * arrive once an instance is on its way out: the other runs on it ending, its sandbox's death
 * being noticed, a start that finishes after shutdown began. Only events that no correct caller
 * can produce (assigning work to a stopping instance, retiring a busy one) are illegal.
 */
export type InstanceState = 'starting' | 'idle' | 'busy' | 'stopping' | 'stopped';

export type InstanceEvent = 'Started' | 'StartFailed' | 'Assigned' | 'RunEnded' | 'Released' | 'Retired' | 'Failed' | 'Stopped';

export const INSTANCE_STATES: readonly InstanceState[] = ['starting', 'idle', 'busy', 'stopping', 'stopped'];
export const INSTANCE_EVENTS: readonly InstanceEvent[] = [
  'Started',
  'StartFailed',
  'Assigned',
  'RunEnded',
  'Released',
  'Retired',
  'Failed',
  'Stopped',
];

/** Late events an instance on its way out takes without changing state. */
const ABSORBED_WHILE_STOPPING: Partial<Record<InstanceEvent, 'stopping'>> = {
  Started: 'stopping',
  StartFailed: 'stopping',
  RunEnded: 'stopping',
  Released: 'stopping',
  Retired: 'stopping',
  Failed: 'stopping',
};

export const TRANSITIONS: Record<InstanceState, Partial<Record<InstanceEvent, InstanceState>>> = {
  starting: { Started: 'idle', StartFailed: 'stopped', Failed: 'stopping' },
  idle: { Assigned: 'busy', Retired: 'stopping', Failed: 'stopping' },
  busy: { Assigned: 'busy', RunEnded: 'busy', Released: 'idle', Failed: 'stopping' },
  stopping: { ...ABSORBED_WHILE_STOPPING, Stopped: 'stopped' },
  stopped: { RunEnded: 'stopped', Released: 'stopped', Retired: 'stopped', Failed: 'stopped', Stopped: 'stopped' },
};

export class IllegalTransition extends Error {}

export function transition(state: InstanceState, event: InstanceEvent): InstanceState {
  const next = TRANSITIONS[state][event];
  if (!next) throw new IllegalTransition(`An instance cannot take ${event} while ${state}`);
  return next;
}

/** States in which an instance holds memory and counts against its function's maximum. */
export function isLive(state: InstanceState): boolean {
  return state === 'starting' || state === 'idle' || state === 'busy';
}
