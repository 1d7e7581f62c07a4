import { createHash } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { WASI } from '@bjorn3/browser_wasi_shim';
import type { Registry } from 'prom-client';
import { badRequest } from '../../core/errors.js';
import type { Isolation } from '../../core/kinds.js';
import type { ActionVersion } from '../../core/types.js';
import type {
  Backend,
  BackendStatus,
  FunctionCode,
  InitOutcome,
  LogSink,
  RunOutcome,
  RunRequest,
  Sandbox,
  SandboxSpec,
} from '../backend.js';
import { type FastPathRunStats, registerFastPathMetrics } from '../fast-path-stats.js';
import { importOwnMemory, type ModuleInfo, PAGE_BYTES, parseModule, WasmFormatError } from './binary.js';
import { callWithBudget, FAST_PATH_BUDGET_MS, FastPathEligibility, SHORT_RUN_MS } from './fast-path.js';
import { REACTOR_ALLOC, REACTOR_HANDLE, type RunMessage, type WasmAbi } from './messages.js';
import { PYTHON_WASM_MIN_MEMORY_MB, PythonRuntime } from './python-sandbox.js';
import { runModule } from './run-module.js';
import { runOutcome, WorkerPool } from './worker-pool.js';

const PAGES_PER_MB = (1024 * 1024) / PAGE_BYTES;
const COMPILED_CACHE_SIZE = 512;
const WASI_FUNCTIONS = new Set(Object.keys(new WASI([], [], [], { debug: false }).wasiImport));
const ENV_FUNCTIONS = new Set(['abort', 'trace', 'seed']);

/** A module validated, limited and compiled once for a memory limit, shared by every instance. */
export interface CompiledFunction {
  key: string;
  module: WebAssembly.Module;
  abi: WasmAbi;
  maxPages: number;
  /** The limits of the memory the host gives each run: the module's own (made an import) or the one it imports. */
  importedMemory?: { initial: number; maximum: number };
}

export interface WasmBackendOptions {
  /** The bundled worker script. */
  workerScript: string;
  workers?: number;
  /**
   * Whether versions whose runs proved short run on the server's thread (see fast-path.ts). Off by
   * default: measured here, the vm timeout's watchdog thread (started for every call) and the
   * server heap's garbage collections of wasm memories cost more than the hop they save (README,
   * "WebAssembly under load").
   */
  fastPath?: boolean;
  /** python:3 through Pyodide: its worker script, the `pyodide` package and where its snapshot is kept. */
  python?: { workerScript: string; pyodideDir: string; snapshotDir: string };
}

/**
 * Runs WebAssembly modules: compiled once per version and memory limit, then a fresh instance per
 * invocation on a pool of worker threads.
 */
export class WasmBackend implements Backend {
  readonly isolation: Isolation = 'wasm';
  readonly minMemoryMb = 16;
  readonly pool: WorkerPool;
  private readonly compiled = new Map<string, Promise<CompiledFunction>>();
  /** Version (namespace/name@version) to its compiled key: versions never change, so hash once. */
  private readonly keysByVersion = new Map<string, string>();
  private readonly eligibility = new FastPathEligibility(2000);
  readonly runStats: FastPathRunStats = { sync: 0, async: 0, overruns: 0 };
  /** Public so that a benchmark can compare both paths in one run. */
  fastPath: boolean;
  /** python:3 sandboxes, when npm `pyodide` is installed. */
  readonly python: PythonRuntime | undefined;

  constructor(options: WasmBackendOptions) {
    this.pool = new WorkerPool(options.workerScript, options.workers ?? Math.max(2, availableParallelism()));
    this.fastPath = options.fastPath ?? false;
    this.python = options.python ? new PythonRuntime(options.python) : undefined;
  }

  /**
   * One run of a version: on the server's thread within the budget when its runs have proved
   * short, otherwise (or when that overran) on a worker, which is terminated at the deadline.
   */
  run(
    versionKey: string,
    message: RunMessage,
    module: WebAssembly.Module,
    deadline: number,
    onLog: LogSink,
  ): Promise<RunOutcome> {
    if (this.fastPath && deadline - Date.now() > FAST_PATH_BUDGET_MS && this.eligibility.eligible(versionKey)) {
      this.runStats.sync++;
      const logs: [stream: 'stdout' | 'stderr', text: string][] = [];
      const attempt = callWithBudget(
        () => runModule(message, module, (stream, text) => logs.push([stream, text])),
        FAST_PATH_BUDGET_MS,
      );
      if (attempt.done) {
        for (const [stream, text] of logs) onLog(stream, text);
        return Promise.resolve(runOutcome(attempt.value));
      }
      this.runStats.overruns++;
      this.eligibility.overran(versionKey);
      this.runStats.async++;
      return this.pool.run(message, module, deadline, onLog, (ms) => {
        this.eligibility.observe(versionKey, ms < SHORT_RUN_MS);
        if (ms < SHORT_RUN_MS) this.eligibility.excuse(versionKey);
      });
    }
    this.runStats.async++;
    return this.pool.run(message, module, deadline, onLog, (ms) => this.eligibility.observe(versionKey, ms < SHORT_RUN_MS));
  }

  async status(): Promise<BackendStatus> {
    if (!(await this.pool.ready())) {
      return {
        isolation: 'wasm',
        available: false,
        detail: 'The wasm worker threads did not start.',
        fix: 'Reinstall with `npm install`.',
      };
    }
    const python = this.python ? `; python:3 through Pyodide ${this.python.version}` : '';
    return {
      isolation: 'wasm',
      available: true,
      detail: `WebAssembly (V8 ${process.versions.v8}) with WASI preview 1 on ${this.pool.size} worker threads (up to ${this.pool.maxSize} while busy)${python}`,
    };
  }

  /**
   * Deploy-time checks: the module parses, compiles, imports only what is provided and fits its
   * limit. Always on the bytes being deployed, never on what a version key remembers.
   */
  async validate(action: Pick<ActionVersion, 'exec' | 'limits'>): Promise<void> {
    if (action.exec.kind === 'python:3') return validatePython(action, this.python !== undefined);
    await this.compileBytes(Buffer.from(action.exec.code, 'base64'), action.limits.memory);
  }

  compile(code: FunctionCode, memoryMb: number): Promise<CompiledFunction> {
    const versionKey = `${code.key}:${memoryMb}`;
    const known = this.keysByVersion.get(versionKey);
    const cached = known ? this.compiled.get(known) : undefined;
    if (cached) return cached;
    const compiled = this.compileBytes(Buffer.from(code.code, 'base64'), memoryMb);
    void compiled.then(
      (fn) => {
        this.keysByVersion.set(versionKey, fn.key);
        if (this.keysByVersion.size > COMPILED_CACHE_SIZE * 4)
          this.keysByVersion.delete(this.keysByVersion.keys().next().value as string);
      },
      () => {},
    );
    return compiled;
  }

  /** Compiled modules are cached by their content and memory limit. */
  private compileBytes(bytes: Buffer, memoryMb: number): Promise<CompiledFunction> {
    const key = `${createHash('sha256').update(bytes).digest('hex').slice(0, 32)}:${memoryMb}`;
    let compiled = this.compiled.get(key);
    if (!compiled) {
      compiled = compileModule(key, bytes, memoryMb);
      this.compiled.set(key, compiled);
      compiled.catch(() => this.compiled.delete(key));
      if (this.compiled.size > COMPILED_CACHE_SIZE) this.compiled.delete(this.compiled.keys().next().value as string);
    }
    return compiled;
  }

  /** Forgets compiled modules (the benchmark measures cold starts without the cache). */
  clearCache(): void {
    this.compiled.clear();
    this.keysByVersion.clear();
  }

  async create(spec: SandboxSpec): Promise<Sandbox> {
    if (spec.kind === 'python:3') {
      if (!this.python) throw new Error('python:3 under isolation "wasm" needs npm package pyodide.');
      return this.python.create(spec);
    }
    return new WasmSandbox(this, spec.memoryMb);
  }

  registerMetrics(registry: Registry): void {
    registerFastPathMetrics(
      registry,
      this.runStats,
      {
        name: 'isola_wasm_runs_total',
        help: 'Runs under isolation "wasm" by how they were made: sync (on the server thread, for versions whose runs proved short) or async (on a worker thread).',
      },
      {
        name: 'isola_wasm_fast_path_overruns_total',
        help: 'Runs on the server thread that overran their budget and were made again on a worker thread.',
      },
    );
  }

  async close(): Promise<void> {
    await this.pool.close();
  }
}

/**
 * The deploy-time checks of a module (see WasmBackend.validate) without a backend: a cluster's
 * controller, which runs no functions, refuses at deploy what an invoker could never run.
 */
export async function checkWasmModule(action: Pick<ActionVersion, 'exec' | 'limits'>): Promise<void> {
  if (action.exec.kind === 'python:3') return validatePython(action, true);
  await compileModule('deploy-check', Buffer.from(action.exec.code, 'base64'), action.limits.memory);
}

/**
 * python:3 on wasm: one interpreter per instance runs one activation at a time (as OpenWhisk's
 * Python runtime does), and needs room to start.
 */
function validatePython(action: Pick<ActionVersion, 'exec' | 'limits'>, installed: boolean): void {
  if (!installed) throw badRequest('python:3 under isolation "wasm" needs npm package pyodide, which this server does not have.');
  if (action.limits.memory < PYTHON_WASM_MIN_MEMORY_MB) {
    throw badRequest(`limits.memory must be at least ${PYTHON_WASM_MIN_MEMORY_MB} MB for python:3 under isolation "wasm".`);
  }
  if (action.limits.concurrency > 1) {
    throw badRequest(
      'limits.concurrency must be 1 for python:3 under isolation "wasm": each instance is one interpreter that runs one activation at a time.',
    );
  }
}

async function compileModule(key: string, bytes: Buffer, memoryMb: number): Promise<CompiledFunction> {
  const maxPages = memoryMb * PAGES_PER_MB;
  let info: ModuleInfo;
  try {
    info = parseModule(bytes);
  } catch (error) {
    throw badRequest(`The WebAssembly module is malformed: ${(error as Error).message}.`);
  }
  const unsupported = info.imports.filter(
    (i) =>
      !(i.module === 'wasi_snapshot_preview1' && i.kind === 'function' && WASI_FUNCTIONS.has(i.name)) &&
      !(i.module === 'env' && i.kind === 'function' && ENV_FUNCTIONS.has(i.name)) &&
      !(i.module === 'env' && i.name === 'memory' && i.kind === 'memory'),
  );
  if (unsupported.length > 0) {
    const names = unsupported.map((i) => `${i.module}.${i.name} (${i.kind})`).join(', ');
    throw badRequest(
      `The WebAssembly module imports ${names}, which Isola does not provide. Modules may import WASI preview 1 ` +
        '(wasi_snapshot_preview1), env.memory, and env.abort, env.trace and env.seed (AssemblyScript).',
    );
  }
  const importedMemory = info.imports.find((i) => i.kind === 'memory')?.memory;
  for (const memory of [...info.memories, ...(importedMemory ? [importedMemory] : [])]) {
    if (memory.shared || memory.memory64) throw badRequest('Shared and 64-bit WebAssembly memories are not supported.');
    if (memory.min > maxPages) {
      throw badRequest(
        `The WebAssembly module starts with ${Math.ceil(memory.min / PAGES_PER_MB)} MB of memory, more than its memory limit of ${memoryMb} MB.`,
      );
    }
  }
  let module: WebAssembly.Module;
  let ownMemory: { initial: number; maximum: number } | undefined;
  try {
    // A memory the module defines becomes an import, so that each run is given a kept, zeroed
    // memory instead of the engine making one (see memory-pool.ts).
    const rewritten = importOwnMemory(bytes, maxPages);
    ownMemory = rewritten.memory;
    module = await WebAssembly.compile(rewritten.bytes);
  } catch (error) {
    if (error instanceof WasmFormatError) throw badRequest(`The WebAssembly module is malformed: ${error.message}.`);
    throw badRequest(`The WebAssembly module does not compile: ${(error as Error).message}`);
  }
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  let abi: WasmAbi;
  if (exports.get(REACTOR_ALLOC) === 'function' && exports.get(REACTOR_HANDLE) === 'function') {
    if (exports.get('memory') !== 'memory' && !importedMemory) {
      throw badRequest('A reactor module must export its memory as "memory".');
    }
    abi = 'reactor';
  } else if (exports.get('_start') === 'function') {
    abi = 'command';
  } else {
    throw badRequest(
      `The WebAssembly module exports neither a WASI command entry point (_start) nor the reactor ABI (memory, ${REACTOR_ALLOC}, ${REACTOR_HANDLE}).`,
    );
  }
  const hostMemory =
    ownMemory ??
    (importedMemory ? { initial: importedMemory.min, maximum: Math.min(importedMemory.max ?? maxPages, maxPages) } : undefined);
  return { key, module, abi, maxPages, ...(hostMemory ? { importedMemory: hostMemory } : {}) };
}

let sandboxCounter = 0;

/**
 * What the scheduler sees as one wasm instance: the compiled function, bound to a memory limit.
 * Each run gets a fresh WebAssembly instance on a worker, so runs never share state.
 */
class WasmSandbox implements Sandbox {
  readonly id = `wasm-${++sandboxCounter}`;
  private fn: CompiledFunction | undefined;
  /** namespace/name@version: what the fast path's eligibility is kept by. */
  private versionKey = '';
  private env: Record<string, string> = {};
  private destroyed = false;

  constructor(
    private readonly backend: WasmBackend,
    private readonly memoryMb: number,
  ) {}

  get alive(): boolean {
    return !this.destroyed;
  }

  async init(code: FunctionCode, _deadline: number, _onLog: LogSink): Promise<InitOutcome> {
    try {
      this.fn = await this.backend.compile(code, this.memoryMb);
      this.versionKey = code.key;
      this.env = code.env;
      return { ok: true };
    } catch (error) {
      return { ok: false, kind: 'error', error: (error as Error).message };
    }
  }

  run(request: RunRequest): Promise<RunOutcome> {
    const fn = this.fn;
    if (!fn || this.destroyed) return Promise.resolve({ kind: 'crash', reason: 'The wasm function is not initialised.' });
    return this.backend.run(
      this.versionKey,
      {
        type: 'run',
        id: request.activationId,
        key: fn.key,
        abi: fn.abi,
        input: JSON.stringify(request.params),
        env: { ...this.env, ...request.env, __OW_ACTIVATION_ID: request.activationId, __OW_DEADLINE: String(request.deadline) },
        maxPages: fn.maxPages,
        ...(fn.importedMemory ? { importedMemory: fn.importedMemory } : {}),
      },
      fn.module,
      request.deadline,
      request.onLog,
    );
  }

  onDeath(): void {}

  async destroy(): Promise<void> {
    this.destroyed = true;
  }
}
