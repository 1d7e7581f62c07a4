import type { Kysely } from 'kysely';
import type { Database } from './schema.js';
import type { ActivationRow } from './store.js';

interface Pending {
  row: ActivationRow;
  resolve: () => void;
  reject: (error: unknown) => void;
}

// SQLite allows 32766 bound variables per statement; a row binds 17.
const MAX_ROWS_PER_STATEMENT = 500;

/**
 * Group commit for finished activations: every record written during one turn of the event loop
 * goes into one transaction, and each caller's promise resolves only after that commit. Under load
 * this turns thousands of single-row commits a second into a few dozen, without ever answering a
 * caller before its record is stored.
 */
export class ActivationWriter {
  private pending: Pending[] = [];
  private scheduled = false;
  private inflight: Promise<void> = Promise.resolve();

  constructor(private readonly db: Kysely<Database>) {}

  write(row: ActivationRow): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pending.push({ row, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.inflight = this.inflight.then(() => this.commit());
        });
      }
    });
  }

  /** Waits until everything written so far is committed. */
  async flush(): Promise<void> {
    this.inflight = this.inflight.then(() => this.commit());
    await this.inflight;
  }

  private async commit(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    if (batch.length === 0) return;
    try {
      await this.db.transaction().execute(async (trx) => {
        for (let i = 0; i < batch.length; i += MAX_ROWS_PER_STATEMENT) {
          const rows = batch.slice(i, i + MAX_ROWS_PER_STATEMENT).map((p) => p.row);
          await trx
            .insertInto('activations')
            .values(rows)
            .onConflict((oc) =>
              oc.column('activation_id').doUpdateSet((eb) => ({
                state: eb.ref('excluded.state'),
                version: eb.ref('excluded.version'),
                start: eb.ref('excluded.start'),
                end: eb.ref('excluded.end'),
                duration: eb.ref('excluded.duration'),
                status: eb.ref('excluded.status'),
                success: eb.ref('excluded.success'),
                result: eb.ref('excluded.result'),
                logs: eb.ref('excluded.logs'),
                annotations: eb.ref('excluded.annotations'),
                params: eb.ref('excluded.params'),
              })),
            )
            .execute();
        }
      });
      for (const p of batch) p.resolve();
    } catch (error) {
      for (const p of batch) p.reject(error);
    }
  }
}
