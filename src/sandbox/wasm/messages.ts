/** Messages between the wasm backend and its worker threads. */

export type WasmAbi = 'command' | 'reactor';

export interface RunMessage {
  type: 'run';
  id: string;
  /** Identifies the compiled module; a worker keeps modules it has seen. */
  key: string;
  /** Sent only to a worker that does not have the module yet. */
  module?: WebAssembly.Module;
  abi: WasmAbi;
  /** The invocation's parameters as JSON. */
  input: string;
  env: Record<string, string>;
  /** Limits (pages) of the memory the host gives the run as `env.memory`: the module's own, made an import, or the one it imports. */
  importedMemory?: { initial: number; maximum: number };
  maxPages: number;
}

/**
 * A result travels as the module's JSON text and is parsed by the host: a structured clone of a
 * deeply nested value cannot be deserialised (the receiving side runs out of stack), and the
 * message would be lost.
 */
export type WorkerOutcome =
  | { kind: 'json'; text: string; source: string }
  | { kind: 'error'; error: unknown }
  | { kind: 'oom' }
  | { kind: 'crash'; reason: string };

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'log'; id: string; stream: 'stdout' | 'stderr'; text: string }
  /** `ms`: how long the run took on the worker (wall time), which makes a version eligible for the fast path. */
  | { type: 'done'; id: string; outcome: WorkerOutcome; ms: number };

/** The reactor ABI's exports. */
export const REACTOR_ALLOC = 'isola_alloc';
export const REACTOR_HANDLE = 'isola_handle';
