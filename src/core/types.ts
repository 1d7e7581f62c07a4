import type { Isolation, Kind } from './kinds.js';
import type { Limits } from './limits.js';

export interface KeyValue {
  key: string;
  value: unknown;
}

export interface Exec {
  kind: Kind;
  /** JavaScript source, or a base64 WebAssembly module when `binary` is true. */
  code: string;
  binary: boolean;
  /** Entry point; `main` when absent. */
  main?: string;
}

/** What a sequence carries as its exec: it is never run, the sequence's components are. */
export const SEQUENCE_EXEC: Exec = Object.freeze({ kind: 'nodejs:20', code: '', binary: false });

/** One immutable version of an action. Updating an action stores a new one. */
export interface ActionVersion {
  namespace: string;
  name: string;
  version: string;
  /**
   * Random and never reused: tells apart versions that share a number (an action deleted and
   * created again), so that nothing keyed by a version (instance pools, code caches, snapshots)
   * ever serves one incarnation's code for another's.
   */
  revision: string;
  exec: Exec;
  limits: Limits;
  parameters: KeyValue[];
  annotations: KeyValue[];
  isolation: Isolation;
  /**
   * A sequence's components, fully qualified (`/ns/name`): the action runs them in turn and has
   * no code of its own (`exec` is then a placeholder that nothing runs).
   */
  sequence?: string[];
  /**
   * Where this version is stored, when it was reached by another name (through a binding, or as
   * another namespace's shared action): `namespace` and `name` are then the caller's view of it.
   */
  origin?: { namespace: string; name: string };
  /** ms since the epoch */
  updated: number;
}

export type ActivationStatus = 'success' | 'application error' | 'action developer error' | 'whisk internal error';

export interface ActivationResponse {
  status: ActivationStatus;
  success: boolean;
  result: unknown;
}

/** What the platform records for one invocation, in OpenWhisk's shape. */
export interface ActivationRecord {
  activationId: string;
  namespace: string;
  name: string;
  version: string;
  subject: string;
  /** ms since the epoch; for a cold start this is when initialisation began. */
  start: number;
  end: number;
  duration: number;
  response: ActivationResponse;
  logs: string[];
  annotations: KeyValue[];
  publish: boolean;
}

export function annotationValue(annotations: readonly KeyValue[], key: string): unknown {
  return annotations.find((a) => a.key === key)?.value;
}

/** OpenWhisk versions are semver strings; every update bumps the patch number. */
export function nextVersion(previous: string | undefined): string {
  if (!previous) return '0.0.1';
  const [major = 0, minor = 0, patch = 0] = previous.split('.').map((n) => Number.parseInt(n, 10) || 0);
  return `${major}.${minor}.${patch + 1}`;
}

export function compareVersions(a: string, b: string): number {
  const pa = a.split('.').map(Number);
  const pb = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}
