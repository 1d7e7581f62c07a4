import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { waitFor } from '../../../test/helpers/server-process.js';
import { type PeerServer, startStackFloor } from '../src/peers.js';

const GREET = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';

describe('the stack floor peer (bench:throughput)', () => {
  let workDir: string;
  let floor: PeerServer;

  before(async () => {
    workDir = mkdtempSync(join(tmpdir(), 'isola-stack-floor-'));
    floor = await startStackFloor({ code: GREET, params: { name: 'probe' } }, workDir, 10);
  });

  after(async () => {
    await floor?.stop();
    rmSync(workDir, { recursive: true, force: true });
  });

  it("answers with the function's result, run in its isolate", async () => {
    const response = await fetch(floor.url, { method: 'POST', body: '{"name":"Ada"}' });
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('content-type'), 'application/json');
    assert.deepEqual(await response.json(), { greeting: 'Hello Ada' });
  });

  it('commits a record of every call to its SQLite file, keyed in time order', async () => {
    for (const name of ['one', 'two', 'three']) {
      const response = await fetch(floor.url, { method: 'POST', body: JSON.stringify({ name }) });
      assert.equal(response.status, 200);
      await response.text();
    }
    const file = readdirSync(workDir).find((f) => f.startsWith('stack-floor-') && f.endsWith('.sqlite'));
    assert.ok(file, 'no database file in the work dir');
    const db = new Database(join(workDir, file), { readonly: true });
    try {
      // Committed within the window after the last answer.
      const rows = await waitFor(
        'the record of the last call',
        async () => {
          const stored = db.prepare('select id, result from records order by rowid').all() as { id: string; result: string }[];
          return stored.some((r) => r.result.includes('Hello three')) ? stored : undefined;
        },
        10_000,
      );
      const results = rows.map((r) => JSON.parse(r.result).greeting);
      for (const name of ['one', 'two', 'three']) assert.ok(results.includes(`Hello ${name}`), `no record of ${name}`);
      // The key starts with the time in ms (12 hex digits); calls in one ms share it.
      const ids = rows.map((r) => r.id);
      const times = ids.map((id) => id.slice(0, 12));
      assert.deepEqual([...times].sort(), times, 'keys are not in the order the calls were made');
      for (const id of ids) assert.match(id, /^[0-9a-f]{32}$/);
      assert.equal(new Set(ids).size, ids.length);
    } finally {
      db.close();
    }
  });
});
