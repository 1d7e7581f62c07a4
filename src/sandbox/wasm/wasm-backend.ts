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
import { FAST_PATH_BUDGET_MS, FastPathEligibility, SHORT_RUN_MS } from './fast-path.js';
import { REACTOR_ALLOC, REACTOR_HANDLE, type RunMessage, type WasmAbi } from './messages.js';
import { REFUEL_UNITS } from './metering.js';
import { MeteringThread } from './metering-thread.js';
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
  /**
   * The fuel-metered copy that runs on the server's thread (see metering.ts): made in the
   * background when the fast path first asks for it; null when the module cannot be metered.
   */
  metered?: WebAssembly.Module | null;
  metering?: Promise<void>;
}

export interface WasmBackendOptions {
  /** The bundled worker script. */
  workerScript: string;
  /** The bundled metering thread's script (meter-worker.ts): without it, no run is made on the server's thread. */
  meterScript?: string;
  workers?: number;
  /**
   * Whether versions whose runs proved short run on the server's thread (see fast-path.ts), their
   * fuel-metered copy within the budget. On by default: measured here, a warm call of a short
   * module takes about half as long there as with the hop (README, "WebAssembly under load").
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
  private readonly metering: MeteringThread | undefined;

  constructor(options: WasmBackendOptions) {
    this.pool = new WorkerPool(options.workerScript, options.workers ?? Math.max(2, availableParallelism()));
    this.fastPath = options.fastPath ?? true;
    this.metering = options.meterScript ? new MeteringThread(options.meterScript) : undefined;
    this.python = options.python ? new PythonRuntime(options.python) : undefined;
  }

  /**
   * One run of a version: on the server's thread within the budget when its runs have proved
   * short (its metered copy, which asks the clock every REFUEL_UNITS), otherwise (or when that
   * overran) on a worker, which is terminated at the deadline. `source` gives the module's bytes,
   * for the metered copy.
   */
  run(
    versionKey: string,
    message: RunMessage,
    fn: CompiledFunction,
    source: () => Uint8Array,
    deadline: number,
    onLog: LogSink,
  ): Promise<RunOutcome> {
    if (this.fastPath && deadline - Date.now() > FAST_PATH_BUDGET_MS && this.eligibility.eligible(versionKey)) {
      const metered = this.meteredOf(fn, source);
      if (metered) {
        this.runStats.sync++;
        const logs: [stream: 'stdout' | 'stderr', text: string][] = [];
        const budgetEnd = performance.now() + FAST_PATH_BUDGET_MS;
        let overran = false;
        const refuel = () => {
          if (performance.now() < budgetEnd) return REFUEL_UNITS;
          overran = true;
          return -1;
        };
        const outcome = runModule(message, metered, (stream, text) => logs.push([stream, text]), refuel);
        if (!overran) {
          for (const [stream, text] of logs) onLog(stream, text);
          return Promise.resolve(runOutcome(outcome));
        }
        // Made again on a worker: every run has a fresh instance and in-memory WASI with no effect
        // outside it, and the abandoned attempt's logs are dropped.
        this.runStats.overruns++;
        this.eligibility.overran(versionKey);
        this.runStats.async++;
        return this.pool.run(message, fn.module, deadline, onLog, (ms) => {
          this.eligibility.observe(versionKey, ms < SHORT_RUN_MS);
          if (ms < SHORT_RUN_MS) this.eligibility.excuse(versionKey);
        });
      }
    }
    this.runStats.async++;
    return this.pool.run(message, fn.module, deadline, onLog, (ms) => this.eligibility.observe(versionKey, ms < SHORT_RUN_MS));
  }

  /**
   * The metered copy of a compiled function, or undefined while it is being made (the first call
   * starts that, on the metering thread) and null when the module cannot be metered: until then
   * its runs go to workers.
   */
  private meteredOf(fn: CompiledFunction, source: () => Uint8Array): WebAssembly.Module | null | undefined {
    if (fn.metered !== undefined) return fn.metered;
    const metering = this.metering;
    if (!metering) return null;
    fn.metering ??= (async () => {
      const bytes = await metering.meter(importOwnMemory(source(), fn.maxPages).bytes);
      fn.metered = bytes ? await WebAssembly.compile(bytes) : null;
    })().catch(() => {
      fn.metered = null;
    });
    return undefined;
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
    const fastPath = this.fastPath && this.metering ? ", short modules fuel-metered on the server's thread" : '';
    return {
      isolation: 'wasm',
      available: true,
      detail: `WebAssembly (V8 ${process.versions.v8}) with WASI preview 1 on ${this.pool.size} worker threads (up to ${this.pool.maxSize} while busy)${fastPath}${python}`,
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
    await this.metering?.close();
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
  /** The module as deployed (base64), for its metered copy. */
  private source = '';
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
      this.source = code.code;
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
      fn,
      () => Buffer.from(this.source, 'base64'),
      request.deadline,
      request.onLog,
    );
  }

  onDeath(): void {}

  async destroy(): Promise<void> {
    this.destroyed = true;
  }
}
