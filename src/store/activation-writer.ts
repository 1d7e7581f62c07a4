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
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Group commit for finished activations, the one write on every invocation's path: every record
 * written during one turn of the event loop goes into one transaction, and each caller's promise
 * resolves only after that commit. Under load this turns thousands of single-row commits a second
 * into a few hundred, without ever answering a caller before its record is stored. On PostgreSQL
 * a batch commits while the next one gathers, so batches grow with the round trip.
 */
export class ActivationWriter {
  private pending: Pending[] = [];
  private scheduled = false;
  private committing: Promise<void> | undefined;

  constructor(private readonly database: StoreDatabase) {}

  write(row: ActivationRow): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ row, resolve, reject });
      this.schedule();
    });
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
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.commit());
  }

  private commit(): void {
    this.scheduled = false;
    // A commit under way schedules the next one when it ends.
    if (this.committing || this.pending.length === 0) return;
    // Not inside another transaction on SQLite's one connection, or its rollback would take these.
    if (this.database.inTransaction()) {
      this.schedule();
      return;
    }
    const batch = this.pending;
    this.pending = [];
    let committed: Promise<void> | undefined;
    try {
      committed = this.database.writeActivations(batch.map((p) => p.row));
    } catch (error) {
      for (const p of batch) p.reject(error);
      return;
    }
    if (!committed) {
      for (const p of batch) p.resolve();
      return;
    }
    this.committing = committed
      .then(
        () => {
          for (const p of batch) p.resolve();
        },
        (error: unknown) => {
          for (const p of batch) p.reject(error);
        },
      )
      .finally(() => {
        this.committing = undefined;
        if (this.pending.length > 0) this.schedule();
      });
  }
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
