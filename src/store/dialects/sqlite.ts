import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { lastPerActivation, upsertActivations } from '../activation-writer.js';
import type { StoreDatabase } from '../database.js';
import type { ActivationRow, Database } from '../schema.js';
import { type BoundRow, SqliteWriterThread } from './sqlite-writer.js';

/** The embedded database: a better-sqlite3 connection to the file in the data dir, and a second one on the writer thread (sqlite-writer.ts). */
export function openSqlite(file: string): StoreDatabase {
  const sqlite = new SqliteDatabase(file);
  // WAL with synchronous=NORMAL: a committed transaction survives the process being killed
  // (it is in the OS page cache); only a power loss can drop the last few.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
  // Prepared on first use: the table exists only once the migrations have run.
  let writer: ActivationBatchWriter | undefined;
  return {
    dialect: 'sqlite',
    db,
    location: file,
    writeActivations(rows) {
      writer ??= activationBatchWriter(db, sqlite, file);
      return writer.write(lastPerActivation(rows));
    },
    inTransaction: () => sqlite.inTransaction,
    lock: async () => {},
    close: async () => {
      await writer?.thread.stop();
      await db.destroy();
    },
  };
}

interface ActivationBatchWriter {
  thread: SqliteWriterThread;
  write(rows: readonly ActivationRow[]): Promise<void> | undefined;
}

/**
 * The group commit's batch on SQLite: Kysely's upsert compiled once, prepared once, run for each
 * row inside one transaction, on the writer thread (see SqliteWriterThread) or, until it runs,
 * on this connection. Going through the query layer for each row would cost more than the insert
 * itself on this path, which every invocation takes.
 */
function activationBatchWriter(db: Kysely<Database>, sqlite: SqliteDatabase.Database, file: string): ActivationBatchWriter {
  // Each value is its own column name, so the compiled parameters say which column goes where.
  const placeholder = Object.fromEntries(ROW_COLUMNS.map((c) => [c, c])) as unknown as ActivationRow;
  const compiled = upsertActivations(db, [placeholder]).compile();
  const order = compiled.parameters as readonly (keyof ActivationRow)[];
  if (order.length !== ROW_COLUMNS.length || !order.every((c) => ROW_COLUMNS.includes(c))) {
    throw new Error('The compiled activation upsert does not take one parameter per column.');
  }
  const statement = sqlite.prepare(compiled.sql);
  const writeHere = sqlite.transaction((rows: readonly BoundRow[]) => {
    for (const row of rows) statement.run(row);
  });
  // Started with the first batch: a store that never records an activation needs no thread.
  const thread = new SqliteWriterThread(sqlite, file, compiled.sql, writeHere);
  return {
    thread,
    write: (rows) => thread.write(rows.map((row) => order.map((c) => row[c]))),
  };
}

const ROW_COLUMNS: readonly (keyof ActivationRow)[] = [
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
];

const STATEMENT_CACHE_SIZE = 256;

/**
 * Kysely prepares every query it runs; preparing costs more than running a small statement.
 * Handing it a database whose prepare() reuses statements by SQL text makes repeated queries
 * (every invocation's insert, every action lookup) cheap. Its `begin` becomes `begin immediate`
 * on the way (see below).
 */
function withStatementCache(sqlite: SqliteDatabase.Database) {
  const cache = new Map<string, SqliteDatabase.Statement>();
  return {
    close: () => sqlite.close(),
    prepare(sql: string) {
      let statement = cache.get(sql);
      if (statement) {
        cache.delete(sql);
      } else {
        // Kysely's transactions begin deferred: one that reads and then writes fails at once with
        // SQLITE_BUSY when the writer thread committed in between (the snapshot it read is stale,
        // and waiting cannot help). IMMEDIATE takes the write lock first, waiting its turn.
        statement = sqlite.prepare(sql === 'begin' ? 'begin immediate' : sql);
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      }
      cache.set(sql, statement);
      return statement;
    },
  };
}
