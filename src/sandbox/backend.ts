import type { Isolation, Kind } from '../core/kinds.js';
import { type ActionVersion, annotationValue } from '../core/types.js';

/** What a sandbox needs to load one version of a function. */
export interface FunctionCode {
  /** `namespace/name@version`: identifies the version in caches. */
  key: string;
  kind: Kind;
  code: string;
  binary: boolean;
  main: string;
  env: Record<string, string>;
  /** The action asked for a snapshot after initialisation (annotation `snapshot: true`). */
  snapshot?: boolean;
}

/** Resources a blank sandbox is created with, before any code is loaded. */
export interface SandboxSpec {
  memoryMb: number;
  /** Made ahead of demand for the pool of blank sandboxes, rather than for a waiting request. */
  ahead?: boolean;
}

export type LogStream = 'stdout' | 'stderr';
export type LogSink = (stream: LogStream, text: string) => void;

export interface RunRequest {
  activationId: string;
  params: Record<string, unknown>;
  /** Wall-clock deadline, ms since the epoch. */
  deadline: number;
  env: Record<string, string>;
  onLog: LogSink;
}

/**
 * How a run ended. `result` and `error` (the function threw or rejected) leave the sandbox
 * usable; the others mean the sandbox is gone and must be replaced.
 */
export type RunOutcome =
  | { kind: 'result'; result: unknown }
  | { kind: 'error'; error: unknown }
  | { kind: 'timeout' }
  | { kind: 'oom' }
  | { kind: 'crash'; reason: string };

export type InitOutcome = { ok: true } | { ok: false; kind: 'error' | 'timeout' | 'oom' | 'crash'; error: string };

export interface Sandbox {
  readonly id: string;
  /** False once the sandbox has died or been destroyed. */
  readonly alive: boolean;
  init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome>;
  run(request: RunRequest): Promise<RunOutcome>;
  /** Called at most once if the sandbox dies on its own (not through destroy). */
  onDeath(listener: (reason: string) => void): void;
  destroy(): Promise<void>;
}

export interface BackendStatus {
  isolation: Isolation;
  available: boolean;
  /** What was found: versions, accelerator, runtime chosen. */
  detail: string;
  /** When unavailable: how to make it work. */
  fix?: string;
}

export interface Backend {
  readonly isolation: Isolation;
  /** Smallest memory limit this backend can run a function in, in MB. */
  readonly minMemoryMb: number;
  status(): Promise<BackendStatus>;
  /** Deploy-time checks beyond the generic ones; throws an IsolaError with the reason. */
  validate?(action: ActionVersion): Promise<void>;
  create(spec: SandboxSpec): Promise<Sandbox>;
  /**
   * Per-function snapshots, for backends that can take them: a sandbox restored with this
   * function already loaded (and its randomness reseeded), or undefined when there is none yet.
   */
  restore?(code: FunctionCode, spec: SandboxSpec): Promise<Sandbox | undefined>;
  /** Takes, in the background, a snapshot of this function just after its initialisation. */
  snapshot?(code: FunctionCode, spec: SandboxSpec): void;
  close(): Promise<void>;
}

/** Parameter values that can be environment variables: strings, numbers and booleans. */
function parametersAsEnv(action: ActionVersion): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { key, value } of action.parameters) {
    if (['string', 'number', 'boolean'].includes(typeof value)) env[key] = String(value);
  }
  return env;
}

export function functionCodeOf(action: ActionVersion): FunctionCode {
  return {
    key: `${action.namespace}/${action.name}@${action.version}`,
    kind: action.exec.kind,
    code: action.exec.code,
    binary: action.exec.binary,
    main: action.exec.main ?? 'main',
    ...(annotationValue(action.annotations, 'snapshot') === true ? { snapshot: true } : {}),
    env: {
      // A WASI module has no other way to read its configuration than its environment.
      ...(action.exec.kind === 'wasm' ? parametersAsEnv(action) : {}),
      __OW_NAMESPACE: action.namespace,
      __OW_ACTION_NAME: `/${action.namespace}/${action.name}`,
      __OW_ACTION_VERSION: action.version,
    },
  };
}
