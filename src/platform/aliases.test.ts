import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isAliasName, pickVersion } from './aliases.js';

describe('function aliases', () => {
  it("take Lambda's alias names: letters, digits, - and _, 1 to 128, not a number alone", () => {
    for (const name of ['live', 'v2', '2-canary', 'A_b-c', 'x'.repeat(128)]) assert.ok(isAliasName(name), name);
    for (const name of ['', '12', '$LATEST', 'a.b', 'a b', 'x'.repeat(129), '0.0.1']) assert.ok(!isAliasName(name), name);
  });

  it('route by weight: none, all, or a share of the calls to the additional version', () => {
    const draws = (weight: number) =>
      new Set(Array.from({ length: 200 }, () => pickVersion({ functionVersion: '0.0.1', routing: { '0.0.2': weight } })));
    assert.deepEqual([...draws(0)], ['0.0.1']);
    assert.deepEqual([...draws(1)], ['0.0.2']);
    assert.deepEqual(pickVersion({ functionVersion: '$LATEST', routing: {} }), '$LATEST');
    // Half and half: 200 draws all landing on one side happen with probability 2^-199.
    assert.deepEqual([...draws(0.5)].sort(), ['0.0.1', '0.0.2']);
  });
});
