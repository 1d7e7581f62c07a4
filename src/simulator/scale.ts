import { parseDuration } from '../core/duration.js';
import { MINUTE_MS } from './simulate.js';

/** The same policy on a time axis where a trace minute lasts `minuteMs`. */
export function scalePolicy(policy: string, minuteMs: number): string {
  const scale = minuteMs / MINUTE_MS;
  if (policy === 'hybrid') return `hybrid:${Math.max(1, Math.round(MINUTE_MS * scale))}ms`;
  const fixed = /^fixed:(.+)$/.exec(policy);
  if (fixed) return `fixed:${Math.max(1, Math.round(parseDuration(fixed[1] as string) * scale))}ms`;
  throw new Error(`Cannot scale the policy "${policy}": use fixed:<duration> or hybrid.`);
}
