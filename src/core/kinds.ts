import { badRequest } from './errors.js';

export const ISOLATIONS = ['isolate', 'wasm', 'process', 'container', 'gvisor', 'microvm', 'vm'] as const;
export type Isolation = (typeof ISOLATIONS)[number];

export const KINDS = ['nodejs:20', 'python:3', 'java:17', 'go:1.19', 'ruby:3.1', 'php:8.2', 'native', 'wasm'] as const;
export type Kind = (typeof KINDS)[number];

// Names real OpenWhisk clients send for the default Node.js runtime. A Map, not an object literal:
// a kind such as "constructor" or "__proto__" must not find Object.prototype's members.
const KIND_ALIASES: ReadonlyMap<string, Kind> = new Map([
  ['nodejs:20', 'nodejs:20'],
  ['nodejs:default', 'nodejs:20'],
  ['nodejs', 'nodejs:20'],
  ['python:3', 'python:3'],
  ['python:default', 'python:3'],
  ['python', 'python:3'],
  ['java:17', 'java:17'],
  ['java:default', 'java:17'],
  ['java', 'java:17'],
  ['go:1.19', 'go:1.19'],
  ['go:default', 'go:1.19'],
  ['go', 'go:1.19'],
  ['ruby:3.1', 'ruby:3.1'],
  ['ruby:default', 'ruby:3.1'],
  ['ruby', 'ruby:3.1'],
  ['php:8.2', 'php:8.2'],
  ['php:default', 'php:8.2'],
  ['php', 'php:8.2'],
  ['native', 'native'],
  ['wasm', 'wasm'],
]);

/** Every backend that runs a whole process tree: the ones that can host any language's runtime. */
const PROCESS_LIKE: readonly Isolation[] = ['process', 'container', 'gvisor', 'microvm', 'vm'];

/** Which isolation backends can run a kind. The first is the default. */
export const ISOLATIONS_FOR_KIND: Record<Kind, readonly Isolation[]> = {
  'nodejs:20': ['isolate', ...PROCESS_LIKE],
  // CPython through Pyodide on "wasm", as Cloudflare runs Python: chosen, never the default.
  'python:3': [...PROCESS_LIKE, 'wasm'],
  'java:17': PROCESS_LIKE,
  'go:1.19': PROCESS_LIKE,
  'ruby:3.1': PROCESS_LIKE,
  'php:8.2': PROCESS_LIKE,
  native: PROCESS_LIKE,
  wasm: ['wasm'],
};

/**
 * The kind a backend's blank sandboxes are for when none is named: JavaScript where it runs, else
 * the kind this backend is the default of (python:3 also runs under wasm, but wasm's are modules).
 */
export function defaultKindOf(isolation: Isolation): Kind {
  if (ISOLATIONS_FOR_KIND['nodejs:20'].includes(isolation)) return 'nodejs:20';
  return KINDS.find((kind) => ISOLATIONS_FOR_KIND[kind][0] === isolation) ?? 'nodejs:20';
}

export function isIsolation(value: string): value is Isolation {
  return (ISOLATIONS as readonly string[]).includes(value);
}

export function resolveKind(kind: string): Kind {
  const resolved = KIND_ALIASES.get(kind);
  if (!resolved) {
    throw badRequest(`The kind "${kind.slice(0, 40)}" is not supported. Supported kinds: ${KINDS.join(', ')}.`);
  }
  return resolved;
}

/**
 * The backends that can run this exec: a Node.js zip (`node_modules`, files read at run time)
 * needs a file system, so it cannot run in a V8 isolate.
 */
export function isolationsFor(kind: Kind, packaged: boolean): readonly Isolation[] {
  return kind === 'nodejs:20' && packaged ? PROCESS_LIKE : ISOLATIONS_FOR_KIND[kind];
}

/**
 * The isolation an action runs under: the one asked for when its kind can run there, else the
 * kind's default (`isolate` for Node.js source, `wasm` for wasm, `process` for everything else).
 */
export function resolveIsolation(kind: Kind, requested: unknown, packaged = false): Isolation {
  const allowed = isolationsFor(kind, packaged);
  if (requested === undefined || requested === null) return allowed[0] as Isolation;
  if (typeof requested !== 'string' || !isIsolation(requested)) {
    throw badRequest(
      `The isolation annotation must be one of ${ISOLATIONS.join(', ')}; got ${JSON.stringify(requested).slice(0, 40)}.`,
    );
  }
  if (!allowed.includes(requested)) {
    const what = kind === 'nodejs:20' && packaged ? `A ${kind} zip` : `Kind ${kind}`;
    throw badRequest(`${what} cannot run under isolation "${requested}"; it runs under: ${allowed.join(', ')}.`);
  }
  return requested;
}
