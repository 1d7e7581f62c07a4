import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import ivm from 'isolated-vm';
import type { Registry } from 'prom-client';
import type { Isolation } from '../../core/kinds.js';
import {
  type Backend,
  type BackendStatus,
  type FunctionCode,
  type InitOutcome,
  type LogSink,
  type LogStream,
  lateOutputLine,
  type RunOutcome,
  type RunRequest,
  type Sandbox,
  type SandboxSpec,
} from '../backend.js';
import { type FastPathRunStats, registerFastPathMetrics } from '../fast-path-stats.js';
import { EntryWatchdog } from './entry-watchdog.js';

const BOOTSTRAP_SOURCE = readFileSync(new URL('./bootstrap.js', import.meta.url), 'utf8');
const BOOTSTRAP_ORIGIN: ivm.ScriptOrigin = { filename: 'isola:bootstrap.js' };
/** Loaded and run once in a throwaway isolate to make the bootstrap's code cache (see warmedBootstrapCache). */
const WARM_UP_CODE = 'function main(params) { console.log("warm-up"); return { ok: params.ok !== false }; }';
const MAX_RANDOM_BYTES = 65536;

/**
 * Compiled-code caches shared by all isolates: V8's cachedData for the bootstrap and each version.
 * Code is cached from its second compile on: producing the cache costs more than compiling a small
 * function, and most versions' first instance is their only one.
 */
class CodeCache {
  /** cachedData by key, or null for code compiled once without producing it. */
  private readonly entries = new Map<string, ivm.ExternalCopy<ArrayBuffer> | null>();

  constructor(private readonly capacity: number) {}

  /** The cachedData of a key, null when it was compiled once before, undefined when never. */
  get(key: string): ivm.ExternalCopy<ArrayBuffer> | null | undefined {
    const data = this.entries.get(key);
    if (data !== undefined) {
      this.entries.delete(key);
      this.entries.set(key, data);
    }
    return data;
  }

  set(key: string, data: ivm.ExternalCopy<ArrayBuffer> | null): void {
    this.entries.get(key)?.release();
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

/**
 * Code up to this size is compiled on the server's thread: V8 parses it lazily in well under a
 * millisecond, less than the hop to the isolate's thread and back. Bigger code (a bundle) is
 * compiled on the isolate's thread, which keeps the server answering meanwhile.
 */
const SYNC_COMPILE_MAX_CHARS = 64 * 1024;

function compileOptions(cache: CodeCache, key: string, origin: ivm.ScriptOrigin) {
  const cachedData = cache.get(key);
  return { ...origin, ...(cachedData ? { cachedData } : { produceCachedData: cachedData === null }) };
}

/** Keeps the cachedData a compile produced, or notes that the key was compiled once. */
function remember(cache: CodeCache, key: string, options: ivm.CachedDataOptions, script: ivm.Script): ivm.Script {
  // The typings omit what the returned script carries: cachedData when produced.
  if (!options.cachedData) cache.set(key, (script as ivm.Script & ivm.CachedDataResult).cachedData ?? null);
  return script;
}

/** Compiles on the server's thread: for the platform's own code and small functions. */
function compileSync(isolate: ivm.Isolate, cache: CodeCache, key: string, source: string, origin: ivm.ScriptOrigin) {
  const options = compileOptions(cache, key, origin);
  return remember(cache, key, options, isolate.compileScriptSync(source, options));
}

async function compile(
  isolate: ivm.Isolate,
  cache: CodeCache,
  key: string,
  source: string,
  origin: ivm.ScriptOrigin,
): Promise<ivm.Script> {
  if (source.length <= SYNC_COMPILE_MAX_CHARS) return compileSync(isolate, cache, key, source, origin);
  const options = compileOptions(cache, key, origin);
  return remember(cache, key, options, await isolate.compileScript(source, options));
}

/**
 * Runs on the server's own thread. isolated-vm's asynchronous calls hop to a pool thread and
 * back, which costs far more than a short function itself (about 75 us against 5 us here), so a
 * version whose runs have proved short (and each version's first run, on trial) is called
 * synchronously, with a budget: the event loop is
 * blocked for at most SYNC_BUDGET_MS. A run that overruns it is abandoned, the isolate rebuilt
 * with the function loaded again, and the run made again asynchronously; the version proves itself
 * again, and after a second overrun stays off the fast path. Repeating it is safe because a function in an isolate has no effect
 * outside it, and the abandoned attempt's logs are dropped.
 */
const SYNC_BUDGET_MS = 10;
/** A fast-path entry the watchdog does not cover: isolated-vm's own timeout keeps the budget. */
const TIMED_ENTRY = { timeout: SYNC_BUDGET_MS };
/**
 * A run counts as short when its isolate CPU time is under this. CPU time rather than wall time,
 * so that the host preempting the server's thread does not count against the function.
 */
const SHORT_RUN_MS = 1;
/**
 * Overruns a version may have (within NAMESPACE_PENALTY_MS) before it leaves the fast path. The
 * budget is wall time, and a busy host can preempt the thread during any run: one overrun proves
 * nothing about the function, only repeated ones do. Each sends it back to proving itself.
 */
const VERSION_OVERRUNS_ALLOWED = 2;
/** A run on the fast path that takes this much CPU time sends its version back to the asynchronous path. */
const FAST_RUN_REVOKE_MS = SYNC_BUDGET_MS / 4;
/** Short asynchronous runs a version needs before it is called synchronously. */
const SHORT_RUNS_NEEDED = 3;
/**
 * Each overrun blocks the server's thread for the budget once. So that a tenant cannot make that
 * a habit by deploying version after version, a namespace with this many overruns loses the fast
 * path for all its functions for NAMESPACE_PENALTY_MS.
 */
const NAMESPACE_OVERRUNS_ALLOWED = 3;
const NAMESPACE_PENALTY_MS = 10 * 60_000;

/** The eligibility key of a version's top-level code, apart from its runs'. */
function initKey(key: string): string {
  return `${key}${INIT}`;
}

/** `namespace/name@version` → `namespace`. */
function namespaceOf(key: string): string {
  const slash = key.indexOf('/');
  return slash < 0 ? key : key.slice(0, slash);
}

/** Per version: whether its runs are short enough to be made on the server's thread. */
export class SyncEligibility {
  private readonly entries = new Map<string, { shortRuns: number; overruns: number; since: number }>();
  private readonly namespaces = new Map<string, { overruns: number; since: number }>();
  /** When a first run of each namespace last overran the budget on the server's thread. */
  private readonly trialOverruns = new Map<string, number>();

  constructor(private readonly capacity: number) {}

  eligible(key: string): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.shortRuns < SHORT_RUNS_NEEDED || this.versionBanned(entry)) return false;
    return this.namespaceAllowed(key);
  }

  /**
   * Whether a version's first run may be tried on the server's thread, before it has a record:
   * nothing of it was run yet (a later run that is not short must prove itself as usual), and no
   * first run of its namespace overran there lately. Such an overrun leaves its version to prove
   * itself as usual but does not count towards taking the fast path from the namespace (a function
   * that runs long from its first call has not abused the path: it never was on it); instead it
   * stops the namespace's first runs being tried for NAMESPACE_PENALTY_MS, so that deploying
   * version after version blocks the server's thread for at most one budget per namespace then.
   */
  mayTryFirstRun(key: string): boolean {
    if (this.entries.has(key)) return false;
    const trialOverrun = this.trialOverruns.get(namespaceOf(key));
    if (trialOverrun !== undefined && Date.now() - trialOverrun <= NAMESPACE_PENALTY_MS) return false;
    return this.namespaceAllowed(key);
  }

  /** A first run tried on the server's thread overran the budget (see mayTryFirstRun). */
  firstRunOverran(key: string): void {
    const now = Date.now();
    // Its record starts here, with no short runs: it proves itself like any version. Not counted
    // as one of its overruns either, so that a first run that does more (filling a cache, say)
    // does not leave it one overrun from losing the path.
    this.entry(key).shortRuns = 0;
    const name = namespaceOf(key);
    this.trialOverruns.delete(name);
    this.trialOverruns.set(name, now);
    if (this.trialOverruns.size > this.capacity) {
      const oldest = this.trialOverruns.keys().next().value;
      if (oldest !== undefined) this.trialOverruns.delete(oldest);
    }
  }

  /** Whether code may be tried on the server's thread without a record of short runs: it has not overrun there lately. */
  mayTry(key: string): boolean {
    const entry = this.entries.get(key);
    const overranLately = entry !== undefined && entry.overruns > 0 && Date.now() - entry.since <= NAMESPACE_PENALTY_MS;
    return !overranLately && this.namespaceAllowed(key);
  }

  /** A version that overran repeatedly within NAMESPACE_PENALTY_MS: the function's doing, not the host's. */
  private versionBanned(entry: { overruns: number; since: number }): boolean {
    return entry.overruns >= VERSION_OVERRUNS_ALLOWED && Date.now() - entry.since <= NAMESPACE_PENALTY_MS;
  }

  private namespaceAllowed(key: string): boolean {
    const namespace = this.namespaces.get(namespaceOf(key));
    return !namespace || namespace.overruns < NAMESPACE_OVERRUNS_ALLOWED || Date.now() - namespace.since > NAMESPACE_PENALTY_MS;
  }

  /**
   * After each run that ended normally, with the isolate's CPU time it took: a short one counts
   * towards the fast path; one that came near the budget sends the version back to proving itself.
   * One in between (a garbage collection in the isolate, or on the asynchronous path the host
   * busy: the hop's CPU time counts there) changes nothing: it stayed well within the budget.
   */
  observe(key: string, cpuMs: number): void {
    const entry = this.entry(key);
    if (cpuMs < SHORT_RUN_MS) entry.shortRuns++;
    else if (cpuMs >= FAST_RUN_REVOKE_MS) entry.shortRuns = 0;
  }

  overran(key: string): void {
    const now = Date.now();
    const entry = this.entry(key);
    entry.shortRuns = 0;
    if (now - entry.since > NAMESPACE_PENALTY_MS) {
      entry.overruns = 1;
      entry.since = now;
    } else entry.overruns++;
    const name = namespaceOf(key);
    const namespace = this.namespaces.get(name);
    if (!namespace || now - namespace.since > NAMESPACE_PENALTY_MS) this.namespaces.set(name, { overruns: 1, since: now });
    else namespace.overruns++;
  }

  private entry(key: string) {
    let entry = this.entries.get(key);
    if (!entry) {
      entry = { shortRuns: 0, overruns: 0, since: 0 };
      this.entries.set(key, entry);
      if (this.entries.size > this.capacity) {
        const oldest = this.entries.keys().next().value;
        if (oldest !== undefined) this.entries.delete(oldest);
      }
    }
    return entry;
  }
}

type Envelope = string;

/** The isolate's internals (see bootstrap.js), reachable only through these references. */
interface Internals {
  load: ivm.Reference<(moduleFunction: unknown, main: string, filename: string, logLimit: number, deadline: number) => Envelope>;
  run: ivm.Reference<(id: string, params: string, deadline: number, acks: string) => Promise<Envelope>>;
  start: ivm.Reference<(id: string, params: string, deadline: number, acks: string) => Envelope | undefined>;
  take: ivm.Reference<(id: string) => Envelope | undefined>;
  fire: ivm.Reference<(id: number) => void>;
}

/** The module function (a dereference of it), the entry point's name, the file name, the log limit and the deadline. */
type LoadArguments = [ivm.Dereference<unknown>, string, string, number, number];

/** One isolate, its context and the references into it; replaced whole when rebuilt. */
interface Realm {
  /** Set when the realm is given up: what its callbacks still deliver belongs to nobody. */
  abandoned: { value: boolean };
  isolate: ivm.Isolate;
  context: ivm.Context;
  internals: Internals;
  /** Set when the entry watchdog ended an entry into it: the watchdog disposes the isolate. */
  claimed?: boolean;
}

/** Envelopes from bootstrap.js: a result or an error, and how many log lines the run sent. */
interface ParsedEnvelope {
  ok?: unknown;
  err?: unknown;
  name?: string;
  logs: number;
}

/** The owner of what the function's top-level code does and leaves behind (the same in bootstrap.js). */
const INIT = '#init';
/** Date.now() and isolated-vm's timers disagree by up to this when deciding which budget ran out. */
const CLOCK_SLACK_MS = 2;
/** Room beyond the log limit for the truncation lines of leftover output held for the next activation. */
const HELD_SLACK_CHARS = 1024;
const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;

/** A timer callback sent into the isolate that has not come back yet. */
interface Fire {
  owner: string;
}

interface ActiveRun {
  id: string;
  sink: LogSink;
  /** Log lines received so far; the envelope says how many the run sent. */
  received: number;
  /** Timer callbacks that held the isolate when this run was sent to it: it starts after them. */
  queuedBehind: Set<Fire> | undefined;
}

/** Why the sandbox stopped. An isolate that is disposed without the host stopping it ran out of memory. */
type StopReason =
  | { kind: 'timeout'; owner: string }
  | { kind: 'blocked'; fire: Fire }
  | { kind: 'oom' }
  | { kind: 'failed'; message: string }
  | { kind: 'destroyed' };

/** A run that failed in a way already decided, e.g. when the function could not be loaded again. */
class RunFailure extends Error {
  constructor(readonly outcome: RunOutcome & { kind: 'crash' }) {
    super(outcome.reason);
  }
}

let sandboxCounter = 0;

/** What a backend's sandboxes share: code caches, what their runs proved, the run counts and the entry watchdog. */
interface SharedBySandboxes {
  cache: CodeCache;
  syncEligibility: SyncEligibility;
  stats: FastPathRunStats;
  watchdog: EntryWatchdog;
}

export class IsolateSandbox implements Sandbox {
  readonly id = `isolate-${++sandboxCounter}`;
  private readonly timers = new Map<number, NodeJS.Timeout>();
  private readonly runs = new Map<string, ActiveRun>();
  /** Runs whose envelope comes later through the hostDone bridge. */
  private readonly settling = new Map<string, { resolve: (e: Envelope) => void; reject: (e: unknown) => void }>();
  private readonly fires = new Set<Fire>();
  /** Envelopes received whose copies the isolate may drop: sent along with the next run. */
  private acks: string[] = [];
  /** Leftover output (after its activation returned), written at the start of the next activation. */
  private held: { owner: string; stream: LogStream; text: string }[] = [];
  private heldChars = 0;
  private heldDroppedFrom: string | undefined;
  /** The top-level code being run, and where its output goes (nowhere when loaded again after an overrun). */
  private loading: { sink: LogSink | undefined; received: number } | undefined;
  private logLimitBytes = 0;
  private realm!: Realm;
  private code: FunctionCode | undefined;
  private deathListener: ((reason: string) => void) | undefined;
  private destroyed = false;
  private stopReason: StopReason | undefined;

  private readonly cache: CodeCache;
  private readonly syncEligibility: SyncEligibility;
  private readonly stats: FastPathRunStats;
  private readonly watchdog: EntryWatchdog;

  private constructor(
    private readonly spec: SandboxSpec,
    shared: SharedBySandboxes,
  ) {
    this.cache = shared.cache;
    this.syncEligibility = shared.syncEligibility;
    this.stats = shared.stats;
    this.watchdog = shared.watchdog;
  }

  /** Makes an isolate ready for code. */
  static async create(spec: SandboxSpec, shared: SharedBySandboxes): Promise<IsolateSandbox> {
    const sandbox = new IsolateSandbox(spec, shared);
    sandbox.realm = sandbox.openRealm();
    return sandbox;
  }

  /**
   * The bootstrap's code cache with the functions that load and run a function in it. V8 compiles
   * a function when it is first called, and a code cache holds what was compiled when it was made:
   * one made at the bootstrap's compile would leave every new isolate to compile those functions
   * during its cold start. So a throwaway isolate loads and runs a small function once (with
   * caches and records of its own), then compiles the bootstrap again: V8 finds the same code,
   * those functions compiled, and the cache it makes holds them. Undefined if any step fails.
   */
  static async warmedBootstrapCache(): Promise<ivm.ExternalCopy<ArrayBuffer> | undefined> {
    const watchdog = new EntryWatchdog();
    const donor = await IsolateSandbox.create(
      { memoryMb: 16 },
      { cache: new CodeCache(4), syncEligibility: new SyncEligibility(4), stats: { sync: 0, async: 0, overruns: 0 }, watchdog },
    );
    try {
      const code: FunctionCode = {
        key: 'isola/warm-up@0',
        kind: 'nodejs:20',
        code: WARM_UP_CODE,
        binary: false,
        main: 'main',
        filename: 'warm-up.js',
        env: {},
        logLimitBytes: 1024,
      };
      const ignore = () => {};
      if (!(await donor.init(code, Date.now() + 5000, ignore)).ok) return undefined;
      const outcome = await donor.run({
        activationId: 'warm-up',
        params: {},
        deadline: Date.now() + 5000,
        env: {},
        onLog: ignore,
      });
      if (outcome.kind !== 'result' || !donor.alive) return undefined;
      const again = donor.realm.isolate.compileScriptSync(BOOTSTRAP_SOURCE, { ...BOOTSTRAP_ORIGIN, produceCachedData: true });
      const cachedData = (again as ivm.Script & ivm.CachedDataResult).cachedData;
      again.release();
      return cachedData;
    } finally {
      await donor.destroy();
      await watchdog.close();
    }
  }

  /**
   * A new isolate with the bootstrap run in its context. All on the server's thread: it is the
   * platform's own short code (about 0.3 ms with its cachedData), and each hop to the isolate's
   * thread and back would cost about as much again, more when the CPUs are busy.
   */
  private openRealm(): Realm {
    const isolate = new ivm.Isolate({ memoryLimit: this.spec.memoryMb });
    try {
      const abandoned = { value: false };
      const context = isolate.createContextSync();
      const bootstrap = compileSync(isolate, this.cache, 'bootstrap', BOOTSTRAP_SOURCE, BOOTSTRAP_ORIGIN);
      const factory = bootstrap.runSync(context, { reference: true }) as ivm.Reference<unknown>;
      bootstrap.release();
      const internals = factory.applySync(undefined, this.bridges(abandoned), {
        result: { reference: true },
      }) as ivm.Reference<Record<keyof Internals, unknown>>;
      factory.release();
      const take = <T>(name: keyof Internals) => internals.getSync(name, { reference: true }) as unknown as ivm.Reference<T>;
      const realm: Realm = {
        abandoned,
        isolate,
        context,
        internals: { load: take('load'), run: take('run'), start: take('start'), take: take('take'), fire: take('fire') },
      };
      internals.release();
      return realm;
    } catch (error) {
      if (!isolate.isDisposed) isolate.dispose();
      throw error;
    }
  }

  /**
   * The host's side of the bootstrap: log, timer, clear timer, random bytes, run settled. They
   * must never throw into the host: isolated-vm turns that into an unhandled rejection.
   */
  private bridges(abandoned: { value: boolean }): ivm.Callback[] {
    // Callbacks of a realm that was given up are dropped: its logs belong to an abandoned attempt.
    const current = () => !abandoned.value && !this.destroyed;
    return [
      new ivm.Callback(
        (owner: string, stream: string, text: string, late: boolean) => {
          if (current()) this.receive(String(owner), stream === 'stderr' ? 'stderr' : 'stdout', String(text), late === true);
        },
        { ignored: true },
      ),
      new ivm.Callback(
        (id: number, ms: number, owner: string, deadline: number) => {
          if (current()) this.schedule(id, ms, String(owner), deadline);
        },
        { ignored: true },
      ),
      new ivm.Callback(
        (id: number) => {
          if (!current()) return;
          clearTimeout(this.timers.get(id));
          this.timers.delete(id);
        },
        { ignored: true },
      ),
      new ivm.Callback((n: number) => randomBytes(Math.max(0, Math.min(MAX_RANDOM_BYTES, n | 0))).toString('hex'), {
        sync: true,
      }),
      new ivm.Callback(
        (id: string, envelope: string) => {
          if (!current()) return;
          const waiting = this.settling.get(id);
          this.settling.delete(id);
          waiting?.resolve(envelope);
        },
        { ignored: true },
      ),
    ];
  }

  get alive(): boolean {
    return !this.destroyed && !this.realm.isolate.isDisposed;
  }

  /** Timer callbacks in the isolate right now: a run sent meanwhile waits for them. */
  get timerCallbacksRunning(): number {
    return this.fires.size;
  }

  /** A log line from the isolate: to its activation while it runs; held for the next one after it returned. */
  private receive(owner: string, stream: LogStream, text: string, late: boolean): void {
    if (!late) {
      const target = owner === INIT ? this.loading : this.runs.get(owner);
      if (target) {
        target.received++;
        target.sink?.(stream, text);
        return;
      }
    }
    this.hold(owner, stream, text);
  }

  /** A line the host itself writes for an owner (an unhandled rejection); not counted as sent by the isolate. */
  private write(owner: string, stream: LogStream, text: string): void {
    const target = owner === INIT ? this.loading : this.runs.get(owner);
    if (target) target.sink?.(stream, text);
    else this.hold(owner, stream, text);
  }

  private hold(owner: string, stream: LogStream, text: string): void {
    // Each owner's output is capped in the isolate; this bounds what several of them leave together.
    if (this.heldChars + text.length > this.logLimitBytes + HELD_SLACK_CHARS) {
      this.heldDroppedFrom ??= owner;
      return;
    }
    this.held.push({ owner, stream, text });
    this.heldChars += text.length;
  }

  /** Writes the held leftover output at the start of an activation, each line marked with where it came from. */
  private flushHeld(sink: LogSink): void {
    if (this.held.length === 0 && this.heldDroppedFrom === undefined) return;
    for (const { owner, stream, text } of this.held) {
      const body = text.endsWith('\n') ? text.slice(0, -1) : text;
      for (const line of body.split('\n')) sink(stream, `${lateLine(owner, line)}\n`);
    }
    if (this.heldDroppedFrom !== undefined) {
      const notice = `Logs were truncated because the total bytes size exceeds the limit of ${this.logLimitBytes} bytes.`;
      sink('stderr', `${lateLine(this.heldDroppedFrom, notice)}\n`);
    }
    this.held = [];
    this.heldChars = 0;
    this.heldDroppedFrom = undefined;
  }

  /** An unhandled rejection, which isolated-vm reports as the failure of the call it happened in. */
  private reportRejection(owner: string, error: unknown): void {
    const text = `Unhandled rejection: ${thrownText(error)}`;
    this.write(owner, 'stderr', `${text.length > this.logLimitBytes ? text.slice(0, this.logLimitBytes) : text}\n`);
  }

  private schedule(id: number, ms: number, owner: string, deadline: number): void {
    // The isolate schedules nothing past its activation's deadline; this holds even if it did.
    if (Date.now() + ms > deadline) return;
    clearTimeout(this.timers.get(id));
    this.timers.set(
      id,
      setTimeout(() => this.fireTimer(id, owner, deadline), ms),
    );
  }

  private fireTimer(id: number, owner: string, deadline: number): void {
    this.timers.delete(id);
    const realm = this.realm;
    const remaining = deadline - Date.now();
    if (!this.alive || remaining <= 0) return;
    const fire: Fire = { owner };
    this.fires.add(fire);
    // The callback may run until its activation's deadline; isolated-vm stops it there.
    void (async () => {
      try {
        await realm.internals.fire.apply(undefined, [id], { timeout: remaining });
      } catch (error) {
        this.fireFailed(realm, fire, deadline, error);
      } finally {
        this.fires.delete(fire);
      }
    })();
  }

  private fireFailed(realm: Realm, fire: Fire, deadline: number, error: unknown): void {
    if (realm !== this.realm || realm.abandoned.value || this.destroyed) return;
    if (realm.isolate.isDisposed) {
      this.stop({ kind: 'oom' });
      this.deathListener?.('The isolate ran out of memory while a timer callback ran.');
      return;
    }
    if (Date.now() >= deadline - CLOCK_SLACK_MS) {
      // Stopped at its activation's deadline. An activation still running reports that itself.
      if (!this.runs.has(fire.owner))
        this.hold(fire.owner, 'stderr', "A timer callback was stopped at the activation's deadline.\n");
      return;
    }
    this.reportRejection(fire.owner, error);
  }

  async init(code: FunctionCode, deadline: number, onLog: LogSink): Promise<InitOutcome> {
    const remaining = Math.max(1, deadline - Date.now());
    this.logLimitBytes = code.logLimitBytes;
    // isolated-vm's own timeout does not cover compiling; this covers everything.
    const watchdog = setTimeout(() => this.stop({ kind: 'timeout', owner: INIT }), remaining);
    try {
      const outcome = await this.load(this.realm, code, deadline, onLog);
      if (outcome.ok) this.code = code;
      else await this.destroy();
      return outcome;
    } catch (error) {
      if (error instanceof RunFailure) {
        await this.destroy();
        return { ok: false, kind: 'crash', error: error.outcome.reason };
      }
      const reason = this.failure(this.realm, INIT, deadline, error);
      await this.destroy();
      if (reason.kind === 'timeout')
        return { ok: false, kind: 'timeout', error: `Initialization did not finish within ${remaining} ms.` };
      if (reason.kind === 'oom') return { ok: false, kind: 'oom', error: 'Initialization exhausted the memory limit.' };
      return { ok: false, kind: 'crash', error: reason.kind === 'failed' ? reason.message : 'The isolate was stopped.' };
    } finally {
      clearTimeout(watchdog);
    }
  }

  /**
   * Compiles the function's code as a CommonJS-style module function in `realm` and runs its
   * top-level code. What the code throws is an error outcome; only the platform's own events
   * (a timeout, the memory limit, the sandbox stopped) are thrown.
   */
  private async load(
    realm: Realm,
    code: FunctionCode,
    deadline: number,
    sink: LogSink | undefined,
    sync = true,
  ): Promise<InitOutcome> {
    const loading = { sink, received: 0 };
    this.loading = loading;
    try {
      let script: ivm.Script;
      try {
        script = await compile(realm.isolate, this.cache, code.key, moduleSource(code), {
          filename: code.filename,
          lineOffset: -1,
        });
      } catch (error) {
        if (this.destroyed || realm.isolate.isDisposed) throw error;
        // The isolate is fine and nothing ran: the code does not compile.
        const syntax = describeSyntaxError(error, code);
        sink?.('stderr', syntax.log);
        return { ok: false, kind: 'error', error: syntax.message };
      }
      // Evaluates the function expression only: none of the function's code runs here.
      const moduleFunction = script.runSync(realm.context, { reference: true }) as ivm.Reference<unknown>;
      script.release();
      const args: LoadArguments = [
        moduleFunction.derefInto({ release: true }),
        code.main,
        code.filename,
        code.logLimitBytes,
        deadline,
      ];
      let envelope: Envelope | undefined;
      if (sync && deadline - Date.now() > SYNC_BUDGET_MS && this.syncEligibility.mayTry(initKey(code.key)))
        envelope = this.loadSynchronously(realm, code, args);
      if (envelope === undefined) {
        if (this.realm !== realm) {
          // The top-level code overran the budget on the server's thread: loaded again, in a new realm.
          this.loading = undefined;
          return this.load(this.realm, code, deadline, sink, false);
        }
        try {
          envelope = (await realm.internals.load.apply(undefined, args, {
            timeout: Math.max(1, deadline - Date.now()),
            result: { copy: true },
          })) as Envelope;
          this.acks.push(INIT);
        } catch (error) {
          if (!this.isRejection(realm, deadline)) throw error;
          this.reportRejection(INIT, error);
          envelope = await this.recover(realm, INIT);
        }
      }
      const parsed = await this.readEnvelope(envelope, loading);
      if ('err' in parsed) {
        const message = typeof parsed.err === 'string' ? parsed.err : JSON.stringify(parsed.err);
        return {
          ok: false,
          kind: 'error',
          error: parsed.name && parsed.name !== 'Error' ? `${parsed.name}: ${message}` : message,
        };
      }
      return { ok: true };
    } finally {
      if (this.loading === loading) this.loading = undefined;
    }
  }

  /**
   * Runs the top-level code on the server's thread within the budget, as the fast path runs a
   * short function: most top-level code only defines functions. Returns the envelope, or
   * undefined when it overran the budget: then this sandbox has a new realm (nothing loaded), the
   * attempt's output is dropped with the old one, and this version's top-level code is never run
   * on the server's thread again. Throws what the platform stopped (the memory limit).
   */
  private loadSynchronously(realm: Realm, code: FunctionCode, args: LoadArguments): Envelope | undefined {
    const started = performance.now();
    try {
      const envelope = realm.internals.load.applySync(undefined, args, {
        timeout: SYNC_BUDGET_MS,
        result: { copy: true },
      }) as Envelope;
      this.acks.push(INIT);
      return envelope;
    } catch (error) {
      if (this.destroyed || realm.isolate.isDisposed) throw error;
      if (performance.now() - started < SYNC_BUDGET_MS - CLOCK_SLACK_MS) {
        // Not the budget: the top-level code left a rejection nobody handled. load() has stored
        // its envelope before returning.
        this.reportRejection(INIT, error);
        const envelope = realm.internals.take.applySync(undefined, [INIT]) as Envelope | undefined;
        if (envelope !== undefined) return envelope;
        throw error;
      }
      this.syncEligibility.overran(initKey(code.key));
      this.stats.overruns++;
      this.replaceRealm();
      return undefined;
    }
  }

  async run(request: RunRequest): Promise<RunOutcome> {
    const code = this.code;
    if (!code || !this.alive) return { kind: 'not-started', reason: 'The isolate is not initialised or no longer alive.' };
    const id = request.activationId;
    const deadline = request.deadline;
    const remaining = deadline - Date.now();
    if (remaining <= 0) return { kind: 'timeout' };
    this.flushHeld(request.onLog);
    let paramsJson: string;
    try {
      paramsJson = JSON.stringify(request.params) ?? '{}';
    } catch (error) {
      return { kind: 'error', error: `The parameters cannot be passed to the function: ${describeHostError(error)}` };
    }
    const run: ActiveRun = {
      id,
      sink: request.onLog,
      received: 0,
      queuedBehind: this.fires.size > 0 ? new Set(this.fires) : undefined,
    };
    this.runs.set(id, run);
    // isolated-vm's own timeout only covers synchronous execution; this one also covers time spent
    // awaiting timers and other host calls. A run answered on the fast path needs none.
    let watchdog: NodeJS.Timeout | undefined;
    const arm = () => {
      watchdog ??= setTimeout(() => this.overdue(run), Math.max(0, deadline - Date.now()));
    };
    try {
      const alone = this.runs.size === 1 && this.fires.size === 0;
      let envelope: Envelope | undefined;
      if (alone && remaining > SYNC_BUDGET_MS) {
        // A version's first run is tried there too: most are short, and the hop to the isolate's
        // thread is most of a cold start's call.
        const firstRun = this.syncEligibility.mayTryFirstRun(code.key);
        if (firstRun || this.syncEligibility.eligible(code.key)) {
          // A string when the run finished within the entry (most do): no turn of the event loop for it.
          const started = this.runSynchronously(code, run, paramsJson, deadline, arm, firstRun);
          envelope = typeof started === 'string' ? started : await started;
        }
      }
      if (envelope === undefined) {
        arm();
        this.stats.async++;
        const realm = this.realm;
        const cpuBefore = realm.isolate.cpuTime;
        envelope = await this.runAsynchronously(realm, run, paramsJson, deadline);
        if (alone) this.syncEligibility.observe(code.key, this.cpuMsSince(realm, cpuBefore));
      }
      const read = this.readEnvelope(envelope, run);
      const parsed = read instanceof Promise ? await read : read;
      return 'err' in parsed ? { kind: 'error', error: parsed.err } : { kind: 'result', result: parsed.ok };
    } catch (error) {
      if (error instanceof RunFailure) {
        this.stop({ kind: 'failed', message: error.message });
        return error.outcome;
      }
      return this.failedRun(run, deadline, error);
    } finally {
      clearTimeout(watchdog);
      this.runs.delete(id);
      this.settling.delete(id);
    }
  }

  private async runAsynchronously(realm: Realm, run: ActiveRun, paramsJson: string, deadline: number): Promise<Envelope> {
    try {
      const envelope = (await realm.internals.run.apply(undefined, [run.id, paramsJson, deadline, this.takeAcks()], {
        timeout: Math.max(1, deadline - Date.now()),
        result: { promise: true, copy: true },
      })) as Envelope;
      this.acks.push(run.id);
      return envelope;
    } catch (error) {
      if (!this.isRejection(realm, deadline)) throw error;
      this.reportRejection(run.id, error);
      return this.recover(realm, run.id);
    }
  }

  /**
   * The fast path: starts the run on this thread within the budget. Resolves to its envelope, or
   * to undefined when it overran the budget and must be made again (asynchronously) in a new realm.
   */
  private runSynchronously(
    code: FunctionCode,
    run: ActiveRun,
    paramsJson: string,
    deadline: number,
    armWatchdog: () => void,
    firstRun: boolean,
  ): Envelope | Promise<Envelope | undefined> {
    const realm = this.realm;
    const cpuBefore = realm.isolate.cpuTime;
    this.stats.sync++;
    const started = performance.now();
    let envelope: Envelope | undefined;
    let failure: { error: unknown } | undefined;
    // The budget is kept by the backend's watchdog, or by isolated-vm's timeout when it cannot.
    const entry = this.watchdog.enter(realm.isolate, Date.now() + SYNC_BUDGET_MS + 1);
    try {
      envelope = realm.internals.start.applySync(
        undefined,
        [run.id, paramsJson, deadline, this.takeAcks()],
        entry === 0 ? TIMED_ENTRY : undefined,
      ) as Envelope | undefined;
    } catch (error) {
      failure = { error };
    }
    // Claimed by the watchdog (even as it returned): the isolate is gone, the run is made again.
    const claimed = this.watchdog.exit(entry, realm.isolate);
    if (claimed) realm.claimed = true;
    if (failure || claimed) {
      if (this.destroyed || (!claimed && realm.isolate.isDisposed))
        throw failure ? failure.error : new Error('The isolate was stopped.');
      if (!claimed && performance.now() - started < SYNC_BUDGET_MS - CLOCK_SLACK_MS) {
        // Not the budget: the call's task ended with a rejection nobody handled.
        this.reportRejection(run.id, failure?.error);
      } else {
        if (firstRun) this.syncEligibility.firstRunOverran(code.key);
        else this.syncEligibility.overran(code.key);
        this.stats.overruns++;
        return this.rebuild(code, deadline).then(() => undefined);
      }
    }
    this.syncEligibility.observe(code.key, this.cpuMsSince(realm, cpuBefore));
    // A function that returned a value was answered by `start`; a promise is asked for once the
    // entry's microtasks have run, as is the value an unhandled rejection took from `start`.
    if (envelope !== undefined) return envelope;
    envelope = realm.internals.take.applySync(undefined, [run.id]) as Envelope | undefined;
    if (envelope !== undefined) return envelope;
    // Still awaiting something (a timer): it reports through the hostDone bridge when it settles,
    // which cannot happen before this thread returns to the event loop.
    armWatchdog();
    return this.awaitSettlement(run.id);
  }

  /** The envelope of a call whose own result was lost to an unhandled rejection: the isolate's copy, or when it settles. */
  private async recover(realm: Realm, id: string): Promise<Envelope> {
    const later = this.awaitSettlement(id);
    const envelope = (await realm.internals.take.apply(undefined, [id], { result: { copy: true } })) as Envelope | undefined;
    if (envelope === undefined) return later;
    this.settling.delete(id);
    return envelope;
  }

  private awaitSettlement(id: string): Promise<Envelope> {
    const settled = new Promise<Envelope>((resolve, reject) => this.settling.set(id, { resolve, reject }));
    // Rejected when the sandbox stops, also when nobody waits for it any more.
    settled.catch(() => {});
    return settled;
  }

  /** The envelope read, once every log line it counts has arrived: at once when none is missing (most runs). */
  private readEnvelope(envelope: Envelope, target: { received: number }): ParsedEnvelope | Promise<ParsedEnvelope> {
    let parsed: ParsedEnvelope;
    try {
      parsed = JSON.parse(envelope) as ParsedEnvelope;
    } catch (error) {
      return { err: `The function's result could not be read: ${describeHostError(error)}`, logs: 0 };
    }
    return target.received < parsed.logs ? this.logsArrived(parsed, target) : parsed;
  }

  /** Log callbacks travel on the event loop separately from the result; waits for the stragglers. */
  private async logsArrived(parsed: ParsedEnvelope, target: { received: number }): Promise<ParsedEnvelope> {
    for (let turns = 0; target.received < parsed.logs && turns < 100; turns++)
      await new Promise((resolve) => setImmediate(resolve));
    return parsed;
  }

  private takeAcks(): string {
    if (this.acks.length === 0) return '';
    const acks = this.acks.join('\n');
    this.acks = [];
    return acks;
  }

  /** Whether a call that failed ended with a rejection nobody handled, rather than a platform event. */
  private isRejection(realm: Realm, budgetEnd: number): boolean {
    return !this.destroyed && realm === this.realm && !realm.isolate.isDisposed && Date.now() < budgetEnd - CLOCK_SLACK_MS;
  }

  /** Why a call failed, from what the host and the isolate know, never from the error's text. */
  private failure(realm: Realm, owner: string, budgetEnd: number, error: unknown): StopReason {
    if (this.stopReason) return this.stopReason;
    // Nothing but its memory limit disposes an isolate that the host did not stop.
    if (realm.isolate.isDisposed) return { kind: 'oom' };
    // isolated-vm's timeout, which ends at the deadline the call was given.
    if (Date.now() >= budgetEnd - CLOCK_SLACK_MS) return { kind: 'timeout', owner };
    return { kind: 'failed', message: `The isolate failed: ${describeHostError(error)}` };
  }

  private failedRun(run: ActiveRun, deadline: number, error: unknown): RunOutcome {
    const reason = this.failure(this.realm, run.id, deadline, error);
    this.stop(reason);
    switch (reason.kind) {
      case 'timeout':
        return reason.owner === run.id
          ? { kind: 'timeout' }
          : { kind: 'crash', reason: `The isolate was stopped because activation ${reason.owner} on it ran past its deadline.` };
      case 'blocked':
        return run.queuedBehind?.has(reason.fire)
          ? {
              kind: 'not-started',
              reason: `Leftover work of activation ${reason.fire.owner} held the isolate past this activation's deadline.`,
            }
          : {
              kind: 'crash',
              reason: `The isolate was stopped because leftover work of activation ${reason.fire.owner} held it.`,
            };
      case 'oom':
        return { kind: 'oom' };
      case 'failed':
        return { kind: 'crash', reason: reason.message };
      case 'destroyed':
        return { kind: 'crash', reason: 'The isolate was destroyed while the function ran.' };
    }
  }

  /** A run's deadline passed: it timed out, or it never started because a timer callback still holds the isolate. */
  private overdue(run: ActiveRun): void {
    const blocker = [...(run.queuedBehind ?? [])].find((fire) => this.fires.has(fire) && fire.owner !== run.id);
    this.stop(blocker ? { kind: 'blocked', fire: blocker } : { kind: 'timeout', owner: run.id });
  }

  /** Whether the isolate spent less than SHORT_RUN_MS of CPU since `cpuBefore` (its cpuTime then). */
  private cpuMsSince(realm: Realm, cpuBefore: bigint): number {
    return Number(realm.isolate.cpuTime - cpuBefore) / 1e6;
  }

  /** Replaces the isolate with a new one with the function loaded, keeping this sandbox. */
  private async rebuild(code: FunctionCode, deadline: number): Promise<void> {
    this.replaceRealm();
    // The top-level code runs again; what it prints was shown at the first initialisation.
    const outcome = await this.load(this.realm, code, deadline, undefined);
    if (!outcome.ok) throw new RunFailure({ kind: 'crash', reason: `The function could not be loaded again: ${outcome.error}` });
  }

  /** Gives the realm up for a new one with nothing loaded; what the old one still sends is dropped. */
  private replaceRealm(): void {
    const old = this.realm;
    old.abandoned.value = true;
    for (const handle of this.timers.values()) clearTimeout(handle);
    this.timers.clear();
    this.acks = [];
    releaseRealm(old, this.watchdog);
    if (this.destroyed) throw new Error('The isolate was stopped.');
    try {
      this.realm = this.openRealm();
    } catch (error) {
      throw new RunFailure({ kind: 'crash', reason: `The isolate could not be made again: ${describeHostError(error)}` });
    }
  }

  onDeath(listener: (reason: string) => void): void {
    this.deathListener = listener;
  }

  private stop(reason: StopReason): void {
    if (this.destroyed) return;
    this.stopReason = reason;
    void this.destroy();
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    this.stopReason ??= { kind: 'destroyed' };
    for (const handle of this.timers.values()) clearTimeout(handle);
    this.timers.clear();
    for (const waiting of this.settling.values()) waiting.reject(new Error('The isolate was stopped.'));
    this.settling.clear();
    const realm = this.realm;
    // Disposing an isolate takes a while (about a millisecond): an idle one (an instance evicted
    // to make room for a cold start) is disposed after the current turn, so that the call that
    // caused it goes first. One with code running is stopped now.
    if (this.runs.size > 0 || this.fires.size > 0 || this.loading) releaseRealm(realm, this.watchdog);
    else await new Promise<void>((resolve) => setImmediate(() => resolve(releaseRealm(realm, this.watchdog))));
  }
}

function releaseRealm(realm: Realm, watchdog: EntryWatchdog): void {
  watchdog.forget(realm.isolate);
  // One the watchdog claimed is disposed there.
  if (realm.isolate.isDisposed || realm.claimed) return;
  for (const reference of Object.values(realm.internals)) reference.release();
  realm.isolate.dispose();
}

/**
 * The function's code as a CommonJS-style module function. The wrapper has lines of its own and
 * the script starts at line -1, so that every position in the function's code, on line 1 too, is
 * the one `node file.js` would give.
 */
function moduleSource(code: FunctionCode): string {
  const local = IDENTIFIER.test(code.main) ? `typeof ${code.main} === 'function' ? ${code.main} : undefined` : 'undefined';
  return `(function (exports, require, module, __filename, __dirname) {\n${code.code}\n;return ${local};\n})`;
}

/** The marker for leftover output; the initialisation's is named as such. */
function lateLine(owner: string, line: string): string {
  return owner === INIT ? `[after initialization returned] ${line}` : lateOutputLine(owner, line);
}

/**
 * A compile error as `node file.js` shows it: the file and line, the line itself with a caret,
 * then the error. isolated-vm appends ` [file:line:column]` to V8's message.
 */
function describeSyntaxError(error: unknown, code: FunctionCode): { message: string; log: string } {
  const name = error instanceof Error ? error.name : 'SyntaxError';
  const raw = error instanceof Error ? error.message : String(error);
  const position = / \[([^\]]*):(\d+):(\d+)\]$/.exec(raw);
  if (!position) return { message: `${name}: ${raw}`, log: `${name}: ${raw}\n` };
  const [, file, line, column] = position;
  const text = raw.slice(0, position.index);
  const where = `${file}:${line}:${column}`;
  const source = code.code.split('\n')[Number(line) - 1]?.replace(/\r$/, '');
  const excerpt =
    source !== undefined && source.length <= 300 ? `${source}\n${' '.repeat(Math.max(0, Number(column) - 1))}^\n\n` : '';
  return { message: `${name}: ${text} at ${where}`, log: `${file}:${line}\n${excerpt}${name}: ${text}\n    at ${where}\n` };
}

/** What a value thrown in the isolate says, as its copy on the host shows it. */
function thrownText(error: unknown): string {
  if (error instanceof Error) {
    const stack = typeof error.stack === 'string' ? error.stack : `${error.name}: ${error.message}`;
    // The copy's stack goes on past the isolate's boundary into the host's frames.
    const lines: string[] = [];
    for (const line of stack.split('\n')) {
      if (line.includes('<isolated-vm boundary>')) break;
      if (!line.includes('isola:bootstrap.js')) lines.push(line);
    }
    return lines.join('\n');
  }
  if (typeof error === 'string') return error;
  try {
    return JSON.stringify(error) ?? String(error);
  } catch {
    return String(error);
  }
}

function describeHostError(error: unknown): string {
  if (error instanceof Error) return error.name && error.name !== 'Error' ? `${error.name}: ${error.message}` : error.message;
  return String(error);
}

export class IsolateBackend implements Backend {
  readonly isolation: Isolation = 'isolate';
  readonly minMemoryMb = 16;
  readonly runStats: FastPathRunStats = { sync: 0, async: 0, overruns: 0 };
  private readonly shared: SharedBySandboxes = {
    cache: new CodeCache(2000),
    syncEligibility: new SyncEligibility(2000),
    stats: this.runStats,
    watchdog: new EntryWatchdog(),
  };
  /** Fast-path entries the watchdog covered and ended (the others took isolated-vm's timeout). */
  get watchdogStats(): Readonly<EntryWatchdog['stats']> {
    return this.shared.watchdog.stats;
  }
  /** The bootstrap's code cache is made once, after the first probe (see IsolateSandbox.warmedBootstrapCache). */
  private bootstrapCacheWarmed = false;

  async status(): Promise<BackendStatus> {
    try {
      const sandbox = await IsolateSandbox.create({ memoryMb: 16 }, this.shared);
      await sandbox.destroy();
      if (!this.bootstrapCacheWarmed) {
        this.bootstrapCacheWarmed = true;
        // Without it new isolates still work: the bootstrap is cached from its second compile, as any code.
        const cachedData = await IsolateSandbox.warmedBootstrapCache().catch(() => undefined);
        if (cachedData) this.shared.cache.set('bootstrap', cachedData);
      }
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
    return IsolateSandbox.create(spec, this.shared);
  }

  registerMetrics(registry: Registry): void {
    registerFastPathMetrics(
      registry,
      this.runStats,
      {
        name: 'isola_isolate_runs_total',
        help: 'Runs under isolation "isolate" by how they were made: sync (on the server thread, for versions whose runs proved short) or async (on a pool thread).',
      },
      {
        name: 'isola_isolate_sync_overruns_total',
        help: 'Runs and function loads on the server thread that overran their budget and were made again asynchronously in a new isolate.',
      },
    );
  }

  async close(): Promise<void> {
    await this.shared.watchdog.close();
  }
}
