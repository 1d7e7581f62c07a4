import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { provisionedShare } from './provisioning.js';

describe('provisionedShare', () => {
  const order = ['home', 'next', 'last'];
  const shares = (total: number, invokers = order) => invokers.map((id) => provisionedShare(total, invokers, id));

  it('shares the count out evenly, the remainder going first to the home invoker', () => {
    assert.deepEqual(shares(3), [1, 1, 1]);
    assert.deepEqual(shares(5), [2, 2, 1]);
    assert.deepEqual(shares(1), [1, 0, 0]);
    assert.deepEqual(shares(7, ['home', 'next']), [4, 3]);
  });

  it('always adds up to the count', () => {
    for (let total = 0; total <= 40; total++)
      for (let size = 1; size <= 6; size++) {
        const invokers = order.concat(['a', 'b', 'c']).slice(0, size);
        assert.equal(
          shares(total, invokers).reduce((a, b) => a + b, 0),
          total,
        );
      }
  });

  it('gives nothing to an invoker that cannot run the function, or when nothing is provisioned', () => {
    assert.equal(provisionedShare(5, order, 'elsewhere'), 0);
    assert.equal(provisionedShare(0, order, 'home'), 0);
    assert.equal(provisionedShare(3, [], 'home'), 0);
  });
});
