import { join } from 'node:path';
import SqliteDatabase from 'better-sqlite3';
import { processStartTime } from '../sandbox/sweep.js';
import { readServerInfo, type ServerInfo } from './credentials.js';

export const LOCK_FILE = 'server.lock';

export { processStartTime };

/** The server that server.json names, if that very process (same pid, same start time) still runs. */
export function liveServer(dataDir: string): ServerInfo | undefined {
  const info = readServerInfo(dataDir);
  if (!info || !Number.isInteger(info.pid)) return undefined;
  const started = processStartTime(info.pid);
  return started !== undefined && started === info.startTime ? info : undefined;
}

export class DataDirBusyError extends Error {
  constructor(
    readonly dataDir: string,
    readonly owner: ServerInfo | undefined,
  ) {
    super(
      owner
        ? `Another Isola server (pid ${owner.pid}, ${owner.url ? `listening on ${owner.url}` : 'still starting'}) is using the data dir ${dataDir}. ` +
            'Stop it first, or give this one another --data-dir.'
        : `The data dir ${dataDir} is in use by another Isola process (not a server: an \`isola namespace\` command, say). Try again in a moment.`,
    );
  }
}

/**
 * The data dir's lock: one server (or one command working on the store directly) at a time. It
 * is a lock the kernel holds for the process (an exclusive SQLite transaction on
 * `<data dir>/server.lock`, that is an fcntl lock), so it goes with the process however that
 * ends, kill -9 included, and is never taken over while its owner lives: no stale lock to
 * detect, and no pid to mistake for a reused one. Who holds it is written to server.json.
 */
export class DataDirLock {
  private constructor(private readonly db: SqliteDatabase.Database) {}

  /** Takes the lock, waiting at most `waitMs` for a holder that lets it go; throws DataDirBusyError. */
  static acquire(dataDir: string, waitMs = 0): DataDirLock {
    const db = new SqliteDatabase(join(dataDir, LOCK_FILE), { timeout: waitMs });
    try {
      // Nothing is ever written to it: no journal, and the lock is held until released.
      db.pragma('journal_mode = MEMORY');
      db.pragma('locking_mode = EXCLUSIVE');
      db.exec('BEGIN EXCLUSIVE');
      return new DataDirLock(db);
    } catch (error) {
      db.close();
      if ((error as { code?: string }).code === 'SQLITE_BUSY') throw new DataDirBusyError(dataDir, liveServer(dataDir));
      throw error;
    }
  }

  /** Takes the lock if it is free, without waiting; undefined when someone holds it. */
  static tryAcquire(dataDir: string): DataDirLock | undefined {
    try {
      return DataDirLock.acquire(dataDir, 0);
    } catch (error) {
      if (error instanceof DataDirBusyError) return undefined;
      throw error;
    }
  }

  release(): void {
    if (!this.db.open) return;
    this.db.exec('ROLLBACK');
    this.db.close();
  }
}
