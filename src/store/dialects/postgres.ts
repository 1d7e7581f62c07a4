import { type CompiledQuery, Kysely, PostgresDialect, type QueryResult, sql } from 'kysely';
import pg from 'pg';
import { badRequest, unavailable } from '../../core/errors.js';
import { lastPerActivation, upsertActivations } from '../activation-writer.js';
import { redactPassword, type StoreDatabase } from '../database.js';
import type { Database } from '../schema.js';

/** Rows per insert: 17 parameters each stays well under PostgreSQL's 65535 per statement. */
const ROWS_PER_INSERT = 1000;

/** PostgreSQL, for several servers sharing one database. */
export async function openPostgres(url: string): Promise<StoreDatabase> {
  const location = redactPassword(url);
  const pool = new pg.Pool({
    connectionString: url,
    max: 10,
    // Times and sizes are bigint columns: read them as numbers, as SQLite gives them (ms since
    // the epoch stays exact far beyond any date stored here).
    types: {
      getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
        oid === pg.types.builtins.INT8 ? Number : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  });
  // An idle connection that breaks (the server restarted) is dropped by the pool and the next
  // query opens a new one; without a listener the error would end the process.
  pool.on('error', () => {});
  try {
    const client = await pool.connect();
    client.release();
  } catch (error) {
    await pool.end();
    throw new Error(`Cannot reach the database at ${location}: ${error instanceof Error ? error.message : String(error)}`);
  }
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({
      // A server that is down or restarting is the platform's trouble of the moment, not a bug: 503.
      pool: {
        connect: () => pool.connect().catch((error: unknown) => Promise.reject(asUnreachable(error))),
        end: () => pool.end(),
      },
      onCreateConnection: async (connection) => {
        const execute = connection.executeQuery.bind(connection);
        connection.executeQuery = <R>(query: CompiledQuery) =>
          (holdsNul(query) ? withoutNul<R>(query) : execute<R>(query)).catch((error: unknown) =>
            Promise.reject(asUnreachable(error)),
          );
      },
    }),
  });
  return {
    dialect: 'postgres',
    db,
    location,
    async writeActivations(rows) {
      const unique = lastPerActivation(rows);
      if (unique.length <= ROWS_PER_INSERT) {
        await upsertActivations(db, unique).execute();
        return;
      }
      await db.transaction().execute(async (trx) => {
        for (let i = 0; i < unique.length; i += ROWS_PER_INSERT)
          await upsertActivations(trx, unique.slice(i, i + ROWS_PER_INSERT)).execute();
      });
    },
    inTransaction: () => false,
    async lock(trx, key) {
      // Without NUL characters, which PostgreSQL refuses (two keys that then meet only take turns).
      await sql`select pg_advisory_xact_lock(hashtextextended(${key.replaceAll('\0', '')}, 0))`.execute(trx);
    },
    close: () => db.destroy(),
  };
}

/**
 * Node's codes for a server that cannot be reached, and PostgreSQL's for one that is shutting
 * down, crashed or still starting (class 08 is "connection exception").
 */
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  '57P01',
  '57P02',
  '57P03',
]);

/**
 * A failure because the database cannot be reached now (down, restarting, the network cut)
 * becomes a 503 that says so; any other error is returned as it is. pg reports a connection
 * lost mid-query without a code, by its message.
 */
function asUnreachable(error: unknown): unknown {
  const code = (error as { code?: unknown } | null)?.code;
  const lost =
    (typeof code === 'string' && (UNREACHABLE_CODES.has(code) || code.startsWith('08'))) ||
    (error instanceof Error && /^Connection terminated|connection error and is not queryable/i.test(error.message));
  if (!lost) return error;
  return unavailable(`The database is unreachable now${typeof code === 'string' ? ` (${code})` : ''}; try again shortly.`);
}

/**
 * PostgreSQL's text cannot hold a NUL character (SQLite's can) and refuses a query that carries
 * one. No stored name holds one, then: a lookup by such a name (from a URL, say) finds nothing,
 * as on SQLite, rather than failing; storing such text is the caller's error.
 */
function holdsNul(query: CompiledQuery): boolean {
  return query.parameters.some((p) => typeof p === 'string' && p.includes('\0'));
}

async function withoutNul<R>(query: CompiledQuery): Promise<QueryResult<R>> {
  const kind = query.query.kind;
  if (kind === 'SelectQueryNode') return { rows: [] };
  if (kind === 'UpdateQueryNode' || kind === 'DeleteQueryNode') return { rows: [], numAffectedRows: 0n };
  // Only what a caller sent can hold one (names are checked at the doors; code is not).
  throw badRequest('Text with a NUL character (U+0000) cannot be stored: this server keeps its data in PostgreSQL.');
}
