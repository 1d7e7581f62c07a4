import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FixedKeepAlive, HybridHistogram, parsePolicy } from '../scheduler/policy.js';
import { simulate, simulateApp } from './simulate.js';
import { generateTrace, readTrace, type TraceApp, writeTrace } from './trace.js';

function periodic(periodMinutes: number, minutes = 1440): TraceApp {
  const perMinute = new Array(minutes).fill(0);
  for (let m = 0; m < minutes; m += periodMinutes) perMinute[m] = 1;
  return { id: 'o/a', perMinute, durationMs: 1000, memoryMb: 256, trigger: 'timer' };
}

describe('trace simulator', () => {
  it('counts every call of a 15-minute timer cold under a 10-minute keep-alive', () => {
    const outcome = simulateApp(periodic(15), new FixedKeepAlive(10 * 60_000));
    assert.equal(outcome.invocations, 96);
    assert.equal(outcome.coldStarts, 96);
    // Each call leaves 10 minutes of idle memory behind.
    assert.ok(Math.abs(outcome.wastedMs - 96 * 10 * 60_000) <= 96 * 1000);
  });

  it('turns them warm under the hybrid policy once the histogram is representative', () => {
    const outcome = simulateApp(periodic(15), new HybridHistogram());
    assert.ok(outcome.coldStarts <= 12, `${outcome.coldStarts} cold starts`);
    assert.equal(outcome.mode, 'histogram');
    const fixed = simulateApp(periodic(15), new FixedKeepAlive(10 * 60_000));
    assert.ok(outcome.wastedMs < fixed.wastedMs, 'and keeps less memory idle');
  });

  it('keeps a 5-minute timer warm under both', () => {
    assert.equal(simulateApp(periodic(5), new FixedKeepAlive(10 * 60_000)).coldStarts, 1);
    assert.ok(simulateApp(periodic(5), new HybridHistogram()).coldStarts <= 2);
  });

  it('on a generated Azure-format day, hybrid has fewer cold starts and wastes no more memory than fixed-10-minute', () => {
    const dir = mkdtempSync(join(tmpdir(), 'isola-trace-'));
    try {
      generateTrace(dir, { apps: 300, days: 1, seed: 11 });
      const apps = readTrace(dir);
      assert.equal(apps.length, 300);
      const fixed = simulate(apps, parsePolicy('fixed:10m'));
      const hybrid = simulate(apps, parsePolicy('hybrid'));
      assert.equal(fixed.invocations, hybrid.invocations);
      assert.ok(hybrid.coldStartPct < fixed.coldStartPct, `${hybrid.coldStartPct} vs ${fixed.coldStartPct}`);
      assert.ok(
        hybrid.wastedMemoryGbSeconds <= fixed.wastedMemoryGbSeconds,
        `${hybrid.wastedMemoryGbSeconds} vs ${fixed.wastedMemoryGbSeconds}`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("reads back what it writes, summing an app's functions and keeping durations and memory", () => {
    const dir = mkdtempSync(join(tmpdir(), 'isola-trace-'));
    try {
      const app = { ...periodic(30, 2880), durationMs: 250, memoryMb: 320 };
      writeTrace(dir, [app]);
      const [read] = readTrace(dir);
      assert.deepEqual(read?.perMinute, app.perMinute, 'two days concatenated');
      assert.equal(read?.durationMs, 250);
      assert.equal(read?.memoryMb, 320);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('gives the same answer on a scaled time axis', () => {
    const app = periodic(15);
    const normal = simulateApp(app, parsePolicy('hybrid'));
    const scaled = simulateApp(app, parsePolicy('hybrid:100ms'), 100);
    assert.equal(scaled.coldStarts, normal.coldStarts);
  });
});
