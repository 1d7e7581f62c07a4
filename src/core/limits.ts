import { badRequest } from './errors.js';

export interface Limits {
  /** Memory in MB: the heap or RAM the function may use. */
  memory: number;
  /** Wall-clock time in ms one invocation may take. */
  timeout: number;
  /** How many invocations one instance serves at once. */
  concurrency: number;
  /** Log bytes kept per activation, in KB. */
  logs: number;
}

interface Range {
  min: number;
  max: number;
  default: number;
  unit: string;
}

// OpenWhisk's defaults and ranges, except memory, whose floor is lower so that isolates and wasm
// modules can declare how little they need. Backends that need more say so at deploy.
export const LIMIT_RANGES: Record<keyof Limits, Range> = {
  memory: { min: 16, max: 8192, default: 256, unit: 'MB' },
  timeout: { min: 100, max: 300_000, default: 60_000, unit: 'ms' },
  concurrency: { min: 1, max: 500, default: 1, unit: '' },
  logs: { min: 0, max: 10_240, default: 10_240, unit: 'KB' },
};

export const DEFAULT_LIMITS: Limits = {
  memory: LIMIT_RANGES.memory.default,
  timeout: LIMIT_RANGES.timeout.default,
  concurrency: LIMIT_RANGES.concurrency.default,
  logs: LIMIT_RANGES.logs.default,
};

/** Merges requested limits over a base, rejecting values out of range with a message naming the limit. */
export function resolveLimits(requested: Partial<Limits> | undefined, base: Limits = DEFAULT_LIMITS): Limits {
  const limits = { ...base, ...stripUndefined(requested ?? {}) };
  for (const key of Object.keys(LIMIT_RANGES) as (keyof Limits)[]) {
    const range = LIMIT_RANGES[key];
    const value = limits[key];
    if (!Number.isInteger(value) || value < range.min || value > range.max) {
      throw badRequest(
        `limits.${key} must be an integer from ${range.min} to ${range.max}${range.unit ? ` ${range.unit}` : ''}; got ${value}.`,
      );
    }
  }
  return limits;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/**
 * How deeply JSON that crosses the platform (request bodies and parameters, results) may nest.
 * Real documents (API payloads, GeoJSON, configuration) stay within a few dozen levels; 512
 * leaves room for generated ones such as syntax trees, and is a tenth of the ~5,000 levels at
 * which V8's recursive JSON.stringify overflows the default stack: every part a value passes
 * through (storage, copying into a sandbox, the guest protocol) handles it with room to spare.
 * The same limit for parameters and results lets a function echo anything the API accepts.
 */
export const MAX_JSON_DEPTH = 512;

/** True when objects and arrays in `value` nest deeper than `max` levels. Iterative: safe on any depth. */
export function nestedDeeperThan(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop() as [unknown, number];
    if (item === null || typeof item !== 'object') continue;
    if (depth + 1 > max) return true;
    for (const child of Array.isArray(item) ? item : Object.values(item)) {
      if (child !== null && typeof child === 'object') stack.push([child, depth + 1]);
    }
  }
  return false;
}
