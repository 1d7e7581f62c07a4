import { badRequest } from './errors.js';

export const ISOLATIONS = ['isolate', 'wasm', 'process', 'container', 'gvisor', 'microvm'] as const;
export type Isolation = (typeof ISOLATIONS)[number];

export const KINDS = ['nodejs:20', 'wasm'] as const;
export type Kind = (typeof KINDS)[number];

// Names real OpenWhisk clients send for the default Node.js runtime. A Map, not an object literal:
// a kind such as "constructor" or "__proto__" must not find Object.prototype's members.
const KIND_ALIASES: ReadonlyMap<string, Kind> = new Map([
  ['nodejs:20', 'nodejs:20'],
  ['nodejs:default', 'nodejs:20'],
  ['nodejs', 'nodejs:20'],
  ['wasm', 'wasm'],
]);

/** Which isolation backends can run a kind. The first is the default. */
export const ISOLATIONS_FOR_KIND: Record<Kind, readonly Isolation[]> = {
  'nodejs:20': ['isolate', 'process', 'container', 'gvisor', 'microvm'],
  wasm: ['wasm'],
};

export function isIsolation(value: string): value is Isolation {
  return (ISOLATIONS as readonly string[]).includes(value);
}

export function resolveKind(kind: string): Kind {
  const resolved = KIND_ALIASES.get(kind);
  if (!resolved) {
    throw badRequest(
      `The kind "${kind.slice(0, 40)}" is not supported. Supported kinds: nodejs:20 (alias nodejs:default), wasm.`,
    );
  }
  return resolved;
}

export function resolveIsolation(kind: Kind, requested: unknown): Isolation {
  const allowed = ISOLATIONS_FOR_KIND[kind];
  if (requested === undefined || requested === null) return allowed[0] as Isolation;
  if (typeof requested !== 'string' || !isIsolation(requested)) {
    throw badRequest(
      `The isolation annotation must be one of ${ISOLATIONS.join(', ')}; got ${JSON.stringify(requested).slice(0, 40)}.`,
    );
  }
  if (!allowed.includes(requested)) {
    throw badRequest(`Kind ${kind} cannot run under isolation "${requested}"; it runs under: ${allowed.join(', ')}.`);
  }
  return requested;
}
