/** Messages between the wasm backend and a Python sandbox's worker thread. */

import type { PyodideFiles } from './pyodide-context.js';

export interface PythonWorkerData {
  files: PyodideFiles;
  /** The base snapshot to restore (shared memory); absent: start from nothing and make one. */
  snapshot?: Uint8Array;
  /** The interpreter's linear memory may grow to this many bytes. */
  heapBytes: number;
  /** Its in-memory files (the scratch space) may hold this many. */
  scratchBytes: number;
}

export type PythonRequest =
  /** Restores the base snapshot, or (without one) starts the interpreter from nothing and answers with a snapshot of it. */
  | { type: 'start' }
  /** Writes the function's files under `dir` and imports `__main__.py`'s `main`; its output is budgeted from then on. */
  | { type: 'load'; dir: string; files: [string, Uint8Array][]; main: string; logLimitBytes: number }
  /** `request`: `{"value": params, "env": {...}}` as JSON. */
  | { type: 'run'; id: string; request: string };

export type PythonResponse =
  /** A start from nothing brings its snapshot and V8's code cache of the runtime's script. */
  | { type: 'started'; ms: number; snapshot?: Uint8Array; asmCache?: Uint8Array }
  | { type: 'failed'; error: string }
  /** `error` is empty when the function loaded. */
  | { type: 'loaded'; error: string }
  | { type: 'log'; id: string; stream: 'stdout' | 'stderr'; text: string }
  /** The result's JSON: the function's return value, or `{"error": ...}` for what it raised. */
  | { type: 'done'; id: string; result: string }
  | { type: 'crashed'; id: string; error: string };
