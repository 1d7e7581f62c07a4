import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import ivm from 'isolated-vm';
import type { Isolation } from '../../core/kinds.js';
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

const BOOTSTRAP_SOURCE = readFileSync(new URL('./bootstrap.js', import.meta.url), 'utf8');
const MAX_RANDOM_BYTES = 65536;

/** Compiled-code caches shared by all isolates: V8's cachedData for the bootstrap and each version. */
class CodeCache {
  private readonly entries = new Map<string, ivm.ExternalCopy<ArrayBuffer>>();

  constructor(private readonly capacity: number) {}

  get(key: string): ivm.ExternalCopy<ArrayBuffer> | undefined {
    const data = this.entries.get(key);
    if (data) {
      this.entries.delete(key);
      this.entries.set(key, data);
    }
    return data;
  }

  set(key: string, data: ivm.ExternalCopy<ArrayBuffer>): void {
    this.entries.set(key, data);
    if (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) {
        this.entries.get(oldest)?.release();
        this.entries.delete(oldest);
      }
    }
  }
}

async function compile(
  isolate: ivm.Isolate,
  cache: CodeCache,
  key: string,
  source: string,
  filename: string,
): Promise<ivm.Script> {
  const cachedData = cache.get(key);
  // The typings omit what the returned script carries: cachedData when produced.
  const script = (await isolate.compileScript(source, {
    filename,
    ...(cachedData ? { cachedData } : { produceCachedData: true }),
  })) as ivm.Script & ivm.CachedDataResult;
  if (!cachedData && script.cachedData) cache.set(key, script.cachedData);
  return script;
}

let sandboxCounter = 0;

export class IsolateSandbox implements Sandbox {
  readonly id = `isolate-${++sandboxCounter}`;
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private readonly sinks = new Map<string, { sink: LogSink; received: number }>();
  private initSink: LogSink | undefined;
  private fire: ivm.Reference<(id: number) => void> | undefined;
  private runFn: ivm.Reference<(id: string, params: string) => Promise<string>> | undefined;
  private deathListener: ((reason: string) => void) | undefined;
  private destroyed = false;
  private timedOut = false;

  private constructor(
    private readonly isolate: ivm.Isolate,
    private readonly context: ivm.Context,
    private readonly cache: CodeCache,
  ) {}

  /** Makes an isolate ready for code. Everything after `new Isolate` runs on the isolate's thread. */
  static async create(spec: SandboxSpec, cache: CodeCache): Promise<IsolateSandbox> {
    const isolate = new ivm.Isolate({ memoryLimit: spec.memoryMb });
    try {
      const sandbox = new IsolateSandbox(isolate, await isolate.createContext(), cache);
      await sandbox.installBridges();
      return sandbox;
    } catch (error) {
      if (!isolate.isDisposed) isolate.dispose();
      throw error;
    }
  }

  private async installBridges(): Promise<void> {
    const global = this.context.global;
    // Bridges must never throw into the host: isolated-vm turns a rejected host promise into an
    // unhandled rejection, so every one of them catches.
    await global.set(
      '__isola_log',
      new ivm.Callback(
        (id: string, stream: 'stdout' | 'stderr', text: string) => {
          const run = this.sinks.get(id);
          if (run) run.received++;
          const sink = run?.sink ?? this.initSink ?? (this.sinks.size === 1 ? [...this.sinks.values()][0]?.sink : undefined);
          sink?.(stream === 'stderr' ? 'stderr' : 'stdout', String(text));
        },
        { ignored: true },
      ),
    );
    await global.set('__isola_timer', new ivm.Callback((id: number, ms: number) => this.schedule(id, ms), { ignored: true }));
    await global.set(
      '__isola_clear_timer',
      new ivm.Callback(
        (id: number) => {
          clearTimeout(this.timers.get(id));
          this.timers.delete(id);
        },
        { ignored: true },
      ),
    );
    await global.set(
      '__isola_random',
      new ivm.Callback((n: number) => randomBytes(Math.max(0, Math.min(MAX_RANDOM_BYTES, n | 0))).toString('hex'), {
        sync: true,
      }),
    );
    const bootstrap = await compile(this.isolate, this.cache, 'bootstrap', BOOTSTRAP_SOURCE, 'isola:bootstrap.js');
    await bootstrap.run(this.context);
    this.fire = (await global.get('__isola_fire', { reference: true })) as ivm.Reference<(id: number) => void>;
  }

  get alive(): boolean {
    return !this.destroyed && !this.isolate.isDisposed;
  }

  private schedule(id: number, ms: number): void {
    if (!this.alive) return;
    const handle = setTimeout(() => {
      this.timers.delete(id);
      if (!this.alive || !this.fire) return;
      // A timer callback that throws is reported by the isolate's own console; here only an
      // isolate that died under it (e.g. out of memory) matters.
      this.fire.apply(undefined, [id], { timeout: 1000 }).catch(() => this.noticeDeath());
    }, ms);
    this.timers.set(id, handle);
  }

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    this.initSink = onLog;
    const mainName = code.main;
    // The prefix shares the first line with the code so that line numbers in stack traces match.
    const source =
      `globalThis.__isola_entry_module = (function () { const module = { exports: {} }; const exports = module.exports; const require = globalThis.__isola_require; ${code.code}\n` +
      `;return [module.exports, typeof ${mainName} === 'function' ? ${mainName} : undefined]; })();` +
      `globalThis.__isola_resolve(globalThis.__isola_entry_module[0], globalThis.__isola_entry_module[1], ${JSON.stringify(mainName)}); delete globalThis.__isola_entry_module;`;
    const remaining = Math.max(1, deadline - Date.now());
    try {
      const script = await compile(this.isolate, this.cache, code.key, source, `${code.key}.js`);
      await script.run(this.context, { timeout: remaining });
      this.runFn = (await this.context.global.get('__isola_run', { reference: true })) as ivm.Reference<
        (id: string, params: string) => Promise<string>
      >;
      return { ok: true };
    } catch (error) {
      const kind = this.classify(error);
      await this.destroy();
      if (kind === 'timeout') return { ok: false, kind, error: `Initialization did not finish within ${remaining} ms.` };
      if (kind === 'oom') return { ok: false, kind, error: 'Initialization exhausted the memory limit.' };
      return { ok: false, kind: 'error', error: describeHostError(error) };
    } finally {
      this.initSink = undefined;
    }
  }

  async run(request: RunRequest): Promise<RunOutcome> {
    if (!this.runFn || !this.alive) return { kind: 'crash', reason: 'The isolate is not initialised.' };
    const remaining = request.deadline - Date.now();
    if (remaining <= 0) return { kind: 'timeout' };
    const run = { sink: request.onLog, received: 0 };
    this.sinks.set(request.activationId, run);
    // isolated-vm's own timeout only covers synchronous execution; this one also covers time spent
    // awaiting timers and other host calls.
    const watchdog = setTimeout(() => {
      this.timedOut = true;
      void this.destroy();
    }, remaining);
    try {
      const envelope = await this.runFn.apply(undefined, [request.activationId, JSON.stringify(request.params)], {
        timeout: remaining,
        result: { promise: true, copy: true },
      });
      const parsed = JSON.parse(envelope) as { ok?: unknown; err?: unknown; logs: number };
      // Log callbacks travel on the event loop separately from the result; wait for the stragglers.
      for (let turns = 0; run.received < parsed.logs && turns < 100; turns++)
        await new Promise((resolve) => setImmediate(resolve));
      return 'err' in parsed ? { kind: 'error', error: parsed.err } : { kind: 'result', result: parsed.ok };
    } catch (error) {
      const kind = this.classify(error);
      await this.destroy();
      if (kind === 'timeout') return { kind: 'timeout' };
      if (kind === 'oom') return { kind: 'oom' };
      return { kind: 'crash', reason: describeHostError(error) };
    } finally {
      clearTimeout(watchdog);
      this.sinks.delete(request.activationId);
    }
  }

  private classify(error: unknown): 'timeout' | 'oom' | 'error' {
    const message = error instanceof Error ? error.message : String(error);
    if (this.timedOut || /timed out/i.test(message)) return 'timeout';
    if (/memory limit/i.test(message)) return 'oom';
    return 'error';
  }

  onDeath(listener: (reason: string) => void): void {
    this.deathListener = listener;
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    for (const handle of this.timers.values()) clearTimeout(handle);
    this.timers.clear();
    this.runFn?.release();
    this.fire?.release();
    if (!this.isolate.isDisposed) this.isolate.dispose();
  }

  private noticeDeath(): void {
    if (!this.destroyed && this.isolate.isDisposed) {
      void this.destroy();
      this.deathListener?.('The isolate was disposed while a timer ran.');
    }
  }
}

function describeHostError(error: unknown): string {
  if (error instanceof Error) return error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message;
  return String(error);
}

export class IsolateBackend implements Backend {
  readonly isolation: Isolation = 'isolate';
  readonly minMemoryMb = 16;
  private readonly cache = new CodeCache(2000);

  async status(): Promise<BackendStatus> {
    try {
      const sandbox = await IsolateSandbox.create({ memoryMb: 16 }, this.cache);
      await sandbox.destroy();
      return { isolation: 'isolate', available: true, detail: 'V8 isolates through isolated-vm 5.0.4' };
    } catch (error) {
      return {
        isolation: 'isolate',
        available: false,
        detail: `isolated-vm failed to create an isolate: ${describeHostError(error)}`,
        fix: 'Reinstall dependencies with `npm install` so that isolated-vm is built for this Node.js.',
      };
    }
  }

  async create(spec: SandboxSpec): Promise<Sandbox> {
    return IsolateSandbox.create(spec, this.cache);
  }

  async close(): Promise<void> {}
}
