import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type SqliteDatabase from 'better-sqlite3';

/** How often the thread copies what the WAL holds into the database file. */
const CHECKPOINT_INTERVAL_MS = 200;
/** SQLite's own default: what the server's connection goes back to when the thread is gone. */
const DEFAULT_AUTOCHECKPOINT_PAGES = 1000;

// Plain JavaScript run by the thread: its own connection to the file, checkpointing on a timer.
// PASSIVE never waits for the server's connection and never blocks it; with nothing new in the
// WAL it costs a look at the shared index. A failed checkpoint is tried again at the next tick.
const THREAD_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const Database = require(workerData.driver);
const db = new Database(workerData.file);
db.pragma('synchronous = NORMAL');
db.pragma('busy_timeout = 0');
setInterval(() => {
  try {
    db.pragma('wal_checkpoint(PASSIVE)');
  } catch {}
}, workerData.intervalMs);
parentPort.postMessage('ready');
`;

/**
 * Moves SQLite's WAL checkpoints off the server's thread. By default the connection that commits
 * copies the WAL back into the database file (and syncs it) every 1000 pages, inside a commit:
 * on the server's thread that is about a third of the cost of storing an activation. A thread
 * with a connection of its own does it instead, every CHECKPOINT_INTERVAL_MS; once it runs, the
 * server's connection stops checkpointing, and starts again if the thread ends. What a commit
 * makes durable does not change: a committed transaction is in the WAL either way.
 */
export class WalCheckpointer {
  private worker: Worker | undefined;
  private stopped = false;

  constructor(
    private readonly sqlite: SqliteDatabase.Database,
    private readonly file: string,
  ) {}

  /** Starts the thread (once); the server's connection hands over when the thread is ready. */
  start(): void {
    if (this.worker || this.stopped) return;
    const worker = new Worker(THREAD_SOURCE, {
      eval: true,
      workerData: {
        driver: createRequire(import.meta.url).resolve('better-sqlite3'),
        file: this.file,
        intervalMs: CHECKPOINT_INTERVAL_MS,
      },
      stdout: true,
      stderr: true,
    });
    // It must not keep a process alive that has nothing else to do.
    worker.unref();
    worker.once('message', () => {
      if (this.worker === worker && this.sqlite.open) this.sqlite.pragma('wal_autocheckpoint = 0');
    });
    // A thread that failed (it could not open the file, say) leaves checkpoints to the server's connection.
    worker.on('error', () => {});
    worker.once('exit', () => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      if (this.sqlite.open) this.sqlite.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
    });
    this.worker = worker;
  }

  /** Ends the thread before the server's connection closes (which then checkpoints what is left). */
  async stop(): Promise<void> {
    this.stopped = true;
    const worker = this.worker;
    this.worker = undefined;
    if (worker) await worker.terminate();
    if (this.sqlite.open) this.sqlite.pragma(`wal_autocheckpoint = ${DEFAULT_AUTOCHECKPOINT_PAGES}`);
  }

  /** Whether the thread checkpoints now (for tests). */
  get running(): boolean {
    return this.worker !== undefined;
  }
}
