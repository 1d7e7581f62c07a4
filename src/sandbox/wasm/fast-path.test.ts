import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FastPathEligibility } from './fast-path.js';

describe('wasm fast path: eligibility', () => {
  it('takes three short runs in a row; a long one starts the count again', () => {
    const eligibility = new FastPathEligibility(10);
    eligibility.observe('ns/a@1', true);
    eligibility.observe('ns/a@1', true);
    eligibility.observe('ns/a@1', false);
    eligibility.observe('ns/a@1', true);
    eligibility.observe('ns/a@1', true);
    assert.equal(eligibility.eligible('ns/a@1'), false);
    eligibility.observe('ns/a@1', true);
    assert.equal(eligibility.eligible('ns/a@1'), true);
  });

  it('keeps a version that overran off the fast path unless its run on a worker proved short', () => {
    const eligibility = new FastPathEligibility(10);
    for (const key of ['ns/slow@1', 'ns/unlucky@1']) for (let i = 0; i < 3; i++) eligibility.observe(key, true);
    eligibility.overran('ns/slow@1');
    eligibility.overran('ns/unlucky@1');
    eligibility.excuse('ns/unlucky@1');
    assert.equal(eligibility.eligible('ns/slow@1'), false);
    assert.equal(eligibility.eligible('ns/unlucky@1'), true);
  });

  it('takes the fast path from a namespace after three overruns, or thirty excused ones', () => {
    const eligibility = new FastPathEligibility(10);
    for (const key of ['slow/a@1', 'unlucky/a@1', 'other/a@1']) for (let i = 0; i < 3; i++) eligibility.observe(key, true);
    for (let i = 0; i < 3; i++) {
      eligibility.overran('slow/a@1');
      eligibility.excuse('slow/a@1');
    }
    assert.equal(eligibility.eligible('slow/a@1'), true, 'three excused overruns are allowed');
    for (let i = 0; i < 3; i++) eligibility.overran('unlucky/a@1');
    for (let i = 0; i < 3; i++) eligibility.observe('unlucky/b@1', true);
    assert.equal(eligibility.eligible('unlucky/b@1'), false, 'three overruns take it from every version of the namespace');
    for (let i = 3; i < 30; i++) {
      eligibility.overran('slow/a@1');
      eligibility.excuse('slow/a@1');
    }
    assert.equal(eligibility.eligible('slow/a@1'), false, 'thirty excused overruns take it too');
    assert.equal(eligibility.eligible('other/a@1'), true, 'another namespace keeps it');
  });
});
