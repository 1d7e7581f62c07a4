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
  /** Pages of host memory for a module that imports `env.memory`. */
  importedMemory?: { initial: number; maximum: number };
  maxPages: number;
}

export type WorkerOutcome =
  | { kind: 'result'; result: unknown }
  | { kind: 'error'; error: unknown }
  | { kind: 'oom' }
  | { kind: 'crash'; reason: string };

export type WorkerMessage =
  | { type: 'ready' }
  | { type: 'log'; id: string; stream: 'stdout' | 'stderr'; text: string }
  | { type: 'done'; id: string; outcome: WorkerOutcome };

/** The reactor ABI's exports. */
export const REACTOR_ALLOC = 'isola_alloc';
export const REACTOR_HANDLE = 'isola_handle';
