import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  IllegalTransition,
  INSTANCE_EVENTS,
  INSTANCE_STATES,
  type InstanceEvent,
  type InstanceState,
  transition,
} from './instance.js';

/**
 * Every event in every state, as a table: the state it leads to, or '-' where no correct caller
 * can send it. Written out in full so that a change to the machine is a visible change here.
 */
const TABLE: Record<InstanceState, Record<InstanceEvent, InstanceState | '-'>> = {
  starting: {
    Started: 'idle',
    StartFailed: 'stopped',
    Assigned: '-',
    RunEnded: '-',
    Released: '-',
    Retired: '-',
    Failed: 'stopping',
    Stopped: '-',
  },
  idle: {
    Started: '-',
    StartFailed: '-',
    Assigned: 'busy',
    RunEnded: '-',
    Released: '-',
    Retired: 'stopping',
    Failed: 'stopping',
    Stopped: '-',
  },
  busy: {
    Started: '-',
    StartFailed: '-',
    Assigned: 'busy',
    RunEnded: 'busy',
    Released: 'idle',
    Retired: '-',
    Failed: 'stopping',
    Stopped: '-',
  },
  // Late events are absorbed: the other runs of a failed instance ending, a start finishing
  // during shutdown, a death noticed after the decision to stop.
  stopping: {
    Started: 'stopping',
    StartFailed: 'stopping',
    Assigned: '-',
    RunEnded: 'stopping',
    Released: 'stopping',
    Retired: 'stopping',
    Failed: 'stopping',
    Stopped: 'stopped',
  },
  stopped: {
    Started: '-',
    StartFailed: '-',
    Assigned: '-',
    RunEnded: 'stopped',
    Released: 'stopped',
    Retired: 'stopped',
    Failed: 'stopped',
    Stopped: 'stopped',
  },
};

describe('instance state machine', () => {
  for (const state of INSTANCE_STATES) {
    for (const event of INSTANCE_EVENTS) {
      const expected = TABLE[state][event];
      it(`${state} + ${event} -> ${expected}`, () => {
        if (expected === '-') assert.throws(() => transition(state, event), IllegalTransition);
        else assert.equal(transition(state, event), expected);
      });
    }
  }
});
