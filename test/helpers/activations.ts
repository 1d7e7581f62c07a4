import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { databaseOf, type TestServer } from './server.js';

/** An activation's state in a data dir's database (queued, running, done), read directly; undefined when absent. */
export function activationState(dataDir: string, id: string): string | undefined {
  const db = new Database(join(dataDir, 'isola.db'), { readonly: true });
  try {
    return (db.prepare('select state from activations where activation_id = ?').get(id) as { state?: string } | undefined)?.state;
  } finally {
    db.close();
  }
}

/** An activation's state in a server's database, SQLite or PostgreSQL, read directly; undefined when absent. */
export async function storedActivationState(server: TestServer, id: string): Promise<string | undefined> {
  const url = databaseOf(server);
  if (!url) return activationState(server.dataDir, id);
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    const result = await client.query<{ state: string }>('select state from activations where activation_id = $1', [id]);
    return result.rows[0]?.state;
  } finally {
    await client.end();
  }
}
