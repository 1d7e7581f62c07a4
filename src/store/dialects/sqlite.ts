import SqliteDatabase from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import { lastPerActivation, upsertActivations } from '../activation-writer.js';
import type { StoreDatabase } from '../database.js';
import type { ActivationRow, Database } from '../schema.js';
import { WalCheckpointer } from './wal-checkpointer.js';

/** The embedded database: one better-sqlite3 connection in the data dir. */
export function openSqlite(file: string): StoreDatabase {
  const sqlite = new SqliteDatabase(file);
  // WAL with synchronous=NORMAL: a committed transaction survives the process being killed
  // (it is in the OS page cache); only a power loss can drop the last few.
  sqlite.pragma('journal_mode = WAL');
  sqlite.pragma('synchronous = NORMAL');
  sqlite.pragma('busy_timeout = 5000');
  const db = new Kysely<Database>({ dialect: new SqliteDialect({ database: withStatementCache(sqlite) }) });
  // Prepared on first use: the table exists only once the migrations have run.
  let writeBatch: ((rows: readonly ActivationRow[]) => void) | undefined;
  // Started with the first activations stored: a store that never records any needs no thread.
  const checkpointer = new WalCheckpointer(sqlite, file);
  return {
    dialect: 'sqlite',
    db,
    location: file,
    writeActivations(rows) {
      writeBatch ??= activationBatchWriter(db, sqlite);
      writeBatch(lastPerActivation(rows));
      checkpointer.start();
      return undefined;
    },
    inTransaction: () => sqlite.inTransaction,
    lock: async () => {},
    close: async () => {
      await checkpointer.stop();
      await db.destroy();
    },
  };
}

/**
 * The group commit's batch on SQLite: Kysely's upsert compiled once, prepared once, run for each
 * row inside one synchronous transaction. Going through the query layer for each row would cost
 * more than the insert itself on this path, which every invocation takes.
 */
function activationBatchWriter(db: Kysely<Database>, sqlite: SqliteDatabase.Database) {
  // Each value is its own column name, so the compiled parameters say which column goes where.
  const placeholder = Object.fromEntries(ROW_COLUMNS.map((c) => [c, c])) as unknown as ActivationRow;
  const compiled = upsertActivations(db, [placeholder]).compile();
  const order = compiled.parameters as readonly (keyof ActivationRow)[];
  if (order.length !== ROW_COLUMNS.length || !order.every((c) => ROW_COLUMNS.includes(c))) {
    throw new Error('The compiled activation upsert does not take one parameter per column.');
  }
  const statement = sqlite.prepare(compiled.sql);
  return sqlite.transaction((rows: readonly ActivationRow[]) => {
    for (const row of rows) statement.run(order.map((c) => row[c]));
  });
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
 * (every invocation's insert, every action lookup) cheap.
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
        statement = sqlite.prepare(sql);
        if (cache.size >= STATEMENT_CACHE_SIZE) cache.delete(cache.keys().next().value as string);
      }
      cache.set(sql, statement);
      return statement;
    },
  };
}
