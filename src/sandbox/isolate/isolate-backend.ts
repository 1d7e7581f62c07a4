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

/**
 * Runs on the server's own thread. isolated-vm's asynchronous calls hop to a pool thread and
 * back, which costs far more than a short function itself (about 75 us against 5 us here), so a
 * version whose runs have proved short is called synchronously, with a budget: the event loop is
 * blocked for at most SYNC_BUDGET_MS. A run that overruns it is abandoned, the isolate rebuilt
 * with the function loaded again, and the run made again asynchronously; the version is never
 * run synchronously again. Repeating it is safe because a function in an isolate has no effect
 * outside it, and the abandoned attempt's logs are dropped.
 */
const SYNC_BUDGET_MS = 10;
/**
 * A run counts as short when its isolate CPU time is under this. CPU time rather than wall time,
 * so that the host preempting the server's thread does not count against the function.
 */
const SHORT_RUN_MS = 1;
/** Short asynchronous runs a version needs before it is called synchronously. */
const SHORT_RUNS_NEEDED = 3;
/**
 * Each overrun blocks the server's thread for the budget once. So that a tenant cannot make that
 * a habit by deploying version after version, a namespace with this many overruns loses the fast
 * path for all its functions for NAMESPACE_PENALTY_MS.
 */
const NAMESPACE_OVERRUNS_ALLOWED = 3;
const NAMESPACE_PENALTY_MS = 10 * 60_000;

/** `namespace/name@version` → `namespace`. */
function namespaceOf(key: string): string {
  const slash = key.indexOf('/');
  return slash < 0 ? key : key.slice(0, slash);
}

/** Per version: whether its runs are short enough to be made on the server's thread. */
class SyncEligibility {
  private readonly entries = new Map<string, { shortRuns: number; overran: boolean }>();
  private readonly namespaces = new Map<string, { overruns: number; since: number }>();

  constructor(private readonly capacity: number) {}

  eligible(key: string): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.overran || entry.shortRuns < SHORT_RUNS_NEEDED) return false;
    const namespace = this.namespaces.get(namespaceOf(key));
    return !namespace || namespace.overruns < NAMESPACE_OVERRUNS_ALLOWED || Date.now() - namespace.since > NAMESPACE_PENALTY_MS;
  }

  /** After each run that ended normally. */
  observe(key: string, short: boolean): void {
    const entry = this.entry(key);
    entry.shortRuns = short ? entry.shortRuns + 1 : 0;
  }

  overran(key: string): void {
    this.entry(key).overran = true;
    const name = namespaceOf(key);
    const now = Date.now();
    const namespace = this.namespaces.get(name);
    if (!namespace || now - namespace.since > NAMESPACE_PENALTY_MS) this.namespaces.set(name, { overruns: 1, since: now });
    else namespace.overruns++;
  }

  private entry(key: string) {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { shortRuns: 0, overran: false };
      this.entries.set(key, entry);
      if (this.entries.size > this.capacity) {
        const oldest = this.entries.keys().next().value;
        if (oldest !== undefined) this.entries.delete(oldest);
      }
    }
    return entry;
  }
}

/** How runs were made, for the metrics: on the server's thread, on a pool thread, and fast-path overruns. */
export interface IsolateRunStats {
  sync: number;
  async: number;
  overruns: number;
}

type Envelope = string;
type RunFunction = ivm.Reference<(id: string, params: string) => Promise<Envelope>>;
type StartFunction = ivm.Reference<(id: string, params: string) => void>;
type TakeFunction = ivm.Reference<(id: string) => Envelope | undefined>;

/** One isolate, its context and the references into it; replaced whole when rebuilt. */
interface Realm {
  /** Set when the realm is given up: what its callbacks still deliver belongs to nobody. */
  abandoned: { value: boolean };
  isolate: ivm.Isolate;
  context: ivm.Context;
  fire: ivm.Reference<(id: number) => void>;
  run?: RunFunction;
  start?: StartFunction;
  take?: TakeFunction;
}

let sandboxCounter = 0;

export class IsolateSandbox implements Sandbox {
  readonly id = `isolate-${++sandboxCounter}`;
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private readonly sinks = new Map<string, { sink: LogSink; received: number }>();
  /** Runs that went on past a synchronous call, waiting for the __isola_done bridge. */
  private readonly settling = new Map<string, { resolve: (e: Envelope) => void; reject: (e: unknown) => void }>();
  private initSink: LogSink | undefined;
  private realm!: Realm;
  private code: FunctionCode | undefined;
  private deathListener: ((reason: string) => void) | undefined;
  private destroyed = false;
  private timedOut = false;

  private constructor(
    private readonly spec: SandboxSpec,
    private readonly cache: CodeCache,
    private readonly syncEligibility: SyncEligibility,
    private readonly stats: IsolateRunStats,
  ) {}

  /** Makes an isolate ready for code. Everything after `new Isolate` runs on the isolate's thread. */
  static async create(
    spec: SandboxSpec,
    cache: CodeCache,
    syncEligibility: SyncEligibility,
    stats: IsolateRunStats,
  ): Promise<IsolateSandbox> {
    const sandbox = new IsolateSandbox(spec, cache, syncEligibility, stats);
    sandbox.realm = await sandbox.openRealm();
    return sandbox;
  }

  private get isolate(): ivm.Isolate {
    return this.realm.isolate;
  }

  private async openRealm(): Promise<Realm> {
    const isolate = new ivm.Isolate({ memoryLimit: this.spec.memoryMb });
    try {
      const abandoned = { value: false };
      const context = await isolate.createContext();
      const fire = await this.installBridges(isolate, context, abandoned);
      return { abandoned, isolate, context, fire };
    } catch (error) {
      if (!isolate.isDisposed) isolate.dispose();
      throw error;
    }
  }

  private async installBridges(
    isolate: ivm.Isolate,
    context: ivm.Context,
    abandoned: { value: boolean },
  ): Promise<ivm.Reference<(id: number) => void>> {
    const global = context.global;
    // Callbacks of a realm that was given up are dropped: its logs belong to an abandoned attempt.
    const current = () => !abandoned.value;
    // Bridges must never throw into the host: isolated-vm turns a rejected host promise into an
    // unhandled rejection, so every one of them catches.
    await global.set(
      '__isola_log',
      new ivm.Callback(
        (id: string, stream: 'stdout' | 'stderr', text: string) => {
          if (!current()) return;
          const run = this.sinks.get(id);
          if (run) run.received++;
          const sink = run?.sink ?? this.initSink ?? (this.sinks.size === 1 ? [...this.sinks.values()][0]?.sink : undefined);
          sink?.(stream === 'stderr' ? 'stderr' : 'stdout', String(text));
        },
        { ignored: true },
      ),
    );
    await global.set(
      '__isola_timer',
      new ivm.Callback((id: number, ms: number) => current() && this.schedule(id, ms), { ignored: true }),
    );
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
    await global.set(
      '__isola_done',
      new ivm.Callback(
        (id: string, envelope: string) => {
          if (!current()) return;
          const waiting = this.settling.get(id);
          this.settling.delete(id);
          waiting?.resolve(envelope);
        },
        { ignored: true },
      ),
    );
    const bootstrap = await compile(isolate, this.cache, 'bootstrap', BOOTSTRAP_SOURCE, 'isola:bootstrap.js');
    await bootstrap.run(context);
    return (await global.get('__isola_fire', { reference: true })) as ivm.Reference<(id: number) => void>;
  }

  get alive(): boolean {
    return !this.destroyed && !this.isolate.isDisposed;
  }

  private schedule(id: number, ms: number): void {
    if (!this.alive) return;
    const handle = setTimeout(() => {
      this.timers.delete(id);
      if (!this.alive) return;
      // A timer callback that throws is reported by the isolate's own console; here only an
      // isolate that died under it (e.g. out of memory) matters.
      this.realm.fire.apply(undefined, [id], { timeout: 1000 }).catch((error) => this.noticeDeath(error));
    }, ms);
    this.timers.set(id, handle);
  }

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    this.initSink = onLog;
    const remaining = Math.max(1, deadline - Date.now());
    try {
      await this.load(code, remaining);
      this.code = code;
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

  /** Compiles and runs the function's code in the current realm and takes its entry points. */
  private async load(code: FunctionCode, timeoutMs: number): Promise<void> {
    const mainName = code.main;
    // The prefix shares the first line with the code so that line numbers in stack traces match.
    const source =
      `globalThis.__isola_entry_module = (function () { const module = { exports: {} }; const exports = module.exports; const require = globalThis.__isola_require; ${code.code}\n` +
      `;return [module.exports, typeof ${mainName} === 'function' ? ${mainName} : undefined]; })();` +
      `globalThis.__isola_resolve(globalThis.__isola_entry_module[0], globalThis.__isola_entry_module[1], ${JSON.stringify(mainName)}); delete globalThis.__isola_entry_module;`;
    const { isolate, context } = this.realm;
    const script = await compile(isolate, this.cache, code.key, source, `${code.key}.js`);
    await script.run(context, { timeout: timeoutMs });
    const reference = { reference: true } as const;
    this.realm.run = (await context.global.get('__isola_run', reference)) as RunFunction;
    this.realm.start = (await context.global.get('__isola_start', reference)) as StartFunction;
    this.realm.take = (await context.global.get('__isola_take', reference)) as TakeFunction;
  }

  async run(request: RunRequest): Promise<RunOutcome> {
    const code = this.code;
    if (!code || !this.realm.run || !this.alive) return { kind: 'crash', reason: 'The isolate is not initialised.' };
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
    const paramsJson = JSON.stringify(request.params);
    try {
      const alone = this.sinks.size === 1;
      let envelope: Envelope | undefined;
      if (alone && remaining > SYNC_BUDGET_MS && this.syncEligibility.eligible(code.key)) {
        envelope = await this.runSynchronously(code, request.activationId, paramsJson, request.deadline);
      }
      if (envelope === undefined) {
        this.stats.async++;
        const cpuBefore = this.isolate.cpuTime;
        envelope = await this.realm.run.apply(undefined, [request.activationId, paramsJson], {
          timeout: Math.max(1, request.deadline - Date.now()),
          result: { promise: true, copy: true },
        });
        if (alone) this.syncEligibility.observe(code.key, this.ranShort(cpuBefore));
      }
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
      this.settling.delete(request.activationId);
    }
  }

  /**
   * The fast path: starts the run on this thread within the budget. Resolves to its envelope, or
   * to undefined when it overran the budget and must be made again (asynchronously) in a new realm.
   */
  private async runSynchronously(
    code: FunctionCode,
    id: string,
    paramsJson: string,
    deadline: number,
  ): Promise<Envelope | undefined> {
    const { start, take } = this.realm;
    if (!start || !take) return undefined;
    const cpuBefore = this.isolate.cpuTime;
    this.stats.sync++;
    try {
      start.applySync(undefined, [id, paramsJson], { timeout: SYNC_BUDGET_MS });
    } catch (error) {
      if (this.classify(error) !== 'timeout') throw error;
      this.syncEligibility.overran(code.key);
      this.stats.overruns++;
      await this.rebuild(code, deadline);
      return undefined;
    }
    const envelope = take.applySync(undefined, [id]);
    if (!this.ranShort(cpuBefore)) this.syncEligibility.observe(code.key, false);
    if (envelope !== undefined) return envelope;
    // Still awaiting something: it reports through __isola_done when it settles.
    return new Promise<Envelope>((resolve, reject) => this.settling.set(id, { resolve, reject }));
  }

  /** Whether the isolate spent less than SHORT_RUN_MS of CPU since `cpuBefore` (its cpuTime then). */
  private ranShort(cpuBefore: bigint): boolean {
    return Number(this.isolate.cpuTime - cpuBefore) < SHORT_RUN_MS * 1e6;
  }

  /** Replaces the isolate with a new one with the function loaded, keeping this sandbox. */
  private async rebuild(code: FunctionCode, deadline: number): Promise<void> {
    const old = this.realm;
    old.abandoned.value = true;
    for (const handle of this.timers.values()) clearTimeout(handle);
    this.timers.clear();
    releaseRealm(old);
    const realm = await this.openRealm();
    if (this.destroyed) {
      // The run's deadline passed while the new isolate was being made.
      releaseRealm(realm);
      throw new Error('The run timed out.');
    }
    this.realm = realm;
    await this.load(code, Math.max(1, deadline - Date.now()));
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
    this.rejectSettling(new Error(this.timedOut ? 'The run timed out.' : 'The isolate was destroyed.'));
    releaseRealm(this.realm);
  }

  private rejectSettling(error: unknown): void {
    for (const waiting of this.settling.values()) waiting.reject(error);
    this.settling.clear();
  }

  private noticeDeath(error: unknown): void {
    if (!this.destroyed && this.isolate.isDisposed) {
      // A run waiting on a timer callback learns why the isolate died (e.g. its memory limit).
      this.rejectSettling(error);
      void this.destroy();
      this.deathListener?.('The isolate was disposed while a timer ran.');
    }
  }
}

function releaseRealm(realm: Realm): void {
  if (realm.isolate.isDisposed) return;
  for (const reference of [realm.run, realm.start, realm.take, realm.fire]) reference?.release();
  realm.isolate.dispose();
}

function describeHostError(error: unknown): string {
  if (error instanceof Error) return error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message;
  return String(error);
}

export class IsolateBackend implements Backend {
  readonly isolation: Isolation = 'isolate';
  readonly minMemoryMb = 16;
  private readonly cache = new CodeCache(2000);
  private readonly syncEligibility = new SyncEligibility(2000);
  readonly runStats: IsolateRunStats = { sync: 0, async: 0, overruns: 0 };

  async status(): Promise<BackendStatus> {
    try {
      const sandbox = await IsolateSandbox.create({ memoryMb: 16 }, this.cache, this.syncEligibility, this.runStats);
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
    return IsolateSandbox.create(spec, this.cache, this.syncEligibility, this.runStats);
  }

  async close(): Promise<void> {}
}
