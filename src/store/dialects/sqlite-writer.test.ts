import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Worker } from 'node:worker_threads';
import SqliteDatabase from 'better-sqlite3';
import { waitFor } from '../../../test/helpers/server-process.js';
import { openDatabase, parseDatabaseSetting, type StoreDatabase } from '../database.js';
import type { ActivationRow } from '../schema.js';
import { SqliteWriterThread } from './sqlite-writer.js';

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
    // Text that must reach the thread and the file as it is.
    result: JSON.stringify({ greeting: `${'x'.repeat(400)} s3;n d1; ${i};é€😀` }),
    logs: '[]',
    annotations: '[]',
    params: null,
    attempts: 1,
  };
}

/** Writes batches until one goes to the writer thread (the first ones are committed here while it starts). */
async function threadedBatch(database: StoreDatabase, batch: () => ActivationRow[]): Promise<void> {
  await waitFor(
    'the writer thread to take a batch',
    async () => {
      const committing = database.writeActivations(batch());
      if (!committing) return undefined;
      await committing;
      return true;
    },
    30_000,
  );
}

describe('SQLite: activation records committed on a thread of their own', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'isola-sqlite-writer-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('commits batches there, checkpoints the WAL there, and keeps every row', async () => {
    const database = await openDatabase({ dataDir: dir });
    const parsed = parseDatabaseSetting({ dataDir: dir });
    const file = parsed.dialect === 'sqlite' ? parsed.file : assert.fail('SQLite expected');
    let written = 0;
    const batch = () => Array.from({ length: 200 }, () => row(written++));
    await threadedBatch(database, batch);
    const probe = new SqliteDatabase(file, { readonly: true });
    const count = () => (probe.prepare('select count(*) as n from activations').get() as { n: number }).n;
    try {
      // A committed batch is seen by every connection as soon as its promise resolves.
      assert.equal(count(), written);
      // Far below the 1000 pages at which a connection checkpoints by itself: only the thread's
      // timer makes the database file grow.
      for (const round of [1, 2]) {
        const size = statSync(file).size;
        await database.writeActivations(batch());
        await waitFor(
          `the thread to copy batch ${round} into the database file`,
          async () => (statSync(file).size > size + 50 * 1024 ? true : undefined),
          30_000,
        );
      }
      assert.equal(count(), written);
      const last = probe.prepare('select * from activations order by seq desc limit 1').get();
      assert.deepEqual(last, {
        ...row(written - 1),
        seq: written,
        not_before: 0,
        activation_id: (last as ActivationRow).activation_id,
      });
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

  it("rejects a batch the database refuses with the database's error, and commits the next", async () => {
    const database = await openDatabase({ dataDir: mkdtempSync(join(dir, 'refused-')) });
    let written = 0;
    await threadedBatch(database, () => [row(written++)]);
    const refused = { ...row(written++), namespace: null as unknown as string };
    await assert.rejects(
      Promise.resolve(database.writeActivations([refused])),
      /NOT NULL constraint failed: activations\.namespace/,
    );
    await database.writeActivations([row(written++)]);
    const rows = await database.db.selectFrom('activations').select('activation_id').execute();
    assert.equal(rows.length, written - 1);
    await database.close();
  });

  it("begins the server connection's transactions holding the write lock, so that a commit of the thread between their read and their write cannot fail them", async () => {
    const dataDir = mkdtempSync(join(dir, 'immediate-'));
    const database = await openDatabase({ dataDir });
    const parsed = parseDatabaseSetting({ dataDir });
    const file = parsed.dialect === 'sqlite' ? parsed.file : assert.fail('SQLite expected');
    let written = 0;
    await threadedBatch(database, () => [row(written++)]);
    await database.db.transaction().execute(async (trx) => {
      await trx.selectFrom('activations').select('activation_id').execute();
      // Another writer (the thread, here a connection that does not wait) cannot commit now.
      const other = new SqliteDatabase(file);
      try {
        other.pragma('busy_timeout = 0');
        assert.throws(() => other.prepare("update activations set logs = '[]'").run(), /database is locked/);
      } finally {
        other.close();
      }
      await trx.updateTable('activations').set({ logs: '["x"]' }).execute();
    });
    const logs = await database.db.selectFrom('activations').select('logs').execute();
    assert.deepEqual(new Set(logs.map((l) => l.logs)), new Set(['["x"]']));
    await database.close();
  });

  it('writes on the server connection a batch the thread had not confirmed when it ended, and every later one', async () => {
    const file = join(mkdtempSync(join(dir, 'ended-')), 'ended.db');
    const sqlite = new SqliteDatabase(file);
    sqlite.pragma('journal_mode = WAL');
    sqlite.exec('create table t (id text primary key, v text not null)');
    const sql = 'insert into t (id, v) values (?, ?) on conflict (id) do nothing';
    const insert = sqlite.prepare(sql);
    const writeHere = sqlite.transaction((rows: readonly unknown[][]) => {
      for (const row of rows) insert.run(row);
    });
    const thread = new SqliteWriterThread(sqlite, file, sql, writeHere);
    let n = 0;
    await waitFor(
      'the thread to take a batch',
      async () => {
        const committing = thread.write([[`a${n++}`, 'x']]);
        if (!committing) return undefined;
        await committing;
        return true;
      },
      30_000,
    );
    assert.equal(sqlite.pragma('wal_autocheckpoint', { simple: true }), 0, 'the thread checkpoints');
    const handed = thread.write([['handed', 'y']]);
    assert.ok(handed, 'the batch went to the thread');
    // Ended as a crash would end it, with the batch perhaps not committed.
    await (thread as unknown as { worker: Worker }).worker.terminate();
    await handed;
    assert.equal(thread.write([['after', 'z']]), undefined, 'committed here, at once');
    const ids = new Set((sqlite.prepare('select id from t').all() as { id: string }[]).map((r) => r.id));
    assert.ok(ids.has('handed') && ids.has('after'));
    assert.equal(ids.size, n + 2);
    assert.equal(sqlite.pragma('wal_autocheckpoint', { simple: true }), 1000, 'the server connection checkpoints again');
    await thread.stop();
    sqlite.close();
  });
});
