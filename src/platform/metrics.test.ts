import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Histogram, Registry } from 'prom-client';
import type { Scheduler } from '../scheduler/scheduler.js';
import { IsolationHistogram, Metrics } from './metrics.js';

/** The scheduler's figures the gauges read: none here, only the counters are looked at. */
const noInstances = { stats: () => ({ instances: [], functions: [] }) } as unknown as Scheduler;

async function activationSeries(metrics: Metrics): Promise<Map<string, number>> {
  const metric = await metrics.registry.getSingleMetric('isola_activations_total')?.get();
  const series = new Map<string, number>();
  for (const { labels, value } of metric?.values ?? []) series.set(`${labels.namespace}/${labels.action}`, value);
  return series;
}

describe('per-function counters', () => {
  it('keep series for the most recently active functions, however often the newest one is counted', async () => {
    const metrics = new Metrics(noInstances, { functions: 2 });
    const count = (action: string) =>
      metrics.activations.inc({ namespace: 'ns', action, isolation: 'isolate', status: 'success' });
    count('f1');
    count('f1');
    count('f2');
    // f1 again: now the most recent, so f2 is the one that goes when f3 comes.
    count('f1');
    count('f1');
    count('f3');
    assert.deepEqual(
      await activationSeries(metrics),
      new Map([
        ['ns/f1', 4],
        ['ns/f3', 1],
        ['_other/_other', 1],
      ]),
    );
    // A namespace forgotten while its function was the newest: counted again, it comes back.
    metrics.forgetNamespace('ns');
    count('f3');
    count('f4');
    count('f5');
    assert.deepEqual(
      await activationSeries(metrics),
      new Map([
        ['ns/f4', 1],
        ['ns/f5', 1],
        ['_other/_other', 2],
      ]),
    );
  });

  it("fold every series of a function that drops out, total each function's own, and forget only the namespace named", async () => {
    const metrics = new Metrics(noInstances, { functions: 2 });
    const count = (namespace: string, action: string, status: string) =>
      metrics.activations.inc({ namespace, action, isolation: 'isolate', status });
    const series = async () => {
      const metric = await metrics.registry.getSingleMetric('isola_activations_total')?.get();
      return new Map(
        (metric?.values ?? []).map(({ labels, value }) => [`${labels.namespace}/${labels.action} ${labels.status}`, value]),
      );
    };
    count('ns', 'pkg/a', 'success');
    count('ns', 'pkg/a', 'application error');
    count('ns', 'pkg/a', 'success');
    count('ns2', 'b', 'success');
    assert.equal(metrics.activations.total('ns', 'pkg/a'), 3);
    assert.equal(metrics.activations.total('ns', 'pkg'), 0);
    // A third function: ns/pkg/a drops out, both of its series move to the summary.
    count('ns2', 'c', 'success');
    assert.equal(metrics.activations.total('ns', 'pkg/a'), 0);
    assert.equal(metrics.activations.total('_other', '_other'), 3);
    assert.deepEqual(
      await series(),
      new Map([
        ['ns2/b success', 1],
        ['ns2/c success', 1],
        ['_other/_other success', 2],
        ['_other/_other application error', 1],
      ]),
    );
    // "ns" is a prefix of "ns2" as text, not as a namespace.
    metrics.forgetNamespace('ns');
    assert.equal(metrics.activations.total('ns2', 'b'), 1);
    metrics.forgetNamespace('ns2');
    assert.equal(metrics.activations.total('ns2', 'b'), 0);
    assert.deepEqual(
      await series(),
      new Map([
        ['_other/_other success', 2],
        ['_other/_other application error', 1],
      ]),
    );
    // Counted again after being forgotten: a series of its own once more.
    count('ns2', 'b', 'success');
    assert.equal(metrics.activations.total('ns2', 'b'), 1);
  });
});

describe('histograms by backend', () => {
  it("expose the same text as prom-client's Histogram for the same observations", async () => {
    const buckets = [0.001, 0.01, 0.1, 1];
    const ours = new Registry();
    const theirs = new Registry();
    const histogram = new IsolationHistogram('isola_test_seconds', 'A test.', buckets, ours);
    const reference = new Histogram({
      name: 'isola_test_seconds',
      help: 'A test.',
      labelNames: ['isolation'] as const,
      buckets,
      registers: [theirs],
    });
    const observations: [string, number][] = [
      ['isolate', 0.0004],
      ['isolate', 0.001],
      ['isolate', 0.05],
      ['wasm', 3],
      ['isolate', 0.5],
      ['wasm', 0.002],
    ];
    for (const [isolation, value] of observations) {
      histogram.observe(isolation, value);
      reference.observe({ isolation }, value);
    }
    const text = await ours.metrics();
    assert.equal(text, await theirs.metrics());
    assert.match(text, /^isola_test_seconds_bucket\{le="0\.01",isolation="isolate"\} 2$/m);
    assert.match(text, /^isola_test_seconds_count\{isolation="wasm"\} 2$/m);
    histogram.reset();
    reference.reset();
    assert.equal(await ours.metrics(), await theirs.metrics());
  });
});
