import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setImmediate as nextRound } from 'node:timers/promises';
import { RoundEnd } from './round-end.js';

describe('RoundEnd', () => {
  it("makes the writes deferred in one round in order once the round is over, and a later round's in the next", async () => {
    const made: string[] = [];
    const rounds = new RoundEnd((error) => assert.fail(String(error)));
    rounds.defer(() => made.push('a'));
    rounds.defer(() => made.push('b'));
    assert.equal(made.length, 0, 'nothing made while the round goes on');
    await nextRound();
    assert.deepEqual(made, ['a', 'b']);
    rounds.defer(() => made.push('c'));
    assert.deepEqual(made, ['a', 'b']);
    await nextRound();
    assert.deepEqual(made, ['a', 'b', 'c']);
  });

  it('reports a write that throws and still makes the others', async () => {
    const made: string[] = [];
    const failures: unknown[] = [];
    const rounds = new RoundEnd((error) => failures.push(error));
    rounds.defer(() => made.push('before'));
    rounds.defer(() => {
      throw new Error('socket gone');
    });
    rounds.defer(() => made.push('after'));
    await nextRound();
    assert.deepEqual(made, ['before', 'after']);
    assert.deepEqual(
      failures.map((error) => (error as Error).message),
      ['socket gone'],
    );
  });
});
