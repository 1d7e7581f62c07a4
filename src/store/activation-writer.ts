import type SqliteDatabase from 'better-sqlite3';
import type { ActivationRow } from './store.js';

interface Pending {
  row: ActivationRow;
  resolve: () => void;
  reject: (error: unknown) => void;
}

const COLUMNS = [
  'activation_id',
  'namespace',
  'name',
  'version',
  'subject',
  'state',
  'accepted',
  'start',
  'end',
  'duration',
  'status',
  'success',
  'result',
  'logs',
  'annotations',
  'params',
  'attempts',
] as const satisfies readonly (keyof ActivationRow)[];
const KEPT_ON_CONFLICT = new Set(['activation_id', 'namespace', 'name', 'subject', 'accepted']);

/**
 * Group commit for finished activations, the one write on every invocation's path: every record
 * written during one turn of the event loop goes into one SQLite transaction, and each caller's
 * promise resolves only after that commit. Under load this turns thousands of single-row commits
 * a second into a few hundred, without ever answering a caller before its record is stored. It
 * talks to better-sqlite3 directly with one prepared statement: the general query layer's
 * per-query plumbing costs more than the insert itself here.
 */
export class ActivationWriter {
  private pending: Pending[] = [];
  private scheduled = false;
  private readonly commitBatch: (rows: readonly ActivationRow[]) => void;

  constructor(sqlite: SqliteDatabase.Database) {
    const quoted = COLUMNS.map((c) => `"${c}"`);
    const updates = COLUMNS.filter((c) => !KEPT_ON_CONFLICT.has(c)).map((c) => `"${c}" = excluded."${c}"`);
    const upsert = sqlite.prepare(
      `insert into "activations" (${quoted.join(', ')}) values (${COLUMNS.map(() => '?').join(', ')}) ` +
        `on conflict ("activation_id") do update set ${updates.join(', ')}`,
    );
    this.commitBatch = sqlite.transaction((rows: readonly ActivationRow[]) => {
      for (const row of rows) upsert.run(COLUMNS.map((c) => row[c]));
    });
  }

  write(row: ActivationRow): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ row, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.commit());
      }
    });
  }

  /** Commits everything written so far. */
  async flush(): Promise<void> {
    this.commit();
  }

  private commit(): void {
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    try {
      this.commitBatch(batch.map((p) => p.row));
      for (const p of batch) p.resolve();
    } catch (error) {
      for (const p of batch) p.reject(error);
    }
  }
}
