import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { type Kysely, Migrator } from 'kysely';
import { migrationProvider } from './migrations.js';
import type { ActivationRow, Database } from './schema.js';

export type DialectName = 'sqlite' | 'postgres';

export const SQLITE_FILE = 'isola.db';

/**
 * The query layer under the repositories: one Kysely instance on SQLite or PostgreSQL, plus the
 * few things the two do differently.
 */
export interface StoreDatabase {
  readonly dialect: DialectName;
  readonly db: Kysely<Database>;
  /** Where the data is, for messages: a file, or the URL without its password. */
  readonly location: string;
  /** Writes a batch of finished activations in one transaction. Synchronous on SQLite. */
  writeActivations(rows: readonly ActivationRow[]): undefined | Promise<void>;
  /**
   * Whether a transaction of the query layer is open on the one SQLite connection: a batch
   * written now would become part of it (and go if it rolls back). Always false on PostgreSQL.
   */
  inTransaction(): boolean;
  /**
   * Serialises the transactions that read a key and then write it (version numbers, "already
   * exists" checks) until `trx` ends. PostgreSQL: a transaction-scoped advisory lock; SQLite
   * runs one write transaction at a time already.
   */
  lock(trx: Kysely<Database>, key: string): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseSetting {
  dataDir: string;
  /** `postgres://...`; `sqlite:<file>`; the SQLite file in the data dir when absent. */
  databaseUrl?: string;
}

export type ParsedSetting = { dialect: 'sqlite'; file: string } | { dialect: 'postgres'; url: string };

export function parseDatabaseSetting(setting: DatabaseSetting): ParsedSetting {
  const url = setting.databaseUrl?.trim();
  if (!url) return { dialect: 'sqlite', file: join(setting.dataDir, SQLITE_FILE) };
  if (/^postgres(ql)?:\/\//.test(url)) return { dialect: 'postgres', url };
  if (url.startsWith('sqlite:')) return { dialect: 'sqlite', file: url.replace(/^sqlite:(\/\/)?/, '') };
  throw new Error(
    `Unsupported database URL "${redactPassword(url)}": use postgres://user@host:port/database for PostgreSQL, ` +
      'or leave --database unset to use the SQLite file in the data directory.',
  );
}

/** The URL with its password, if any, replaced by ***. */
export function redactPassword(url: string): string {
  return url.replace(/^([a-z]+:\/\/[^:/@]*):[^@]*@/i, '$1:***@');
}

/** Opens the database and brings its schema up to date. */
export async function openDatabase(setting: DatabaseSetting): Promise<StoreDatabase> {
  const database = await connectDatabase(setting);
  await migrateDatabase(database);
  return database;
}

/** Opens the database as it is, without migrating it. */
export async function connectDatabase(setting: DatabaseSetting): Promise<StoreDatabase> {
  const parsed = parseDatabaseSetting(setting);
  if (parsed.dialect === 'sqlite') {
    mkdirSync(setting.dataDir, { recursive: true });
    const { openSqlite } = await import('./dialects/sqlite.js');
    return openSqlite(parsed.file);
  }
  // Loaded only when used: a SQLite install never loads the pg driver.
  const { openPostgres } = await import('./dialects/postgres.js');
  return openPostgres(parsed.url);
}

/** Runs the migrations not run yet; closes the database and throws when one fails. */
export async function migrateDatabase(database: StoreDatabase): Promise<void> {
  // Unordered: migrations written side by side may land in another order than their names.
  const migrator = new Migrator({
    db: database.db,
    provider: migrationProvider(database.dialect),
    allowUnorderedMigrations: true,
  });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    await database.close();
    throw new Error(`Database migration ${failed?.migrationName ?? ''} failed on ${database.location}: ${String(error)}`);
  }
}
