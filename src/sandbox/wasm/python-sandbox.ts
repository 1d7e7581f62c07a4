/**
 * python:3 under isolation "wasm": CPython compiled to WebAssembly (Pyodide, npm `pyodide`), one
 * interpreter per sandbox in a worker thread of its own (pyodide-context.ts says how it is kept
 * from the host). A sandbox starts by restoring a memory snapshot of an interpreter that has
 * started and imported what the runner needs, made once per data dir and kept on disk; the
 * function's files are then written into its in-memory file system and imported. Limits: the
 * linear memory stops growing at the memory limit (Python raises MemoryError), the worker's V8
 * heap is bounded by its resource limits, a quarter of the limit for files, and a run past its
 * deadline terminates the worker.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { unzipSync } from 'fflate';
import type { FunctionCode, InitOutcome, LogSink, RunOutcome, RunRequest, Sandbox, SandboxSpec } from '../backend.js';
import { type PyodideFiles, readPyodide, sharedCopy } from './pyodide-context.js';
import type { PythonRequest, PythonResponse, PythonWorkerData } from './python-messages.js';

/** Where a Python sandbox's function lives in its file system. */
const FUNCTION_DIR = '/function';
/** The V8 heap of a Python sandbox's worker (the interpreter's own memory is outside it). */
const WORKER_HEAP_MB = 64;
/** Python needs this much linear memory to start and import the standard library's basics. */
export const PYTHON_WASM_MIN_MEMORY_MB = 64;

/** The directory of npm `pyodide`, or undefined when it is not installed. */
export function findPyodide(): string | undefined {
  try {
    return dirname(createRequire(import.meta.url).resolve('pyodide/package.json'));
  } catch {
    return undefined;
  }
}

export interface PythonRuntimeOptions {
  workerScript: string;
  pyodideDir: string;
  /** Where the base snapshot is kept between server starts. */
  snapshotDir: string;
}

/** A start's base: the interpreter's snapshot, in shared memory so that no worker copies it to get it. */
interface Base {
  snapshot: Uint8Array;
}

/** What every Python sandbox of a backend shares: Pyodide's files, the base snapshot and the code cache. */
export class PythonRuntime {
  private base: Promise<Base> | undefined;
  private files: PyodideFiles | undefined;
  readonly version: string;

  constructor(private readonly options: PythonRuntimeOptions) {
    this.version = (JSON.parse(readFileSync(join(options.pyodideDir, 'package.json'), 'utf8')) as { version: string }).version;
  }

  /** The snapshot's files: keyed by the Pyodide release and the worker's code, which made them. */
  private baseFiles(): { snapshot: string; codeCache: string } {
    const hash = createHash('sha256').update(this.version).update(readFileSync(this.options.workerScript)).digest('hex');
    const stem = join(this.options.snapshotDir, `pyodide-${this.version}-${hash.slice(0, 16)}`);
    return { snapshot: `${stem}.snapshot`, codeCache: `${stem}.v8cache` };
  }

  private pyodideFiles(): PyodideFiles {
    this.files ??= readPyodide(this.options.pyodideDir);
    return this.files;
  }

  /** The interpreter's snapshot: read from disk, or made once (a start from nothing takes seconds). */
  baseSnapshot(): Promise<Base> {
    this.base ??= this.loadOrMake();
    this.base.catch(() => {
      this.base = undefined;
    });
    return this.base;
  }

  private async loadOrMake(): Promise<Base> {
    const paths = this.baseFiles();
    const files = this.pyodideFiles();
    if (existsSync(paths.snapshot)) {
      if (existsSync(paths.codeCache)) files.asmCache = sharedCopy(readFileSync(paths.codeCache));
      return { snapshot: sharedCopy(readFileSync(paths.snapshot)) };
    }
    const worker = this.worker(256);
    try {
      const answer = await request(worker, { type: 'start' }, (m) => m.type === 'started' || m.type === 'failed');
      if (answer.type === 'failed') throw new Error(answer.error);
      if (answer.type !== 'started' || !answer.snapshot) throw new Error('The Python worker made no snapshot.');
      mkdirSync(this.options.snapshotDir, { recursive: true });
      const write = (file: string, bytes: Uint8Array) => {
        const temp = `${file}.${process.pid}.tmp`;
        writeFileSync(temp, bytes);
        renameSync(temp, file);
      };
      if (answer.asmCache) {
        write(paths.codeCache, answer.asmCache);
        files.asmCache = sharedCopy(answer.asmCache);
      }
      write(paths.snapshot, answer.snapshot);
      return { snapshot: sharedCopy(answer.snapshot) };
    } finally {
      await worker.terminate();
    }
  }

  /** A worker for one interpreter: restoring `base`, or (without it) making the snapshot. */
  worker(memoryMb: number, base?: Base): Worker {
    const data: PythonWorkerData = {
      files: this.pyodideFiles(),
      ...(base ? { snapshot: base.snapshot } : {}),
      heapBytes: memoryMb * 1024 * 1024,
      scratchBytes: Math.floor((memoryMb * 1024 * 1024) / 4),
    };
    const worker = new Worker(this.options.workerScript, {
      workerData: data,
      stdout: false,
      stderr: false,
      env: {},
      execArgv: [],
      resourceLimits: { maxOldGenerationSizeMb: WORKER_HEAP_MB, maxYoungGenerationSizeMb: 16 },
    });
    worker.unref();
    return worker;
  }

  create(spec: SandboxSpec): Sandbox {
    return new PythonSandbox(this, spec.memoryMb);
  }
}

/** Sends a request and waits for the first answer that `done` accepts (or the worker's end). */
function request(worker: Worker, message: PythonRequest, done: (m: PythonResponse) => boolean): Promise<PythonResponse> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: PythonResponse) => {
      if (!done(m)) return;
      cleanup();
      resolve(m);
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onExit = () => {
      cleanup();
      reject(new Error('The Python worker exited.'));
    };
    const cleanup = () => {
      worker.off('message', onMessage);
      worker.off('error', onError);
      worker.off('exit', onExit);
    };
    worker.on('message', onMessage);
    worker.once('error', onError);
    worker.once('exit', onExit);
    worker.postMessage(message);
  });
}

/** A worker's failure in our terms: its heap limit is the sandbox's memory. */
function isOutOfMemory(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === 'ERR_WORKER_OUT_OF_MEMORY' || /out of memory|memory access out of bounds/i.test(String(error));
}

let sandboxCounter = 0;

/** One interpreter in one worker thread: the scheduler's instance of a Python function under wasm. */
class PythonSandbox implements Sandbox {
  readonly id = `python-wasm-${++sandboxCounter}`;
  private worker: Worker | undefined;
  private dead = false;
  private readonly deathListeners: ((reason: string) => void)[] = [];
  /** Why the worker went, once it has: what a run in progress ends with. */
  private ending: RunOutcome | undefined;
  /** An init or a run is waiting on the worker: its own outcome reports a death, not the listeners. */
  private busy = false;
  /** The function's environment (its name, namespace, parameters as OpenWhisk sets them). */
  private env: Record<string, string> = {};

  /** The interpreter restoring from the base snapshot, begun when the sandbox is made: a blank sandbox made ahead is ready. */
  private readonly started: Promise<string>;

  constructor(
    private readonly runtime: PythonRuntime,
    private readonly memoryMb: number,
  ) {
    this.started = this.start();
    // Its failure is the init's to report; a sandbox never initialised must not leave it unhandled.
    this.started.catch(() => {});
  }

  get alive(): boolean {
    return !this.dead;
  }

  /** Starts the worker and restores the interpreter; an empty string, or why it could not. */
  private async start(): Promise<string> {
    let base: Base;
    try {
      base = await this.runtime.baseSnapshot();
    } catch (error) {
      return (error as Error).message;
    }
    if (this.dead) return 'The sandbox was destroyed.';
    const worker = this.runtime.worker(this.memoryMb, base);
    this.worker = worker;
    worker.on('error', (error) => this.die(isOutOfMemory(error) ? { kind: 'oom' } : { kind: 'crash', reason: error.message }));
    worker.on('exit', () => this.die({ kind: 'crash', reason: 'The Python worker exited.' }));
    const started = await request(worker, { type: 'start' }, (m) => m.type === 'started' || m.type === 'failed');
    return started.type === 'failed' ? started.error : '';
  }

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    this.env = code.env;
    const timer = setTimeout(() => this.die({ kind: 'timeout' }), Math.max(0, deadline - Date.now()));
    this.busy = true;
    let onMessage: ((m: PythonResponse) => void) | undefined;
    try {
      // A death meanwhile (the deadline, a crash) rejects the start's request.
      const failed = await this.started;
      const worker = this.worker;
      if (failed || !worker || this.dead) {
        throw new Error(failed || 'The Python worker is gone.');
      }
      onMessage = (m: PythonResponse) => {
        if (m.type === 'log' && m.id === '') onLog(m.stream, m.text);
      };
      worker.on('message', onMessage);
      const loaded = await request(
        worker,
        { type: 'load', dir: FUNCTION_DIR, files: functionFiles(code), main: code.main, logLimitBytes: code.logLimitBytes },
        (m) => m.type === 'loaded',
      );
      if (loaded.type === 'loaded' && loaded.error) return { ok: false, kind: 'error', error: loaded.error };
      return { ok: true };
    } catch (error) {
      const outcome = this.ending ?? { kind: 'crash', reason: (error as Error).message };
      if (outcome.kind === 'timeout') return { ok: false, kind: 'timeout', error: 'The function did not load in time.' };
      if (outcome.kind === 'oom') return { ok: false, kind: 'oom', error: 'The function ran out of memory while loading.' };
      return { ok: false, kind: 'crash', error: outcome.kind === 'crash' ? outcome.reason : (error as Error).message };
    } finally {
      this.busy = false;
      clearTimeout(timer);
      if (onMessage) this.worker?.off('message', onMessage);
    }
  }

  async run(run: RunRequest): Promise<RunOutcome> {
    const worker = this.worker;
    if (!worker || this.dead) return { kind: 'not-started', reason: 'The Python sandbox is not running.' };
    const onMessage = (m: PythonResponse) => {
      if (m.type === 'log' && m.id === run.activationId) run.onLog(m.stream, m.text);
    };
    worker.on('message', onMessage);
    const timer = setTimeout(() => this.die({ kind: 'timeout' }), Math.max(0, run.deadline - Date.now()));
    this.busy = true;
    try {
      const env = { ...this.env, ...run.env, __OW_ACTIVATION_ID: run.activationId, __OW_DEADLINE: String(run.deadline) };
      const answer = await request(
        worker,
        { type: 'run', id: run.activationId, request: JSON.stringify({ value: run.params, env }) },
        (m) => (m.type === 'done' || m.type === 'crashed') && m.id === run.activationId,
      );
      if (answer.type === 'crashed') {
        const outcome: RunOutcome = isOutOfMemory(answer.error) ? { kind: 'oom' } : { kind: 'crash', reason: answer.error };
        this.die(outcome);
        return outcome;
      }
      if (answer.type !== 'done') return { kind: 'crash', reason: 'The Python worker answered out of turn.' };
      return { kind: 'result', result: JSON.parse(answer.result) as unknown };
    } catch (error) {
      return this.ending ?? { kind: 'crash', reason: (error as Error).message };
    } finally {
      this.busy = false;
      clearTimeout(timer);
      worker.off('message', onMessage);
    }
  }

  onDeath(listener: (reason: string) => void): void {
    this.deathListeners.push(listener);
  }

  /** Ends the worker for a reason (a deadline, memory, a crash); a run in progress ends with it. */
  private die(outcome: RunOutcome): void {
    if (this.dead) return;
    this.dead = true;
    this.ending = outcome;
    void this.worker?.terminate();
    if (this.busy) return;
    const reason = outcome.kind === 'crash' ? outcome.reason : outcome.kind;
    for (const listener of this.deathListeners.splice(0)) listener(reason);
  }

  async destroy(): Promise<void> {
    this.dead = true;
    await this.worker?.terminate();
  }
}

/** The function's files: the deploy's package (its source or zip, and the launcher that loads it). */
function functionFiles(code: FunctionCode): [string, Uint8Array][] {
  if (!code.package) throw new Error('A python:3 function runs from the package its deploy made; this one has none.');
  return Object.entries(unzipSync(Buffer.from(code.package.zip, 'base64'))).filter(([name]) => !name.endsWith('/'));
}
