import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parsePolicy } from '../scheduler/policy.js';
import { compareClusters, invokerMemoryFor, simulateCluster, simulateSingleHost } from './cluster.js';
import { simulate } from './simulate.js';
import { generateTrace, type TraceApp } from './trace.js';

function app(id: string, calls: Record<number, number>, fields: Partial<TraceApp> = {}): TraceApp {
  const perMinute = new Array<number>(30).fill(0);
  for (const [minute, count] of Object.entries(calls)) perMinute[Number(minute)] = count;
  return { id: `owner/${id}`, perMinute, durationMs: 1000, memoryMb: 256, trigger: 'http', ...fields };
}

describe('the cluster simulator', () => {
  let dir: string;
  let apps: TraceApp[];
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'isola-cluster-trace-'));
    apps = generateTrace(dir, { apps: 300, days: 1, seed: 11 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('on one infinitely large host gives exactly the per-app simulation, under either policy', () => {
    for (const name of ['fixed:10m', 'hybrid']) {
      const expected = simulate(apps, parsePolicy(name));
      const single = simulateSingleHost(apps, parsePolicy(name));
      assert.equal(single.invocations, expected.invocations, name);
      assert.equal(single.coldStarts, expected.coldStarts, name);
      assert.equal(single.evictions, 0);
      assert.equal(single.waited, 0);
      assert.equal(single.invokerMemoryMb, null);
    }
  });

  it('with memory to spare, warm affinity keeps every app on its home: the single host cold starts; random and least-loaded have more', () => {
    const policy = parsePolicy('fixed:10m');
    const single = simulateSingleHost(apps, policy);
    const roomy = { invokers: 8, invokerMemoryMb: single.peakMemoryMb };
    const affinity = simulateCluster(apps, policy, { ...roomy, placement: 'affinity' });
    const random = simulateCluster(apps, policy, { ...roomy, placement: 'random', seed: 3 });
    const leastLoaded = simulateCluster(apps, policy, { ...roomy, placement: 'least-loaded' });
    assert.equal(affinity.coldStarts, single.coldStarts);
    assert.equal(affinity.reasons?.wait, undefined);
    for (const other of [random, leastLoaded]) {
      assert.equal(other.invocations, single.invocations);
      assert.ok(
        other.coldStarts > affinity.coldStarts * 1.5,
        `${other.placement}: ${other.coldStarts} vs ${affinity.coldStarts}`,
      );
    }
    assert.ok(affinity.invocationsMaxOverMean >= 1 && affinity.peakMemoryMaxOverMean >= 1);
  });

  it('on a tight cluster counts every call once, keeps each invoker within its budget, and affinity beats random', () => {
    const policy = parsePolicy('hybrid');
    const single = simulateSingleHost(apps, policy);
    const invokerMemoryMb = invokerMemoryFor(apps, single.peakMemoryMb, 10, 1);
    assert.equal(invokerMemoryMb % 256, 0);
    const reports = (['affinity', 'random', 'least-loaded'] as const).map((placement) =>
      simulateCluster(apps, policy, { invokers: 10, invokerMemoryMb, placement, seed: 5 }),
    );
    for (const report of reports) {
      assert.equal(report.invocations, single.invocations, report.placement);
      assert.equal(report.refused, 0);
      assert.ok(report.peakMemoryMb <= invokerMemoryMb, `${report.placement} peaked at ${report.peakMemoryMb} MB`);
    }
    const [affinity, random] = reports as [(typeof reports)[0], (typeof reports)[0]];
    assert.ok(affinity.coldStarts < random.coldStarts, `${affinity.coldStarts} vs ${random.coldStarts}`);
  });

  it('is deterministic by seed', () => {
    const policy = parsePolicy('hybrid');
    const options = { invokers: 7, invokerMemoryMb: 4096, placement: 'random' as const, seed: 9 };
    assert.deepEqual(simulateCluster(apps, policy, options), simulateCluster(apps, policy, options));
    const affinity = { ...options, placement: 'affinity' as const };
    assert.deepEqual(simulateCluster(apps, policy, affinity), simulateCluster(apps, policy, affinity));
  });

  it('compares placements against the single host, sizing invokers by the headroom', () => {
    const comparison = compareClusters(apps, parsePolicy('fixed:10m'), { invokers: [2, 4], headroom: 2 });
    assert.equal(comparison.runs.length, 6);
    assert.equal(comparison.headroom, 2);
    for (const run of comparison.runs) {
      assert.equal(run.invokerMemoryMb, invokerMemoryFor(apps, comparison.singleHost.peakMemoryMb, run.invokers, 2));
      assert.equal(run.coldStartsVsSingleHost, Math.round((run.coldStarts / comparison.singleHost.coldStarts) * 1000) / 1000);
    }
  });
});

describe('the cluster simulator on small traces', () => {
  const fixed = parsePolicy('fixed:10m');

  it('lets an idle instance go for another app when memory is short, and keeps both when it is not', () => {
    const a = app('a', { 0: 1, 2: 1, 4: 1 });
    const b = app('b', { 1: 1, 3: 1, 5: 1 });
    const tight = simulateCluster([a, b], fixed, { invokers: 1, invokerMemoryMb: 256, placement: 'affinity' });
    assert.deepEqual([tight.coldStarts, tight.evictions, tight.waited], [6, 5, 0]);
    const enough = simulateCluster([a, b], fixed, { invokers: 1, invokerMemoryMb: 512, placement: 'affinity' });
    assert.deepEqual([enough.coldStarts, enough.evictions, enough.waited, enough.peakMemoryMb], [2, 0, 0, 512]);
  });

  it('a call with no memory free waits on its invoker until a run ends', () => {
    const long = { durationMs: 90_000 };
    const report = simulateCluster([app('a', { 0: 3 }, long), app('b', { 0: 1 }, long)], fixed, {
      invokers: 1,
      invokerMemoryMb: 256,
      placement: 'least-loaded',
    });
    assert.deepEqual(
      [report.invocations, report.coldStarts, report.waited, report.evictions, report.peakMemoryMb],
      [4, 2, 1, 1, 256],
    );
  });

  it('spreads calls by load: per-invoker invocations and peak memory over their means', () => {
    const apps = [app('a', { 0: 10 }), app('b', { 0: 2 }, { memoryMb: 512 })];
    const report = simulateCluster(apps, fixed, { invokers: 2, invokerMemoryMb: 1024, placement: 'least-loaded' });
    // a goes to invoker-0 (10 calls, 256 MB), b to invoker-1 (2 calls, 512 MB).
    assert.equal(report.invocationsMaxOverMean, Math.round((10 / 6) * 1000) / 1000);
    assert.equal(report.peakMemoryMaxOverMean, Math.round((512 / 384) * 1000) / 1000);
  });

  it('refuses an app larger than every invoker, and counts it', () => {
    const report = simulateCluster([app('big', { 0: 1, 1: 1 }, { memoryMb: 2048 })], fixed, {
      invokers: 3,
      invokerMemoryMb: 1024,
      placement: 'affinity',
    });
    assert.deepEqual([report.refused, report.invocations], [2, 0]);
  });
});
