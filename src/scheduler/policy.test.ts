import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { coefficientOfVariation, FixedKeepAlive, HybridHistogram, parsePolicy } from './policy.js';

const MINUTE = 60_000;

/** Feeds a policy a sequence of idle times (minutes) and returns its decision after the last. */
function decideAfter(idleMinutes: number[], policy = new HybridHistogram()) {
  const fn = policy.forFunction();
  let now = 0;
  fn.onInvocation(now, undefined);
  for (const idle of idleMinutes) {
    now += idle * MINUTE;
    fn.onInvocation(now, idle * MINUTE);
  }
  return { decision: fn.onIdle(now), mode: fn.mode, now };
}

describe('fixed keep-alive', () => {
  it('keeps every idle instance for its duration and never prewarms', () => {
    const fn = new FixedKeepAlive(10 * MINUTE).forFunction();
    assert.deepEqual(fn.onIdle(5000), { keepUntil: 5000 + 10 * MINUTE });
    assert.equal(parsePolicy('fixed:10m').name, 'fixed:10m');
    assert.equal((parsePolicy('fixed:30s') as FixedKeepAlive).keepAliveMs, 30_000);
  });
});

describe('hybrid histogram policy', () => {
  it('falls back to the fixed keep-alive while the histogram holds few idle times', () => {
    const { decision, mode, now } = decideAfter([15, 15, 15]);
    assert.equal(mode, 'fallback');
    assert.deepEqual(decision, { keepUntil: now + 10 * MINUTE });
  });

  it('for a function invoked every 15 minutes: unloads, prewarms just before 15 minutes, keeps a little after', () => {
    const { decision, mode, now } = decideAfter(new Array(20).fill(15));
    assert.equal(mode, 'histogram');
    // Head: the 15-minute bin starts at 15 min, minus the 10% margin; tail: the bin ends at 16 min, plus 10%.
    assert.equal(decision.prewarmAt, now + Math.floor(15 * MINUTE * 0.9));
    assert.equal(decision.keepUntil, now + Math.ceil(16 * MINUTE * 1.1));
  });

  it('keeps the instance (no unload) when idle times start within the first minute', () => {
    const { decision, mode, now } = decideAfter([...new Array(30).fill(0), 2, 3]);
    assert.equal(mode, 'histogram');
    assert.equal(decision.prewarmAt, undefined);
    assert.ok(decision.keepUntil > now);
  });

  it('falls back when most idle times fall beyond the four-hour range', () => {
    const { mode } = decideAfter([...new Array(12).fill(300), 15, 15]);
    assert.equal(mode, 'fallback');
  });

  it('falls back when idle times are spread evenly (not a pattern)', () => {
    const spread = Array.from({ length: 240 }, (_, i) => i);
    const { mode } = decideAfter(spread);
    assert.ok(coefficientOfVariation(new Array(240).fill(1)) < 2);
    assert.equal(mode, 'fallback');
  });

  it("scales with its bin width: hybrid:100ms is the paper's policy 600 times faster", () => {
    const policy = parsePolicy('hybrid:100ms') as HybridHistogram;
    assert.equal(policy.options.binMs, 100);
    assert.equal(policy.options.rangeMs, 4 * 60 * 100);
    assert.equal(policy.options.fallbackMs, 10 * 100);
    assert.throws(() => parsePolicy('lru'), /Unknown keep-alive policy/);
  });
});
