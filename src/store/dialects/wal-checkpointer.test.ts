import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import SqliteDatabase from 'better-sqlite3';
import { waitFor } from '../../../test/helpers/server-process.js';
import { openDatabase, parseDatabaseSetting } from '../database.js';
import type { ActivationRow } from '../schema.js';

function row(i: number): ActivationRow {
  return {
    activation_id: `${Date.now().toString(16).padStart(12, '0')}${String(i).padStart(20, '0')}`,
    namespace: 'guest',
    name: 'hello',
    version: '0.0.1',
    subject: 'guest',
    state: 'done',
    accepted: 1_000 + i,
    start: 1_000 + i,
    end: 1_001 + i,
    duration: 1,
    status: 'success',
    success: 1,
    result: JSON.stringify({ greeting: 'x'.repeat(400) }),
    logs: '[]',
    annotations: '[]',
    params: null,
    attempts: 1,
  };
}

describe("SQLite's WAL checkpoints on a thread of their own", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'isola-wal-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('copies committed activations into the database file while the server connection no longer checkpoints, and keeps every row', async () => {
    const database = await openDatabase({ dataDir: dir });
    const parsed = parseDatabaseSetting({ dataDir: dir });
    assert.equal(parsed.dialect, 'sqlite');
    const file = parsed.dialect === 'sqlite' ? parsed.file : '';
    let written = 0;
    // Far below the 1000 pages at which SQLite's own connection would checkpoint: only the thread
    // makes the database file grow.
    const batch = () => database.writeActivations(Array.from({ length: 200 }, () => row(written++)));
    const probe = new SqliteDatabase(file, { readonly: true });
    try {
      for (const round of [1, 2]) {
        const size = statSync(file).size;
        batch();
        await waitFor(
          `the checkpoint thread to copy batch ${round} into the database file`,
          async () => (statSync(file).size > size + 50 * 1024 ? true : undefined),
          30_000,
        );
      }
      assert.equal((probe.prepare('select count(*) as n from activations').get() as { n: number }).n, written);
    } finally {
      probe.close();
    }
    await database.close();
    const reopened = new SqliteDatabase(file, { readonly: true });
    try {
      assert.equal((reopened.prepare('select count(*) as n from activations').get() as { n: number }).n, written);
    } finally {
      reopened.close();
    }
  });
});
