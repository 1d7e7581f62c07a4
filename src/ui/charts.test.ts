import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { chartSeries } from './charts.js';

const MINUTE = 60_000;
const run = (start: number, duration: number, options: { status?: string; cold?: boolean; init?: number } = {}) => ({
  start,
  duration,
  status: options.status ?? 'success',
  annotations: [
    { key: 'coldStart', value: options.cold ?? false },
    ...(options.init !== undefined ? [{ key: 'initTime', value: options.init }] : []),
  ],
});

describe('chartSeries', () => {
  const now = 10 * MINUTE + 30_000;

  it('puts each run in the minute it started in: rate, errors, percentiles, cold share, init time', () => {
    const runs = [
      run(now - 10_000, 10, { cold: true, init: 200 }),
      run(now - 20_000, 30),
      run(now - 25_000, 20, { status: 'application error' }),
      run(now - 29_000, 40, { cold: true, init: 100 }),
      run(now - MINUTE, 5),
    ];
    const series = chartSeries(runs, now, 3 * MINUTE, MINUTE);
    assert.deepEqual(series.time, [8 * 60, 9 * 60, 10 * 60]);
    assert.deepEqual(series.rate, [0, 1 / 60, 4 / 60]);
    assert.deepEqual(series.errors, [0, 0, 1]);
    assert.deepEqual(series.p50, [null, 5, 20]);
    assert.deepEqual(series.p95, [null, 5, 40]);
    assert.deepEqual(series.coldShare, [null, 0, 0.5]);
    assert.deepEqual(series.initMs, [null, null, 150]);
    assert.equal(series.runs, 5);
  });

  it('leaves out runs outside the span', () => {
    const series = chartSeries([run(now - 10 * MINUTE, 1), run(now + MINUTE, 1)], now, 3 * MINUTE, MINUTE);
    assert.equal(series.runs, 0);
    assert.deepEqual(series.rate, [0, 0, 0]);
  });
});
