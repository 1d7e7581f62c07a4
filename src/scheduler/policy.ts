import { parseDuration } from '../core/duration.js';

/**
 * Keep-alive and prewarm policies. The scheduler and the trace simulator run this very code: a
 * policy is a function of virtual time (ms), with no timers or clocks of its own.
 */

/** What to do with an instance that has just become idle at `now`. */
export interface IdleDecision {
  /** Unload now and load the function again at this time (a prewarm). */
  prewarmAt?: number;
  /** Keep the instance (kept, or prewarmed) loaded until this time, then unload it. */
  keepUntil: number;
}

/** A policy's memory of one function. */
export interface FunctionPolicy {
  /** An invocation arrives at `now`, `idleMs` after the previous one ended (undefined for the first). */
  onInvocation(now: number, idleMs: number | undefined): void;
  /** The function's last instance became idle at `now`. */
  onIdle(now: number): IdleDecision;
  /** Why the last decision was what it was, for metrics and the simulator's report. */
  readonly mode: string;
}

export interface KeepAlivePolicy {
  readonly name: string;
  forFunction(): FunctionPolicy;
}

/** Keep every idle instance for a fixed time (OpenWhisk's and most platforms' default). */
export class FixedKeepAlive implements KeepAlivePolicy {
  readonly name: string;
  constructor(readonly keepAliveMs: number) {
    this.name = `fixed:${formatDuration(keepAliveMs)}`;
  }
  forFunction(): FunctionPolicy {
    const keepAliveMs = this.keepAliveMs;
    return {
      mode: 'fixed',
      onInvocation() {},
      onIdle: (now) => ({ keepUntil: now + keepAliveMs }),
    };
  }
}

export interface HybridOptions {
  /** Width of a histogram bin (the paper: one minute). */
  binMs: number;
  /** Idle times the histogram covers (the paper: four hours). */
  rangeMs: number;
  /** Percentile of idle times at which to prewarm (the paper: 5th). */
  headPercentile: number;
  /** Percentile up to which to keep the instance (the paper: 99th). */
  tailPercentile: number;
  /** Safety margin: prewarm this much earlier and keep this much longer (the paper: 10%). */
  margin: number;
  /** The histogram is representative once it holds this many idle times... */
  minSamples: number;
  /** ...and the coefficient of variation of its bin counts is at least this (the paper: 2). */
  minCv: number;
  /** Fall back when more than this share of idle times fall out of range. */
  maxOutOfRange: number;
  /** The keep-alive used while the histogram is not representative. */
  fallbackMs: number;
}

export const HYBRID_DEFAULTS: HybridOptions = {
  binMs: 60_000,
  rangeMs: 4 * 3_600_000,
  headPercentile: 5,
  tailPercentile: 99,
  margin: 0.1,
  minSamples: 10,
  minCv: 2,
  maxOutOfRange: 0.5,
  fallbackMs: 10 * 60_000,
};

/**
 * Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020): a per-function histogram of idle
 * times. After an invocation the instance is unloaded and prewarmed again just before the 5th
 * percentile of the idle times, and kept until their 99th; while the histogram is not yet
 * representative, or most idle times fall beyond its range, a fixed keep-alive is used instead.
 */
export class HybridHistogram implements KeepAlivePolicy {
  readonly name: string;
  readonly options: HybridOptions;

  constructor(options: Partial<HybridOptions> = {}, name = 'hybrid') {
    this.options = { ...HYBRID_DEFAULTS, ...options };
    this.name = name;
  }

  forFunction(): FunctionPolicy {
    const o = this.options;
    const bins = new Array<number>(Math.ceil(o.rangeMs / o.binMs)).fill(0);
    let inRange = 0;
    let outOfRange = 0;
    let mode = 'fallback';
    return {
      get mode() {
        return mode;
      },
      onInvocation(_now, idleMs) {
        if (idleMs === undefined) return;
        const bin = Math.floor(Math.max(0, idleMs) / o.binMs);
        if (bin < bins.length) {
          bins[bin] = (bins[bin] as number) + 1;
          inRange++;
        } else outOfRange++;
      },
      onIdle(now) {
        const total = inRange + outOfRange;
        if (
          total === 0 ||
          outOfRange / total > o.maxOutOfRange ||
          inRange < o.minSamples ||
          coefficientOfVariation(bins) < o.minCv
        ) {
          mode = 'fallback';
          return { keepUntil: now + o.fallbackMs };
        }
        mode = 'histogram';
        // Percentiles at bin granularity: the head's bin start, the tail's bin end.
        const head = percentileBin(bins, inRange, o.headPercentile) * o.binMs;
        const tail = (percentileBin(bins, inRange, o.tailPercentile) + 1) * o.binMs;
        const prewarm = Math.floor(head * (1 - o.margin));
        const keep = Math.ceil(tail * (1 + o.margin));
        if (prewarm <= 0) return { keepUntil: now + keep };
        return { prewarmAt: now + prewarm, keepUntil: now + keep };
      },
    };
  }
}

function percentileBin(bins: readonly number[], count: number, percentile: number): number {
  const target = Math.max(1, Math.ceil((percentile / 100) * count));
  let seen = 0;
  for (let i = 0; i < bins.length; i++) {
    seen += bins[i] as number;
    if (seen >= target) return i;
  }
  return bins.length - 1;
}

export function coefficientOfVariation(values: readonly number[]): number {
  const n = values.length;
  const mean = values.reduce((a, b) => a + b, 0) / n;
  if (mean === 0) return 0;
  const variance = values.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  return Math.sqrt(variance) / mean;
}

function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

// Bounds on a policy's durations. Every window the policy yields ends up as a timer delay, and
// Node fires a delay over 2^31 - 1 ms (24.8 days) at once: a fixed keep-alive may last a day (longer
// is what minInstances is for), and a hybrid bin up to an hour, whose 4-hour range scaled by 60
// (10 days, plus the margin) stays well inside that. Zero would make a hybrid histogram of no bins.
export const POLICY_DURATION_LIMITS = {
  fixed: { min: 1, max: 24 * 3_600_000 },
  hybrid: { min: 1, max: 3_600_000 },
} as const;

/**
 * `fixed:10m`, `fixed:30s`, `hybrid`, or `hybrid:<bin>` (the histogram's bin width; every other
 * window scales with it, so that `hybrid:100ms` is the paper's policy on a time axis 600 times
 * faster, as a scaled-down replay needs). Throws with the reason for anything else, durations
 * out of `POLICY_DURATION_LIMITS` included.
 */
export function parsePolicy(text: string): KeepAlivePolicy {
  const [kind, arg] = text.trim().split(/:(.*)/s) as [string, string | undefined];
  if (kind === 'fixed') {
    if (!arg) throw new Error('fixed needs a duration: fixed:10m');
    return new FixedKeepAlive(policyDuration('fixed', arg));
  }
  if (kind === 'hybrid') {
    if (!arg) return new HybridHistogram();
    const binMs = policyDuration('hybrid', arg);
    const scale = binMs / HYBRID_DEFAULTS.binMs;
    return new HybridHistogram(
      { binMs, rangeMs: Math.round(HYBRID_DEFAULTS.rangeMs * scale), fallbackMs: Math.round(HYBRID_DEFAULTS.fallbackMs * scale) },
      `hybrid:${arg}`,
    );
  }
  throw new Error(`Unknown keep-alive policy "${text.slice(0, 80)}": use fixed:<duration> (e.g. fixed:10m) or hybrid.`);
}

function policyDuration(kind: keyof typeof POLICY_DURATION_LIMITS, text: string): number {
  const { min, max } = POLICY_DURATION_LIMITS[kind];
  const ms = text.length <= 40 ? parseDuration(text) : Number.NaN;
  if (!(ms >= min && ms <= max)) {
    const what = kind === 'fixed' ? 'A fixed keep-alive' : "A hybrid policy's bin";
    throw new Error(`${what} must last from ${formatDuration(min)} to ${formatDuration(max)}; got "${text.slice(0, 40)}".`);
  }
  return ms;
}
