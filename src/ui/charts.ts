import type { KeyValue } from '../core/types.js';

export interface TimedRun {
  start: number;
  duration: number;
  status: string;
  annotations: readonly KeyValue[];
}

/** Per step of time (seconds since the epoch at each step's start), what the dashboard draws. */
export interface ChartSeries {
  stepSeconds: number;
  time: number[];
  /** Calls per second over the step. */
  rate: number[];
  /** Failed calls (any status but success) in the step. */
  errors: number[];
  /** Duration percentiles of the step's calls, ms; null when it had none. */
  p50: (number | null)[];
  p95: (number | null)[];
  /** Share of the step's calls that started cold (restored from a snapshot counts as cold), 0-1. */
  coldShare: (number | null)[];
  /** Mean initialisation time of its cold starts, ms. */
  initMs: (number | null)[];
  /** Runs that went into the series (the store's read is bounded). */
  runs: number;
}

const annotationValue = (annotations: readonly KeyValue[], key: string) => annotations.find((a) => a.key === key)?.value;

function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length) - 1;
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank))] as number;
}

/**
 * The series of `runs` over the `spanMs` before `now`, by `stepMs` (nearest-rank percentiles).
 * Steps with no calls have a rate of 0 and no percentiles.
 */
export function chartSeries(runs: readonly TimedRun[], now: number, spanMs: number, stepMs: number): ChartSeries {
  const steps = Math.ceil(spanMs / stepMs);
  const first = Math.floor(now / stepMs) * stepMs - (steps - 1) * stepMs;
  const buckets = Array.from({ length: steps }, () => ({ durations: [] as number[], errors: 0, cold: 0, init: [] as number[] }));
  let used = 0;
  for (const run of runs) {
    const index = Math.floor((run.start - first) / stepMs);
    const bucket = buckets[index];
    if (!bucket) continue;
    used++;
    bucket.durations.push(run.duration);
    if (run.status !== 'success') bucket.errors++;
    if (annotationValue(run.annotations, 'coldStart') === true) {
      bucket.cold++;
      const init = annotationValue(run.annotations, 'initTime');
      if (typeof init === 'number' && Number.isFinite(init)) bucket.init.push(init);
    }
  }
  const series: ChartSeries = {
    stepSeconds: stepMs / 1000,
    time: [],
    rate: [],
    errors: [],
    p50: [],
    p95: [],
    coldShare: [],
    initMs: [],
    runs: used,
  };
  buckets.forEach((bucket, i) => {
    const sorted = bucket.durations.sort((a, b) => a - b);
    series.time.push((first + i * stepMs) / 1000);
    series.rate.push(sorted.length / (stepMs / 1000));
    series.errors.push(bucket.errors);
    series.p50.push(percentile(sorted, 50));
    series.p95.push(percentile(sorted, 95));
    series.coldShare.push(sorted.length === 0 ? null : bucket.cold / sorted.length);
    series.initMs.push(bucket.init.length === 0 ? null : bucket.init.reduce((a, b) => a + b, 0) / bucket.init.length);
  });
  return series;
}
