import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  INSTANCE_STATES,
  Instance,
  type InstanceEvent,
  type InstanceEventType,
  type InstanceState,
  type Reaction,
} from './instance.js';

/**
 * Every event in every state, as a table. The states are taken with the runs an instance can
 * have in them: `busy` with its only run (concurrency 1) and with one of two (concurrency 2, the
 * other still running), and `stopping`/`stopped` with a run still ending on them (a timed-out
 * run's neighbour, or a run on a sandbox that died). Each cell is the state after the event, the
 * runs left, and how the instance took it. Written out in full so that a change to the machine is
 * a visible change here.
 */
type Situation =
  | 'starting'
  | 'idle'
  | 'busy 1/1'
  | 'busy 1/2'
  | 'busy 2/2'
  | 'stopping'
  | 'stopping with a run'
  | 'stopped'
  | 'stopped with a run';

/** The run every situation with runs holds as run 1 (and run 2 for `busy 2/2`). */
const KNOWN_RUN = 1;
const NEW_RUN = 9;

const EVENTS: Record<string, InstanceEvent> = {
  Started: { type: 'Started' },
  StartFailed: { type: 'StartFailed' },
  'Assigned (new run)': { type: 'Assigned', run: NEW_RUN },
  'Assigned (a run it has)': { type: 'Assigned', run: KNOWN_RUN },
  'RunEnded (healthy)': { type: 'RunEnded', run: KNOWN_RUN, healthy: true },
  'RunEnded (timed out or crashed)': { type: 'RunEnded', run: KNOWN_RUN, healthy: false },
  'RunEnded (a run it does not have)': { type: 'RunEnded', run: NEW_RUN, healthy: true },
  Retired: { type: 'Retired' },
  Died: { type: 'Died' },
  Stop: { type: 'Stop' },
  Stopped: { type: 'Stopped' },
};

/** [state after, runs after, reaction] */
type Cell = [InstanceState, number, Reaction];

const TABLE: Record<Situation, Record<keyof typeof EVENTS, Cell>> = {
  starting: {
    Started: ['idle', 0, 'changed'],
    StartFailed: ['stopped', 0, 'changed'],
    'Assigned (new run)': ['starting', 0, 'refused'],
    'Assigned (a run it has)': ['starting', 0, 'refused'],
    'RunEnded (healthy)': ['starting', 0, 'ignored'],
    'RunEnded (timed out or crashed)': ['starting', 0, 'ignored'],
    'RunEnded (a run it does not have)': ['starting', 0, 'ignored'],
    Retired: ['starting', 0, 'ignored'],
    Died: ['stopping', 0, 'changed'],
    Stop: ['stopping', 0, 'changed'],
    Stopped: ['stopped', 0, 'changed'],
  },
  idle: {
    Started: ['idle', 0, 'ignored'],
    StartFailed: ['idle', 0, 'ignored'],
    'Assigned (new run)': ['busy', 1, 'changed'],
    'Assigned (a run it has)': ['busy', 1, 'changed'],
    'RunEnded (healthy)': ['idle', 0, 'ignored'],
    'RunEnded (timed out or crashed)': ['idle', 0, 'ignored'],
    'RunEnded (a run it does not have)': ['idle', 0, 'ignored'],
    Retired: ['stopping', 0, 'changed'],
    Died: ['stopping', 0, 'changed'],
    Stop: ['stopping', 0, 'changed'],
    Stopped: ['stopped', 0, 'changed'],
  },
  'busy 1/1': {
    Started: ['busy', 1, 'ignored'],
    StartFailed: ['busy', 1, 'ignored'],
    'Assigned (new run)': ['busy', 1, 'refused'],
    'Assigned (a run it has)': ['busy', 1, 'refused'],
    'RunEnded (healthy)': ['idle', 0, 'changed'],
    'RunEnded (timed out or crashed)': ['stopping', 0, 'changed'],
    'RunEnded (a run it does not have)': ['busy', 1, 'ignored'],
    Retired: ['busy', 1, 'ignored'],
    // Its run ends with the death (unhealthy), absorbed while stopping.
    Died: ['stopping', 1, 'changed'],
    Stop: ['stopping', 1, 'changed'],
    Stopped: ['stopped', 1, 'changed'],
  },
  'busy 1/2': {
    Started: ['busy', 1, 'ignored'],
    StartFailed: ['busy', 1, 'ignored'],
    'Assigned (new run)': ['busy', 2, 'changed'],
    'Assigned (a run it has)': ['busy', 1, 'refused'],
    'RunEnded (healthy)': ['idle', 0, 'changed'],
    'RunEnded (timed out or crashed)': ['stopping', 0, 'changed'],
    'RunEnded (a run it does not have)': ['busy', 1, 'ignored'],
    Retired: ['busy', 1, 'ignored'],
    Died: ['stopping', 1, 'changed'],
    Stop: ['stopping', 1, 'changed'],
    Stopped: ['stopped', 1, 'changed'],
  },
  // Concurrency 2, both runs on it: the other run (2) goes on when run 1 ends.
  'busy 2/2': {
    Started: ['busy', 2, 'ignored'],
    StartFailed: ['busy', 2, 'ignored'],
    'Assigned (new run)': ['busy', 2, 'refused'],
    'Assigned (a run it has)': ['busy', 2, 'refused'],
    'RunEnded (healthy)': ['busy', 1, 'changed'],
    // A timeout with concurrency > 1: the instance stops, its other run still on it.
    'RunEnded (timed out or crashed)': ['stopping', 1, 'changed'],
    'RunEnded (a run it does not have)': ['busy', 2, 'ignored'],
    Retired: ['busy', 2, 'ignored'],
    Died: ['stopping', 2, 'changed'],
    Stop: ['stopping', 2, 'changed'],
    Stopped: ['stopped', 2, 'changed'],
  },
  stopping: {
    // A start that finishes after shutdown began.
    Started: ['stopping', 0, 'ignored'],
    StartFailed: ['stopping', 0, 'ignored'],
    'Assigned (new run)': ['stopping', 0, 'refused'],
    'Assigned (a run it has)': ['stopping', 0, 'refused'],
    'RunEnded (healthy)': ['stopping', 0, 'ignored'],
    'RunEnded (timed out or crashed)': ['stopping', 0, 'ignored'],
    'RunEnded (a run it does not have)': ['stopping', 0, 'ignored'],
    Retired: ['stopping', 0, 'ignored'],
    Died: ['stopping', 0, 'ignored'],
    Stop: ['stopping', 0, 'ignored'],
    Stopped: ['stopped', 0, 'changed'],
  },
  // OpenWhisk's Removing: late results of the runs still on it are absorbed, whatever they say.
  'stopping with a run': {
    Started: ['stopping', 1, 'ignored'],
    StartFailed: ['stopping', 1, 'ignored'],
    'Assigned (new run)': ['stopping', 1, 'refused'],
    'Assigned (a run it has)': ['stopping', 1, 'refused'],
    'RunEnded (healthy)': ['stopping', 0, 'ignored'],
    'RunEnded (timed out or crashed)': ['stopping', 0, 'ignored'],
    'RunEnded (a run it does not have)': ['stopping', 1, 'ignored'],
    Retired: ['stopping', 1, 'ignored'],
    Died: ['stopping', 1, 'ignored'],
    Stop: ['stopping', 1, 'ignored'],
    Stopped: ['stopped', 1, 'changed'],
  },
  stopped: {
    Started: ['stopped', 0, 'ignored'],
    StartFailed: ['stopped', 0, 'ignored'],
    'Assigned (new run)': ['stopped', 0, 'refused'],
    'Assigned (a run it has)': ['stopped', 0, 'refused'],
    'RunEnded (healthy)': ['stopped', 0, 'ignored'],
    'RunEnded (timed out or crashed)': ['stopped', 0, 'ignored'],
    'RunEnded (a run it does not have)': ['stopped', 0, 'ignored'],
    Retired: ['stopped', 0, 'ignored'],
    Died: ['stopped', 0, 'ignored'],
    Stop: ['stopped', 0, 'ignored'],
    Stopped: ['stopped', 0, 'ignored'],
  },
  // The sandbox destroyed before the run's result came back.
  'stopped with a run': {
    Started: ['stopped', 1, 'ignored'],
    StartFailed: ['stopped', 1, 'ignored'],
    'Assigned (new run)': ['stopped', 1, 'refused'],
    'Assigned (a run it has)': ['stopped', 1, 'refused'],
    'RunEnded (healthy)': ['stopped', 0, 'ignored'],
    'RunEnded (timed out or crashed)': ['stopped', 0, 'ignored'],
    'RunEnded (a run it does not have)': ['stopped', 1, 'ignored'],
    Retired: ['stopped', 1, 'ignored'],
    Died: ['stopped', 1, 'ignored'],
    Stop: ['stopped', 1, 'ignored'],
    Stopped: ['stopped', 1, 'ignored'],
  },
};

/** Brings a new instance into a situation through the events that lead there. */
function instanceIn(situation: Situation): Instance {
  const concurrency = situation === 'busy 1/1' ? 1 : 2;
  const instance = new Instance(1, 'ns/f@0.0.1#r', 128, concurrency, 'demand', 0, undefined);
  const steps: Record<Situation, InstanceEvent[]> = {
    starting: [],
    idle: [{ type: 'Started' }],
    'busy 1/1': [{ type: 'Started' }, { type: 'Assigned', run: KNOWN_RUN }],
    'busy 1/2': [{ type: 'Started' }, { type: 'Assigned', run: KNOWN_RUN }],
    'busy 2/2': [{ type: 'Started' }, { type: 'Assigned', run: KNOWN_RUN }, { type: 'Assigned', run: 2 }],
    stopping: [{ type: 'Started' }, { type: 'Retired' }],
    'stopping with a run': [
      { type: 'Started' },
      { type: 'Assigned', run: KNOWN_RUN },
      { type: 'Assigned', run: 2 },
      { type: 'RunEnded', run: 2, healthy: false },
    ],
    stopped: [{ type: 'StartFailed' }],
    'stopped with a run': [{ type: 'Started' }, { type: 'Assigned', run: KNOWN_RUN }, { type: 'Stop' }, { type: 'Stopped' }],
  };
  for (const event of steps[situation]) assert.equal(instance.handle(event), 'changed', `reaching ${situation}`);
  return instance;
}

describe('instance state machine', () => {
  for (const [situation, row] of Object.entries(TABLE) as [Situation, Record<string, Cell>][]) {
    for (const [name, event] of Object.entries(EVENTS)) {
      const [state, runs, reaction] = row[name] as Cell;
      it(`${situation} + ${name} -> ${state}, ${runs} run(s), ${reaction}`, () => {
        const instance = instanceIn(situation);
        assert.equal(instance.handle(event), reaction);
        assert.equal(instance.state, state);
        assert.equal(instance.inflight, runs);
      });
    }
  }

  it('covers every state and every kind of event', () => {
    const states = new Set(Object.keys(TABLE).map((s) => instanceIn(s as Situation).state));
    assert.deepEqual([...states].sort(), [...INSTANCE_STATES].sort());
    const types = new Set(Object.values(EVENTS).map((e) => e.type));
    // A Record over the type: a new kind of event fails to compile here until it is in the table.
    const all: Record<InstanceEventType, true> = {
      Started: true,
      StartFailed: true,
      Assigned: true,
      RunEnded: true,
      Retired: true,
      Died: true,
      Stop: true,
      Stopped: true,
    };
    assert.deepEqual([...types].sort(), Object.keys(all).sort());
  });

  it('takes a run back only once it ended, and frees room for another', () => {
    const instance = instanceIn('busy 2/2');
    assert.equal(instance.hasRoom, false);
    instance.handle({ type: 'RunEnded', run: KNOWN_RUN, healthy: true });
    assert.equal(instance.hasRoom, true);
    assert.deepEqual([...instance.runs], [2]);
    assert.equal(instance.handle({ type: 'Assigned', run: KNOWN_RUN }), 'changed', 'a new run may reuse an ended run id');
  });
});
