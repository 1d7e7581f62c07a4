import type { ActionVersion } from '../core/types.js';
import { annotationValue } from '../core/types.js';
import { type KeepAlivePolicy, parsePolicy } from './policy.js';

/** How the scheduler treats one function, from its annotations. */
export interface FunctionSettings {
  /** `keepAlive`: its own keep-alive policy (e.g. "hybrid", "fixed:5m"); the server's when absent. */
  policy?: KeepAlivePolicy;
  /** `minInstances`: instances kept ready at all times (provisioned concurrency). */
  minInstances: number;
  /** `maxInstances`: at most this many instances at once; further invocations queue. */
  maxInstances: number;
  /** `maxQueued`: invocations that may wait for an instance; beyond them, 429. */
  maxQueued: number;
  /** `retries`: further attempts for an asynchronous invocation that failed retryably. */
  retries: number;
}

export const SETTING_LIMITS = {
  minInstances: { min: 0, max: 100, default: 0 },
  maxInstances: { min: 1, max: 10_000, default: 10_000 },
  maxQueued: { min: 0, max: 100_000, default: 1000 },
  // Lambda's default for asynchronous invocations.
  retries: { min: 0, max: 10, default: 2 },
} as const;

/** Reads and checks a function's scheduling annotations; throws with the reason when one is wrong. */
export function functionSettings(action: Pick<ActionVersion, 'annotations'>): FunctionSettings {
  const integer = (key: keyof typeof SETTING_LIMITS): number => {
    const value = annotationValue(action.annotations, key);
    const range = SETTING_LIMITS[key];
    if (value === undefined || value === null) return range.default;
    const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < range.min || n > range.max) {
      throw new Error(
        `The annotation ${key} must be an integer from ${range.min} to ${range.max}; got ${JSON.stringify(value)}.`,
      );
    }
    return n;
  };
  const settings: FunctionSettings = {
    minInstances: integer('minInstances'),
    maxInstances: integer('maxInstances'),
    maxQueued: integer('maxQueued'),
    retries: integer('retries'),
  };
  if (settings.minInstances > settings.maxInstances) throw new Error('The annotation minInstances may not exceed maxInstances.');
  const policy = annotationValue(action.annotations, 'keepAlive');
  if (policy !== undefined && policy !== null) {
    if (typeof policy !== 'string') throw new Error('The annotation keepAlive must be a string such as "hybrid" or "fixed:10m".');
    settings.policy = parsePolicy(policy);
  }
  return settings;
}

/**
 * Settings of a version already stored. One stored by an earlier build whose annotations today's
 * checks refuse (a keep-alive of zero, say) runs with the defaults rather than failing every call.
 */
export function storedFunctionSettings(action: Pick<ActionVersion, 'annotations'>): FunctionSettings {
  try {
    return functionSettings(action);
  } catch {
    return functionSettings({ annotations: [] });
  }
}
