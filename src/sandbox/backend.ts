import type { Registry } from 'prom-client';
import type { Isolation, Kind } from '../core/kinds.js';
import { qualifiedName } from '../core/names.js';
import { type NetworkPolicy, storedNetworkPolicy } from '../core/network-policy.js';
import { type ActionVersion, annotationValue } from '../core/types.js';
import type { FunctionPackage, RuntimeStart } from '../guest/protocol.js';

/** What a sandbox needs to load one version of a function. */
export interface FunctionCode {
  /** `namespace/name@version#revision`: identifies the version in caches; never reused. */
  key: string;
  kind: Kind;
  code: string;
  binary: boolean;
  main: string;
  /** The name stack traces and syntax errors give the function's file: the action's name and extension. */
  filename: string;
  env: Record<string, string>;
  /**
   * Log bytes one activation (or the initialisation) may print: a sandbox stops copying output
   * out once an activation has printed this much and writes one truncation line instead.
   */
  logLimitBytes: number;
  /** The action asked for a snapshot after initialisation (annotation `snapshot: true`). */
  snapshot?: boolean;
  /** What the deploy made of a zip or a compiled language; `code` is then not used. */
  package?: FunctionPackage;
  /** The sandbox's memory limit in MB and the action's concurrency, for the guest's runtime. */
  memoryMb?: number;
  concurrency?: number;
}

/** Resources a blank sandbox is created with, before any code is loaded. */
export interface SandboxSpec {
  memoryMb: number;
  /** The kind it will load: a backend whose images differ per language makes a blank sandbox of this kind. */
  kind?: Kind;
  /** Made ahead of demand for the pool of blank sandboxes, rather than for a waiting request. */
  ahead?: boolean;
  /** `egress`: the sandbox gets a network of its own with NAT to outside addresses; absent or `none`: no network. */
  network?: NetworkPolicy;
}

export type LogStream = 'stdout' | 'stderr';
export type LogSink = (stream: LogStream, text: string) => void;

export interface RunRequest {
  activationId: string;
  params: Record<string, unknown>;
  /** Wall-clock deadline, ms since the epoch. */
  deadline: number;
  env: Record<string, string>;
  /** Lambda's client context (JSON), for a Lambda custom runtime's Lambda-Runtime-Client-Context. */
  clientContext?: string;
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
  | { kind: 'crash'; reason: string }
  /**
   * The function never began this run (the sandbox died or was stopped before it got to it, e.g.
   * blocked by an earlier activation's leftover work): the invoker may place it elsewhere.
   */
  | { kind: 'not-started'; reason: string };

export type InitOutcome = { ok: true } | { ok: false; kind: 'error' | 'timeout' | 'oom' | 'crash'; error: string };

export interface Sandbox {
  readonly id: string;
  /** False once the sandbox has died or been destroyed. */
  readonly alive: boolean;
  init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome>;
  run(request: RunRequest): Promise<RunOutcome>;
  /** Called at most once if the sandbox dies on its own (not through destroy). */
  onDeath(listener: (reason: string) => void): void;
  /**
   * Starts a kind's runtime in a blank sandbox ahead of its function (sandboxes whose guest is
   * the agent); a later `init` of a package built for that runtime loads into it.
   */
  prestart?(runtime: RuntimeStart, memoryMb: number): void;
  destroy(): Promise<void>;
}

/** Whether a backend runs a kind on this host, and if not, why (and how to fix it). */
export interface KindSupport {
  kind: Kind;
  available: boolean;
  why?: string;
}

export interface BackendStatus {
  isolation: Isolation;
  available: boolean;
  /** For a backend that works: every kind, whether it runs here, and why not. */
  kinds?: KindSupport[];
  /** What was found: versions, accelerator, runtime chosen. */
  detail: string;
  /** When unavailable: how to make it work. */
  fix?: string;
  /** Its probe has not ended yet: it may still turn out to work. */
  probing?: boolean;
  /** For a backend that runs VMs: whether they run under KVM or QEMU's emulation. */
  accelerator?: 'kvm' | 'tcg';
}

export interface Backend {
  readonly isolation: Isolation;
  /** Smallest memory limit this backend can run a function in, in MB. */
  readonly minMemoryMb: number;
  status(): Promise<BackendStatus>;
  /** Deploy-time checks beyond the generic ones, on what is about to be stored; throws an IsolaError with the reason. */
  validate?(action: Omit<ActionVersion, 'version' | 'revision' | 'updated'>): Promise<void>;
  create(spec: SandboxSpec): Promise<Sandbox>;
  /**
   * Per-function snapshots, for backends that can take them: a sandbox restored with this
   * function already loaded (and its randomness reseeded), or undefined when there is none yet.
   */
  restore?(code: FunctionCode, spec: SandboxSpec): Promise<Sandbox | undefined>;
  /** Takes, in the background, a snapshot of this function just after its initialisation. */
  snapshot?(code: FunctionCode, spec: SandboxSpec): void;
  /**
   * Adds this backend's own series (named `isola_<isolation>_...`) to the platform's metrics.
   * Called once, when the backend is ready; collectors read the backend's state on each scrape.
   */
  registerMetrics?(registry: Registry): void;
  close(): Promise<void>;
}

/**
 * Output that an activation's leftover work (a timer, a promise) produced after the activation
 * returned. Sandboxes hold it and write it at the start of the next activation on the same
 * sandbox, each line marked with where it came from, as Lambda does for a frozen environment.
 */
export function lateOutputLine(activationId: string, text: string): string {
  return `[after activation ${activationId} returned] ${text}`;
}

/** Parameter values that can be environment variables: strings, numbers and booleans. */
function parametersAsEnv(action: ActionVersion): Record<string, string> {
  const env: Record<string, string> = {};
  for (const { key, value } of action.parameters) {
    if (['string', 'number', 'boolean'].includes(typeof value)) env[key] = String(value);
  }
  return env;
}

/** `namespace/name@version#revision`: one stored version, never the same for two of them. */
export function versionKey(action: Pick<ActionVersion, 'namespace' | 'name' | 'version' | 'revision'>): string {
  return `${action.namespace}/${action.name}@${action.version}#${action.revision}`;
}

/** The blank sandbox a version of a function needs, before its code is loaded. */
export function sandboxSpecOf(action: ActionVersion): SandboxSpec {
  const network = storedNetworkPolicy(action.annotations);
  return { memoryMb: action.limits.memory, kind: action.exec.kind, ...(network === 'egress' ? { network } : {}) };
}

/**
 * What the deploy made of an action's exec (src/platform/function-packages.ts): a package the guest
 * unpacks, CommonJS compiled from an ES module or TypeScript, and the extension of its file.
 */
export interface PreparedCode {
  package?: FunctionPackage;
  code?: string;
  extension: string;
}

/** The extension of a kind's source when nothing was prepared: JavaScript and wasm. */
function defaultExtension(action: ActionVersion): string {
  return action.exec.kind === 'wasm' ? '.wasm' : '.js';
}

export function functionCodeOf(action: ActionVersion, prepared?: PreparedCode): FunctionCode {
  const replaced = prepared?.code !== undefined;
  return {
    key: versionKey(action),
    kind: action.exec.kind,
    code: prepared?.code ?? action.exec.code,
    binary: replaced ? false : action.exec.binary,
    main: action.exec.main ?? 'main',
    filename: `${action.name}${prepared ? prepared.extension : defaultExtension(action)}`,
    logLimitBytes: action.limits.logs * 1024,
    ...(annotationValue(action.annotations, 'snapshot') === true ? { snapshot: true } : {}),
    ...(prepared?.package ? { package: prepared.package } : {}),
    memoryMb: action.limits.memory,
    concurrency: action.limits.concurrency,
    env: {
      // A WASI module has no other way to read its configuration than its environment; a Lambda
      // custom runtime reads its function's (Lambda's Environment.Variables, stored as parameters) there.
      ...(action.exec.kind === 'wasm' || prepared?.package?.lambdaRuntime ? parametersAsEnv(action) : {}),
      __OW_NAMESPACE: action.namespace,
      __OW_ACTION_NAME: qualifiedName(action.namespace, action.name),
      __OW_ACTION_VERSION: action.version,
    },
  };
}
