import { type Kysely, sql } from 'kysely';
import type { StoreDatabase } from './database.js';
import type { ActivationRow, Database } from './schema.js';

/**
 * Inserts finished activations, or completes the record of one that was queued or running. The
 * columns an enqueued record already holds (who, what, when accepted) stay as they are, and a
 * finished record is never replaced: the first outcome stored is the one callers were told of
 * (in a cluster, an invoker cut off mid-run may finish after its work was run again elsewhere).
 */
export function upsertActivations(db: Kysely<Database>, rows: readonly ActivationRow[]) {
  return db
    .insertInto('activations')
    .values([...rows])
    .onConflict((oc) =>
      oc
        .column('activation_id')
        .doUpdateSet((eb) => ({
          version: eb.ref('excluded.version'),
          state: eb.ref('excluded.state'),
          start: eb.ref('excluded.start'),
          end: eb.ref('excluded.end'),
          duration: eb.ref('excluded.duration'),
          status: eb.ref('excluded.status'),
          success: eb.ref('excluded.success'),
          result: eb.ref('excluded.result'),
          logs: eb.ref('excluded.logs'),
          annotations: eb.ref('excluded.annotations'),
          params: eb.ref('excluded.params'),
          attempts: eb.ref('excluded.attempts'),
        }))
        // A literal, not a parameter: SQLite's batch writer binds one parameter per column.
        .where('activations.state', '<>', sql.lit('done')),
    );
}

/**
 * Of two writes of one activation in one batch, the later is the one written (a finished record
 * is never replaced by a later batch: see upsertActivations). PostgreSQL also refuses an insert
 * that touches a row twice.
 */
export function lastPerActivation(rows: readonly ActivationRow[]): ActivationRow[] {
  const byId = new Map<string, ActivationRow>();
  for (const row of rows) byId.set(row.activation_id, row);
  return byId.size === rows.length ? [...rows] : [...byId.values()];
}

interface Pending {
  row: ActivationRow;
  /** Absent for a record written ahead of its commit (see `record`): nobody waits for it. */
  resolve?: () => void;
  reject?: (error: unknown) => void;
}

export interface ActivationWriterOptions {
  /**
   * How long a record written with `record` may wait for its commit, so that many share one
   * (0: as soon as the event loop turns, as `write`). Records of calls already answered are lost
   * when the process is killed within this window; nothing else is.
   */
  windowMs?: number;
  /** Told when a commit of records nobody waits for fails. */
  onError?: (error: unknown, rows: number) => void;
}

/** A batch that gathered this many records commits without waiting for the rest of its window. */
const MAX_BATCH = 1024;

/**
 * Group commit for finished activations, the one write on every invocation's path: every record
 * written during one turn of the event loop goes into one transaction, and each `write` resolves
 * only after that commit. Under load this turns thousands of single-row commits a second into a
 * few hundred. On PostgreSQL a batch commits while the next one gathers, so batches grow with the
 * round trip. `record` hands over a record whose caller has had its answer already: it commits
 * with the next batch, at most the window after it was written.
 */
export class ActivationWriter {
  private pending: Pending[] = [];
  /** Pending rows someone waits for: they commit on the next turn, not at the window's end. */
  private awaited = 0;
  private immediate: NodeJS.Immediate | undefined;
  private timer: NodeJS.Timeout | undefined;
  private committing: Promise<void> | undefined;
  private readonly windowMs: number;

  constructor(
    private readonly database: StoreDatabase,
    private readonly options: ActivationWriterOptions = {},
  ) {
    this.windowMs = Math.max(0, options.windowMs ?? 0);
  }

  /** Records waiting for their commit, or being committed. */
  get busy(): boolean {
    return this.pending.length > 0 || this.committing !== undefined;
  }

  /** Stores a record; resolves once it is committed. */
  write(row: ActivationRow): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ row, resolve, reject });
      this.awaited++;
      this.schedule();
    });
  }

  /** Stores a record within the window, with nobody waiting: see `ActivationWriterOptions.windowMs`. */
  record(row: ActivationRow): void {
    this.pending.push({ row });
    this.schedule();
  }

  /** Commits everything written so far. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.committing) await this.committing;
      else if (this.pending.length === 0) return;
      else if (this.database.inTransaction()) await nextTurn();
      else this.commit();
    }
  }

  private schedule(): void {
    if (this.immediate) return;
    if (this.awaited > 0 || this.windowMs === 0 || this.pending.length >= MAX_BATCH) {
      this.immediate = setImmediate(() => this.commit());
      return;
    }
    // The window is counted from the oldest record waiting, and never stretched by later ones.
    if (!this.timer) {
      this.timer = setTimeout(() => this.commit(), this.windowMs);
      // A window about to end must not keep a process alive that has nothing else to do: close() flushes.
      this.timer.unref();
    }
  }

  private commit(): void {
    if (this.immediate) clearImmediate(this.immediate);
    if (this.timer) clearTimeout(this.timer);
    this.immediate = undefined;
    this.timer = undefined;
    // A commit under way schedules the next one when it ends.
    if (this.committing || this.pending.length === 0) return;
    // Not inside another transaction on SQLite's one connection, or its rollback would take these.
    if (this.database.inTransaction()) {
      this.immediate = setImmediate(() => this.commit());
      return;
    }
    const batch = this.pending;
    this.pending = [];
    this.awaited = 0;
    let committed: Promise<void> | undefined;
    try {
      committed = this.database.writeActivations(batch.map((p) => p.row));
    } catch (error) {
      this.settle(batch, error);
      return;
    }
    if (!committed) {
      this.settle(batch, undefined);
      return;
    }
    this.committing = committed
      .then(
        () => this.settle(batch, undefined),
        (error: unknown) => this.settle(batch, error),
      )
      .finally(() => {
        this.committing = undefined;
        if (this.pending.length > 0) this.schedule();
      });
  }

  private settle(batch: readonly Pending[], error: unknown): void {
    let unheard = 0;
    for (const p of batch) {
      if (!p.resolve) unheard++;
      else if (error === undefined) p.resolve();
      else p.reject?.(error);
    }
    if (error !== undefined && unheard > 0) this.options.onError?.(error, unheard);
  }
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
