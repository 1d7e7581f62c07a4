import type { KeepAlivePolicy } from '../scheduler/policy.js';
import type { TraceApp } from './trace.js';

export const MINUTE_MS = 60_000;

export interface PolicyReport {
  policy: string;
  apps: number;
  invocations: number;
  coldStarts: number;
  coldStartPct: number;
  /** Memory held by loaded but idle instances, GB x s. */
  wastedMemoryGbSeconds: number;
  /** The 75th percentile over apps of each app's cold-start percentage (the paper's headline). */
  appColdStartPctP75: number;
  /** Share of apps whose decisions came from the histogram (hybrid) at the end of the trace. */
  appsOnHistogramPct: number;
}

interface AppOutcome {
  invocations: number;
  coldStarts: number;
  wastedMs: number;
  mode: string;
}

/**
 * Replays one application under a policy, in virtual time with minute resolution as the paper
 * does: an invocation is cold when no instance is loaded at its minute; all invocations of one
 * minute after the first find the instance loaded. Idle memory is counted from the end of an
 * execution (or a prewarm) until the next invocation or the unload. `minuteMs` scales the time
 * axis (a live replay runs minutes as fractions of a second).
 */
export function simulateApp(app: TraceApp, policy: KeepAlivePolicy, minuteMs = MINUTE_MS): AppOutcome {
  const fn = policy.forFunction();
  const scale = minuteMs / MINUTE_MS;
  const duration = app.durationMs * scale;
  let loaded = false;
  let idleSince = 0;
  let keepUntil = Number.NEGATIVE_INFINITY;
  let prewarmAt: number | undefined;
  let lastEnd: number | undefined;
  let invocations = 0;
  let coldStarts = 0;
  let wastedMs = 0;

  const advance = (now: number) => {
    if (prewarmAt !== undefined && prewarmAt <= now) {
      loaded = true;
      idleSince = prewarmAt;
      prewarmAt = undefined;
    }
    if (loaded && keepUntil <= now) {
      wastedMs += Math.max(0, keepUntil - idleSince);
      loaded = false;
    }
  };

  for (let minute = 0; minute < app.perMinute.length; minute++) {
    const count = app.perMinute[minute] as number;
    if (count === 0) continue;
    const now = minute * minuteMs;
    advance(now);
    if (loaded) wastedMs += now - idleSince;
    else coldStarts++;
    invocations += count;
    fn.onInvocation(now, lastEnd === undefined ? undefined : Math.max(0, now - lastEnd));
    const end = now + duration;
    lastEnd = end;
    const decision = fn.onIdle(end);
    prewarmAt = undefined;
    if (decision.prewarmAt !== undefined) {
      loaded = false;
      prewarmAt = decision.prewarmAt;
    } else {
      loaded = true;
      idleSince = end;
    }
    keepUntil = decision.keepUntil;
  }
  const traceEnd = app.perMinute.length * minuteMs;
  advance(traceEnd);
  if (loaded) wastedMs += Math.max(0, Math.min(keepUntil, traceEnd) - idleSince);
  return { invocations, coldStarts, wastedMs: wastedMs / scale, mode: fn.mode };
}

export function simulate(apps: readonly TraceApp[], policy: KeepAlivePolicy, minuteMs = MINUTE_MS): PolicyReport {
  let invocations = 0;
  let coldStarts = 0;
  let wastedGbSeconds = 0;
  let onHistogram = 0;
  const perApp: number[] = [];
  let active = 0;
  for (const app of apps) {
    const outcome = simulateApp(app, policy, minuteMs);
    if (outcome.invocations === 0) continue;
    active++;
    invocations += outcome.invocations;
    coldStarts += outcome.coldStarts;
    wastedGbSeconds += (outcome.wastedMs / 1000) * (app.memoryMb / 1024);
    perApp.push((outcome.coldStarts / outcome.invocations) * 100);
    if (outcome.mode === 'histogram') onHistogram++;
  }
  perApp.sort((a, b) => a - b);
  const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
  return {
    policy: policy.name,
    apps: active,
    invocations,
    coldStarts,
    coldStartPct: round(invocations > 0 ? (coldStarts / invocations) * 100 : 0),
    wastedMemoryGbSeconds: round(wastedGbSeconds, 1),
    appColdStartPctP75: round(perApp[Math.max(0, Math.ceil(perApp.length * 0.75) - 1)] ?? 0),
    appsOnHistogramPct: round(active > 0 ? (onHistogram / active) * 100 : 0, 1),
  };
}
