import { join } from 'node:path';
import Database from 'better-sqlite3';

/** An activation's state in a data dir's database (queued, running, done), read directly; undefined when absent. */
export function activationState(dataDir: string, id: string): string | undefined {
  const db = new Database(join(dataDir, 'isola.db'), { readonly: true });
  try {
    return (db.prepare('select state from activations where activation_id = ?').get(id) as { state?: string } | undefined)?.state;
  } finally {
    db.close();
  }
}
