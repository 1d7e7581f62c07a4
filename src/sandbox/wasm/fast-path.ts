/**
 * The fast path: a wasm version whose runs have proved short is run on the server's own thread
 * instead of hopping to a worker thread and back (which costs far more than a short module: about
 * 300 us against 60 us here). The run has a budget: its fuel-metered copy (metering.ts) looks at
 * the clock every REFUEL_UNITS and traps once FAST_PATH_BUDGET_MS have passed, so the event loop
 * is blocked for little more than that. A run that overruns it is abandoned and made again on a
 * worker, with the version's real deadline, and the version stays off the fast path, unless the
 * run on the worker proves short (the host, not the module, was slow; see excuse). Making it
 * again is safe: every run has a fresh instance and in-memory WASI with no effect outside it (see
 * run-module.ts), and the abandoned attempt's logs are dropped.
 */
export const FAST_PATH_BUDGET_MS = 10;
/** A worker run counts as short under this (wall time on the worker). */
export const SHORT_RUN_MS = 1;
/** Short worker runs a version needs before it is run on the server's thread. */
const SHORT_RUNS_NEEDED = 3;
/**
 * Each overrun blocks the server's thread for the budget once. So that a tenant cannot make that
 * a habit by deploying version after version, a namespace with this many overruns loses the fast
 * path for all its functions for NAMESPACE_PENALTY_MS (the isolate backend's rule).
 */
const NAMESPACE_OVERRUNS_ALLOWED = 3;
/**
 * Overruns that were the host's doing (see excuse) are allowed more often, since a busy host
 * causes them now and then (a major garbage collection takes 4-8 ms here), but not without end:
 * at most this many times the budget per namespace per NAMESPACE_PENALTY_MS.
 */
const NAMESPACE_EXCUSED_ALLOWED = 30;
const NAMESPACE_PENALTY_MS = 10 * 60_000;

/** `namespace/name@version` → `namespace`. */
function namespaceOf(key: string): string {
  const slash = key.indexOf('/');
  return slash < 0 ? key : key.slice(0, slash);
}

/** Per version: whether its runs are short enough to be made on the server's thread. */
export class FastPathEligibility {
  private readonly entries = new Map<string, { shortRuns: number; overran: boolean }>();
  private readonly namespaces = new Map<string, { overruns: number; excused: number; since: number }>();

  constructor(private readonly capacity: number) {}

  eligible(key: string): boolean {
    const entry = this.entries.get(key);
    if (entry === undefined || entry.overran || entry.shortRuns < SHORT_RUNS_NEEDED) return false;
    const namespace = this.namespaces.get(namespaceOf(key));
    return (
      !namespace ||
      (namespace.overruns < NAMESPACE_OVERRUNS_ALLOWED && namespace.excused < NAMESPACE_EXCUSED_ALLOWED) ||
      Date.now() - namespace.since > NAMESPACE_PENALTY_MS
    );
  }

  /** After each run on a worker: short, or not (a timeout or a crash is not). */
  observe(key: string, short: boolean): void {
    const entry = this.entry(key);
    entry.shortRuns = short ? entry.shortRuns + 1 : 0;
  }

  /**
   * An overrun whose run, made again on a worker, proved short was the host's doing (the server's
   * thread preempted, or a garbage collection), not the module's: the version keeps the fast path.
   * The overrun still counts against its namespace, among the excused ones, which bounds what a
   * module that is slow only now and then can cost the server's thread.
   */
  excuse(key: string): void {
    this.entry(key).overran = false;
    const namespace = this.namespaces.get(namespaceOf(key));
    if (namespace && namespace.overruns > 0) {
      namespace.overruns--;
      namespace.excused++;
    }
  }

  overran(key: string): void {
    this.entry(key).overran = true;
    const name = namespaceOf(key);
    const now = Date.now();
    const namespace = this.namespaces.get(name);
    if (!namespace || now - namespace.since > NAMESPACE_PENALTY_MS)
      this.namespaces.set(name, { overruns: 1, excused: 0, since: now });
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
