import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type SqliteDatabase from 'better-sqlite3';

/** Rows as the upsert binds them: one value per parameter, in its order. */
export type BoundRow = unknown[];

/** How often the thread copies what the WAL holds into the database file. */
const CHECKPOINT_INTERVAL_MS = 200;
/** SQLite's own default: what the server's connection goes back to when the thread is gone. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

// Plain JavaScript run by the thread: a connection of its own to the file, which commits each
// batch in one transaction and checkpoints the WAL on a timer. PASSIVE never waits for the
// server's connection and never blocks it; a failed checkpoint is tried again at the next tick.
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma('synchronous = NORMAL');
// Waiting here blocks no one: a long transaction of the server's (a purge) only delays the batch.
db.pragma('busy_timeout = 60000');
const statement = db.prepare(workerData.sql);
const write = db.transaction((rows) => {
  for (const row of rows) statement.run(row);
});
parentPort.on('message', ({ id, batch }) => {
  try {
    write(batch);
    parentPort.postMessage({ id });
  } catch (error) {
    parentPort.postMessage({ id, error: String((error && error.message) || error) });
  }
});
setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch {}
}, workerData.checkpointMs).unref();
parentPort.postMessage({ ready: true });
`;

interface InFlight {
  rows: readonly BoundRow[];
  done: Promise<void>;
  resolve: () => void;
  reject: (error: Error) => void;
}

/**
 * Commits batches of activation records, and checkpoints the WAL, on a thread of its own with its
 * own connection: on the server's thread, binding, writing and syncing a batch took about a tenth
 * of a warm call. Until the thread is ready, and once it has ended (failed, or stopped), batches
 * are committed on the server's connection as before, synchronously. What a commit makes durable
 * does not change; a batch the thread was given when it died is written again on the server's
 * connection (the upsert does not change a finished record, so writing one twice is harmless).
 */
export class SqliteWriterThread {
  private worker: Worker | undefined;
  private ready = false;
  private stopped = false;
  private nextId = 1;
  private readonly inFlight = new Map<number, InFlight>();

  constructor(
    private readonly sqlite: SqliteDatabase.Database,
    private readonly file: string,
    private readonly sql: string,
    /** Commits a batch on the server's connection. */
    private readonly writeHere: (rows: readonly BoundRow[]) => void,
  ) {}

  /** Commits a batch: undefined once done here, or a promise the thread settles. */
  write(rows: readonly BoundRow[]): Promise<void> | undefined {
    const worker = this.worker;
    if (!worker || !this.ready) {
      this.start();
      this.writeHere(rows);
      return undefined;
    }
    const id = this.nextId++;
    let settle: Pick<InFlight, 'resolve' | 'reject'> | undefined;
    const done = new Promise<void>((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.inFlight.set(id, { rows, done, ...(settle as Pick<InFlight, 'resolve' | 'reject'>) });
    // Cloned as they are: on the server's thread that costs about half of first joining them into one string.
    worker.postMessage({ id, batch: rows });
    return done;
  }

  /** Ends the thread once its batches are committed; later batches are committed here. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.allSettled([...this.inFlight.values()].map((flight) => flight.done));
    const worker = this.worker;
    if (worker) await worker.terminate();
  }

  private start(): void {
    if (this.worker || this.stopped) return;
    const worker = new Worker(THREAD_SOURCE, {
      eval: true,
      workerData: {
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
        file: this.file,
        sql: this.sql,
        checkpointMs: CHECKPOINT_INTERVAL_MS,
      },
    });
    // It must not keep a process alive that has nothing else to do: close() flushes first.
    worker.unref();
    worker.on('message', (message: { ready?: true; id?: number; error?: string }) => {
      if (message.ready) {
        if (this.worker !== worker) return;
        this.ready = true;
        // The thread checkpoints from now on.
        if (this.sqlite.open) this.sqlite.pragma('wal_autocheckpoint = 0');
        return;
      }
      const flight = this.inFlight.get(message.id as number);
      if (!flight) return;
      this.inFlight.delete(message.id as number);
      if (message.error === undefined) flight.resolve();
      else flight.reject(new Error(message.error));
    });
    // A thread that failed (it could not open the file, say) leaves everything to the server's connection.
    worker.on('error', () => {});
    worker.once('exit', () => this.ended(worker));
    this.worker = worker;
  }

  private ended(worker: Worker): void {
    if (this.worker !== worker) return;
    this.worker = undefined;
    this.ready = false;
    // Not started again: whatever ended it would likely end the next one too.
    this.stopped = true;
    if (!this.sqlite.open) return;
    this.sqlite.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
    this.writeInFlightHere();
  }

  /** Batches the thread had not answered for, written here (again, for any it committed before it ended). */
  private writeInFlightHere(): void {
    if (!this.sqlite.open) return;
    // Not inside a transaction of the server's connection, or its rollback would take them.
    if (this.sqlite.inTransaction) {
      setImmediate(() => this.writeInFlightHere());
      return;
    }
    for (const [id, flight] of this.inFlight) {
      this.inFlight.delete(id);
      try {
        this.writeHere(flight.rows);
        flight.resolve();
      } catch (error) {
        flight.reject(error instanceof Error ? error : new Error(String(error)));
      }
    }
  }
}
