/**
 * A worker thread that holds one Python interpreter (Pyodide, see pyodide-context.ts): one sandbox
 * of kind python:3 under isolation "wasm". Terminating the thread is how a run is stopped at its
 * deadline. Bundled into a single file, like the wasm worker.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { PyodideInterpreter } from './pyodide-context.js';
import type { PythonRequest, PythonResponse, PythonWorkerData } from './python-messages.js';

const port = parentPort;
if (!port) throw new Error('the Python worker must run in a worker thread');
const data = workerData as PythonWorkerData;

let interpreter: PyodideInterpreter | undefined;
/** The function's log limit per activation (and for its load), in bytes: known once it is loaded. */
let logLimitBytes = 1024 * 1024;
/** Output goes to the activation running now (or the load); each has its budget of bytes. */
let current: { id: string; bytes: number; truncated: boolean } = { id: '', bytes: 0, truncated: false };

function send(message: PythonResponse, transfer: ArrayBuffer[] = []): void {
  port?.postMessage(message, transfer);
}

function output(stream: 'stdout' | 'stderr', text: string): void {
  const budget = current;
  if (budget.truncated || text.length === 0) return;
  const bytes = Buffer.byteLength(text, 'utf8');
  if (budget.bytes + bytes <= logLimitBytes) {
    budget.bytes += bytes;
    send({ type: 'log', id: budget.id, stream, text });
    return;
  }
  budget.truncated = true;
  send({
    type: 'log',
    id: budget.id,
    stream: 'stderr',
    text: `Logs were truncated because the total bytes size exceeds the limit of ${logLimitBytes} bytes.\n`,
  });
}

function failure(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

async function handle(message: PythonRequest): Promise<void> {
  switch (message.type) {
    case 'start': {
      const started = performance.now();
      try {
        interpreter = await PyodideInterpreter.start({
          files: data.files,
          heapBytes: data.heapBytes,
          scratchBytes: data.scratchBytes,
          ...(data.snapshot ? { snapshot: data.snapshot } : { forSnapshot: true }),
          output,
        });
        if (data.snapshot) {
          send({ type: 'started', ms: performance.now() - started });
        } else {
          const snapshot = interpreter.snapshot();
          const asmCache = PyodideInterpreter.codeCache();
          send({ type: 'started', ms: performance.now() - started, snapshot, ...(asmCache ? { asmCache } : {}) }, [
            snapshot.buffer as ArrayBuffer,
            ...(asmCache ? [asmCache.buffer as ArrayBuffer] : []),
          ]);
        }
      } catch (error) {
        send({ type: 'failed', error: `The Python interpreter did not start: ${failure(error)}` });
      }
      return;
    }
    case 'load': {
      logLimitBytes = message.logLimitBytes;
      current = { id: '', bytes: 0, truncated: false };
      const error = interpreter ? interpreter.load(message.dir, message.files, message.main) : 'The interpreter has not started.';
      send({ type: 'loaded', error });
      return;
    }
    case 'run': {
      current = { id: message.id, bytes: 0, truncated: false };
      try {
        if (!interpreter) throw new Error('The interpreter has not started.');
        send({ type: 'done', id: message.id, result: interpreter.run(message.request) });
      } catch (error) {
        // Python's own exceptions are the function's and come back as its result; this is the
        // interpreter failing underneath (out of memory in the runtime, a trap).
        send({ type: 'crashed', id: message.id, error: failure(error) });
      }
      return;
    }
  }
}

port.on('message', (message: PythonRequest) => {
  void handle(message);
});
