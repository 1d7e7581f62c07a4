import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Kysely, Migrator } from 'kysely';
import { sharedPostgres, stopSharedPostgres } from '../../test/helpers/postgres.js';
import { waitFor } from '../../test/helpers/server-process.js';
import { IsolaError } from '../core/errors.js';
import { DEFAULT_LIMITS } from '../core/limits.js';
import { type ActionVersion, type ActivationRecord, SEQUENCE_EXEC } from '../core/types.js';
import { connectDatabase, parseDatabaseSetting, SQLITE_FILE } from './database.js';
import { migrationProvider } from './migrations.js';
import { ActivationRetention } from './retention.js';
import { type AliasTarget, type PackageRecord, Store, type StoreOptions } from './store.js';

/** Each suite below runs on both: the embedded SQLite file and a private PostgreSQL. */
const DATABASES: { name: string; setting: (dataDir: string) => Promise<StoreOptions> }[] = [
  { name: 'SQLite', setting: async (dataDir) => ({ dataDir }) },
  {
    name: 'PostgreSQL',
    setting: async (dataDir) => ({ dataDir, databaseUrl: await (await sharedPostgres()).createDatabase('store') }),
  },
];

after(() => stopSharedPostgres());

const isConflict = (error: unknown) => error instanceof IsolaError && error.status === 409;

function action(
  namespace: string,
  name: string,
  code = 'function main() { return {}; }',
): Omit<ActionVersion, 'version' | 'revision' | 'updated'> {
  return {
    namespace,
    name,
    exec: { kind: 'nodejs:20', code, binary: false },
    limits: DEFAULT_LIMITS,
    parameters: [{ key: 'greeting', value: 'hello' }],
    annotations: [{ key: 'web-export', value: true }],
    isolation: 'isolate',
  };
}

let sequence = 0;
function activationId(): string {
  return `${(sequence++).toString(16).padStart(12, '0')}${'0'.repeat(20)}`;
}

function finished(namespace: string, name: string, id: string, start: number, result: unknown = { ok: true }): ActivationRecord {
  return {
    activationId: id,
    namespace,
    name,
    version: '0.0.1',
    subject: namespace,
    start,
    end: start + 5,
    duration: 5,
    response: { status: 'success', success: true, result },
    logs: ['line one', 'line two'],
    annotations: [{ key: 'kind', value: 'nodejs:20' }],
    publish: false,
  };
}

function queued(namespace: string, name: string, id: string, accepted = Date.now()) {
  return {
    activationId: id,
    namespace,
    name,
    version: '0.0.1',
    subject: namespace,
    accepted,
    params: { job: id },
    annotations: [{ key: 'path', value: `${namespace}/${name}` }],
  };
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Waits for the clock to move past `ms`, so that what comes next gets a later time. */
async function clockPast(ms: number): Promise<void> {
  while (Date.now() <= ms) await nextTurn();
}

describe('the database setting', () => {
  it('is the SQLite file in the data dir when unset, and PostgreSQL for a postgres:// URL', () => {
    assert.deepEqual(parseDatabaseSetting({ dataDir: '/d' }), { dialect: 'sqlite', file: join('/d', SQLITE_FILE) });
    assert.deepEqual(parseDatabaseSetting({ dataDir: '/d', databaseUrl: 'sqlite:/elsewhere/x.db' }), {
      dialect: 'sqlite',
      file: '/elsewhere/x.db',
    });
    for (const url of ['postgres://u@h:5432/db', 'postgresql://u:p@h/db'])
      assert.deepEqual(parseDatabaseSetting({ dataDir: '/d', databaseUrl: url }), { dialect: 'postgres', url });
  });

  it('refuses another kind of URL, and never repeats a password', async () => {
    assert.throws(
      () => parseDatabaseSetting({ dataDir: '/d', databaseUrl: 'mysql://me:hunter2@h/db' }),
      (error: Error) =>
        /Unsupported database URL "mysql:\/\/me:\*\*\*@h\/db"/.test(error.message) && !error.message.includes('hunter2'),
    );
    // Nothing listens on port 1.
    await assert.rejects(
      Store.open({ dataDir: '/nonexistent', databaseUrl: 'postgres://me:hunter2@127.0.0.1:1/db' }),
      (error: Error) =>
        /^Cannot reach the database at postgres:\/\/me:\*\*\*@127\.0\.0\.1:1\/db/.test(error.message) &&
        !error.message.includes('hunter2'),
    );
  });
});

for (const database of DATABASES) {
  describe(`store on ${database.name}`, () => {
    let dataDir: string;
    let setting: StoreOptions;
    let store: Store;
    before(async () => {
      dataDir = mkdtempSync(join(tmpdir(), 'isola-store-'));
      setting = await database.setting(dataDir);
      store = await Store.open(setting);
    });
    after(async () => {
      await store.close();
      rmSync(dataDir, { recursive: true, force: true });
    });

    describe('migrations', () => {
      it('bring an empty database to the latest schema, and a second open changes nothing', async () => {
        assert.equal(store.dialect, database.name === 'SQLite' ? 'sqlite' : 'postgres');
        const applied = await new Migrator({ db: store.db, provider: migrationProvider(store.dialect) }).getMigrations();
        assert.deepEqual(
          applied.map((m) => [m.name, m.executedAt !== undefined]),
          [
            ['0001_initial', true],
            ['0002_retries_triggers_rules', true],
            ['0003_revisions_and_version_counters', true],
            ['0004_packages', true],
            ['0005_lambda_aliases', true],
            ['0006_api_routes', true],
            ['0007_provisioned_instances', true],
            ['0008_ui_sessions', true],
          ],
        );
        const again = await Store.open(setting);
        try {
          const reapplied = await new Migrator({ db: again.db, provider: migrationProvider(again.dialect) }).getMigrations();
          assert.deepEqual(
            reapplied.map((m) => m.executedAt?.getTime()),
            applied.map((m) => m.executedAt?.getTime()),
          );
        } finally {
          await again.close();
        }
      });

      it('carry data from the first schema over: revisions and version counters are filled in', async () => {
        const dir = mkdtempSync(join(tmpdir(), 'isola-store-old-'));
        const old = await database.setting(dir);
        const first = await connectDatabase(old);
        try {
          const migrator = new Migrator({ db: first.db, provider: migrationProvider(first.dialect) });
          const { error } = await migrator.migrateTo('0001_initial');
          assert.equal(error, undefined);
          // Rows as the first schema had them (no revision column yet).
          const legacy = first.db as unknown as Kysely<Record<string, Record<string, unknown>>>;
          for (const version of ['0.0.1', '0.0.2']) {
            await legacy
              .insertInto('action_versions')
              .values({
                namespace: 'old',
                name: 'f',
                version,
                kind: 'nodejs:20',
                code: 'function main() {}',
                binary: 0,
                main: null,
                limits: JSON.stringify(DEFAULT_LIMITS),
                parameters: '[]',
                annotations: '[]',
                isolation: 'isolate',
                created: 1,
              })
              .execute();
          }
          await legacy
            .insertInto('actions')
            .values({ namespace: 'old', name: 'f', latest_version: '0.0.2', created: 1, updated: 1 })
            .execute();
        } finally {
          await first.close();
        }
        const upgraded = await Store.open(old);
        try {
          const versions = await upgraded.listVersions('old', 'f');
          assert.deepEqual(
            versions.map((v) => v.version),
            ['0.0.2', '0.0.1'],
          );
          for (const v of versions) assert.match(v.revision, /^[0-9a-f]{16}$/);
          assert.notEqual(versions[0]?.revision, versions[1]?.revision);
          // The counter was filled in from the highest version: the next one follows it.
          assert.equal((await upgraded.putAction(action('old', 'f'), { overwrite: true })).version, '0.0.3');
        } finally {
          await upgraded.close();
          rmSync(dir, { recursive: true, force: true });
        }
      });
    });

    describe('namespaces', () => {
      it('are created once, listed in byte order and found by name', async () => {
        const created = await store.createNamespace('ns-b', 'uuid-b', 'key-b');
        assert.equal(created.name, 'ns-b');
        assert.equal(typeof created.created, 'number');
        await store.createNamespace('ns-B', 'uuid-B', 'key-B');
        await store.createNamespace('ns-a', 'uuid-a', 'key-a');
        await assert.rejects(store.createNamespace('ns-a', 'uuid-a2', 'key'), isConflict);
        const names = (await store.listNamespaces()).map((n) => n.name).filter((n) => n.startsWith('ns-'));
        assert.deepEqual(names, ['ns-B', 'ns-a', 'ns-b']);
        const found = await store.getNamespace('ns-b');
        assert.deepEqual(found, { name: 'ns-b', uuid: 'uuid-b', created: created.created });
        assert.equal(await store.getNamespace('ns-none'), undefined);
      });

      it('authenticate by uuid and key, and give the key for signatures', async () => {
        await store.createNamespace('auth', 'uuid-auth', 'secret');
        assert.equal(await store.authenticate('uuid-auth', 'secret'), 'auth');
        assert.equal(await store.authenticate('uuid-auth', 'wrong'), undefined);
        assert.equal(await store.authenticate('uuid-auth', 'secret-but-longer'), undefined);
        assert.equal(await store.authenticate('uuid-nobody', 'secret'), undefined);
        assert.deepEqual(await store.keyOf('uuid-auth'), { namespace: 'auth', key: 'secret' });
        assert.equal(await store.keyOf('uuid-nobody'), undefined);
      });

      it('get new credentials, or are created by setting them', async () => {
        await store.setNamespaceCredentials('creds', 'uuid-1', 'key-1');
        assert.equal(await store.authenticate('uuid-1', 'key-1'), 'creds');
        await store.setNamespaceCredentials('creds', 'uuid-2', 'key-2');
        assert.equal(await store.authenticate('uuid-1', 'key-1'), undefined);
        assert.equal(await store.authenticate('uuid-2', 'key-2'), 'creds');
        assert.equal((await store.listNamespaces()).filter((n) => n.name === 'creds').length, 1);
        // Setting them many times at once leaves one namespace with one of the keys.
        await Promise.all(Array.from({ length: 8 }, (_, i) => store.setNamespaceCredentials('creds', 'uuid-3', `key-${i}`)));
        assert.equal((await store.listNamespaces()).filter((n) => n.name === 'creds').length, 1);
        assert.match((await store.keyOf('uuid-3'))?.key ?? '', /^key-\d$/);
      });

      it('are created by exactly one of many concurrent creations', async () => {
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, i) => store.createNamespace('racing', `uuid-racing-${i}`, 'key')),
        );
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
        for (const r of results) if (r.status === 'rejected') assert.ok(isConflict(r.reason), String(r.reason));
      });
    });

    describe('actions and versions', () => {
      it('store immutable versions, each numbered after the last, with all their fields', async () => {
        const first = await store.putAction(
          { ...action('acts', 'hello'), exec: { ...action('acts', 'hello').exec, main: 'run' } },
          { overwrite: false },
        );
        assert.equal(first.version, '0.0.1');
        assert.match(first.revision, /^[0-9a-f]{16}$/);
        await assert.rejects(store.putAction(action('acts', 'hello'), { overwrite: false }), isConflict);
        const second = await store.putAction(
          {
            ...action('acts', 'hello', 'binary-zip'),
            exec: { kind: 'nodejs:20', code: 'UEsDBA==', binary: true },
            isolation: 'process',
          },
          { overwrite: true },
        );
        assert.equal(second.version, '0.0.2');
        assert.notEqual(second.revision, first.revision);
        assert.deepEqual(await store.getAction('acts', 'hello'), second);
        assert.deepEqual(await store.getAction('acts', 'hello', '0.0.1'), first);
        assert.equal((await store.getAction('acts', 'hello', '0.0.1'))?.exec.main, 'run');
        assert.equal(await store.getAction('acts', 'hello', '0.0.9'), undefined);
        assert.equal(await store.getAction('acts', 'nothing'), undefined);
        assert.deepEqual(await store.listVersions('acts', 'hello'), [second, first]);
      });

      it("keep a sequence's components, and a code version over it drops them", async () => {
        const components = ['/seqs/a', '/seqs/b'];
        const seq = await store.putAction(
          { ...action('seqs', 'chain'), exec: SEQUENCE_EXEC, sequence: components },
          { overwrite: false },
        );
        assert.deepEqual(seq.sequence, components);
        const read = await store.getAction('seqs', 'chain');
        assert.deepEqual(read, seq);
        assert.deepEqual(read?.exec, SEQUENCE_EXEC);
        const code = await store.putAction(action('seqs', 'chain'), { overwrite: true });
        assert.equal((await store.getAction('seqs', 'chain'))?.sequence, undefined);
        assert.deepEqual(await store.listVersions('seqs', 'chain'), [code, seq]);
      });

      it('are listed latest version only, most recently updated first, a page at a time', async () => {
        for (const name of ['l1', 'l2', 'l3']) {
          await store.putAction(action('list', name), { overwrite: false });
          // Distinct update times, so that the order is the update order.
          await clockPast(Date.now());
        }
        await store.putAction(action('list', 'l1'), { overwrite: true });
        const all = await store.listActions('list', { limit: 10, skip: 0 });
        assert.deepEqual(
          all.map((a) => [a.name, a.version]),
          [
            ['l1', '0.0.2'],
            ['l3', '0.0.1'],
            ['l2', '0.0.1'],
          ],
        );
        const page = await store.listActions('list', { limit: 1, skip: 1 });
        assert.deepEqual(
          page.map((a) => a.name),
          ['l3'],
        );
        assert.deepEqual(await store.actionNames('list'), ['l1', 'l2', 'l3']);
        const everywhere = await store.allActions();
        assert.ok(everywhere.some((a) => a.namespace === 'list' && a.name === 'l1' && a.version === '0.0.2'));
        assert.ok(everywhere.some((a) => a.namespace === 'acts' && a.name === 'hello'));
        assert.equal(everywhere.filter((a) => a.namespace === 'list').length, 3);
      });

      it('go with their versions when deleted, and a re-created action continues the numbering', async () => {
        await store.putAction(action('del', 'f'), { overwrite: false });
        const latest = await store.putAction(action('del', 'f'), { overwrite: true });
        assert.deepEqual(await store.deleteAction('del', 'f'), latest);
        assert.equal(await store.getAction('del', 'f'), undefined);
        assert.deepEqual(await store.listVersions('del', 'f'), []);
        assert.equal(await store.deleteAction('del', 'f'), undefined);
        assert.equal((await store.putAction(action('del', 'f'), { overwrite: false })).version, '0.0.3');
      });

      it('keep a provisioned count set by scaling without a new version, until cleared or deleted', async () => {
        const stored = await store.putAction(action('scale', 'f'), { overwrite: false });
        assert.deepEqual(await store.provisionedInstances().then((all) => all.filter((p) => p.namespace === 'scale')), []);
        assert.equal(await store.setProvisionedInstances('scale', 'f', 3), true);
        assert.equal(await store.setProvisionedInstances('scale', 'missing', 3), false);
        assert.deepEqual((await store.getAction('scale', 'f'))?.version, stored.version, 'no new version');
        const counts = async () => (await store.provisionedInstances()).filter((p) => p.namespace === 'scale');
        assert.deepEqual(await counts(), [{ namespace: 'scale', name: 'f', count: 3 }]);
        // A new version keeps the function's count.
        await store.putAction(action('scale', 'f', '// v2'), { overwrite: true });
        assert.deepEqual(await counts(), [{ namespace: 'scale', name: 'f', count: 3 }]);
        assert.equal(await store.setProvisionedInstances('scale', 'f', 0), true);
        assert.deepEqual(await counts(), [{ namespace: 'scale', name: 'f', count: 0 }]);
        assert.equal(await store.setProvisionedInstances('scale', 'f', null), true);
        assert.deepEqual(await counts(), []);
        await store.setProvisionedInstances('scale', 'f', 2);
        await store.deleteAction('scale', 'f');
        await store.putAction(action('scale', 'f'), { overwrite: false });
        assert.deepEqual(await counts(), [], 'a re-created action starts without one');
      });

      it('get distinct version numbers when updated concurrently', async () => {
        const count = 16;
        const stored = await Promise.all(
          Array.from({ length: count }, (_, i) => store.putAction(action('race', 'f', `// ${i}`), { overwrite: true })),
        );
        const numbers = stored.map((v) => Number(v.version.split('.')[2])).sort((a, b) => a - b);
        assert.deepEqual(
          numbers,
          Array.from({ length: count }, (_, i) => i + 1),
        );
        assert.equal(new Set(stored.map((v) => v.revision)).size, count);
        assert.equal((await store.listVersions('race', 'f')).length, count);
        assert.equal((await store.getAction('race', 'f'))?.version, `0.0.${count}`);
      });

      it('are created by exactly one of many concurrent creations without overwrite', async () => {
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, () => store.putAction(action('race', 'once'), { overwrite: false })),
        );
        assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
        for (const r of results) if (r.status === 'rejected') assert.ok(isConflict(r.reason), String(r.reason));
        assert.deepEqual(
          (await store.listVersions('race', 'once')).map((v) => v.version),
          ['0.0.1'],
        );
      });
    });

    describe('aliases', () => {
      const target = (functionVersion: string, routing: Record<string, number> = {}, description = '') => ({
        functionVersion,
        routing,
        description,
      });
      const isStatus = (status: number) => (error: unknown) => error instanceof IsolaError && error.status === status;

      it('name stored versions of a function, once per name, and are listed by name or by version', async () => {
        await store.putAction(action('aliased', 'f'), { overwrite: false });
        await store.putAction(action('aliased', 'f'), { overwrite: true });
        const prod = await store.aliases.create('aliased', 'f', 'prod', target('0.0.1', { '0.0.2': 0.25 }, 'the live one'));
        assert.deepEqual([prod.functionVersion, prod.routing, prod.description], ['0.0.1', { '0.0.2': 0.25 }, 'the live one']);
        assert.match(prod.revisionId, /^[0-9a-f-]{36}$/);
        assert.deepEqual(await store.aliases.get('aliased', 'f', 'prod'), prod);
        await store.aliases.create('aliased', 'f', 'beta', target('$LATEST'));
        await store.aliases.create('aliased', 'f', 'old', target('0.0.1'));
        await assert.rejects(store.aliases.create('aliased', 'f', 'prod', target('0.0.2')), isConflict);
        await assert.rejects(store.aliases.create('aliased', 'f', 'x', target('0.0.9')), isStatus(404));
        await assert.rejects(store.aliases.create('aliased', 'f', 'x', target('0.0.1', { '0.0.9': 0.5 })), isStatus(404));
        await assert.rejects(store.aliases.create('aliased', 'nobody', 'x', target('$LATEST')), isStatus(404));
        assert.equal(await store.aliases.get('aliased', 'f', 'x'), undefined, 'nothing stored');
        const names = async (page: { limit: number; skip: number; functionVersion?: string }) =>
          (await store.aliases.list('aliased', 'f', page)).map((a) => a.name);
        assert.deepEqual(await names({ limit: 10, skip: 0 }), ['beta', 'old', 'prod']);
        assert.deepEqual(await names({ limit: 1, skip: 1 }), ['old']);
        assert.deepEqual(await names({ limit: 10, skip: 0, functionVersion: '0.0.1' }), ['old', 'prod']);
        assert.deepEqual(await names({ limit: 10, skip: 0, functionVersion: '0.0.2' }), ['prod']);
      });

      it('change under their revision id, and refuse a stale one or a missing version', async () => {
        await store.putAction(action('aliased2', 'f'), { overwrite: false });
        await store.putAction(action('aliased2', 'f'), { overwrite: true });
        const created = await store.aliases.create('aliased2', 'f', 'live', target('0.0.1'));
        const moved = await store.aliases.update('aliased2', 'f', 'live', created.revisionId, (current) => ({
          ...current,
          functionVersion: '0.0.2',
          routing: { '0.0.1': 0.5 },
        }));
        assert.deepEqual([moved.functionVersion, moved.routing], ['0.0.2', { '0.0.1': 0.5 }]);
        assert.notEqual(moved.revisionId, created.revisionId);
        assert.deepEqual(await store.aliases.get('aliased2', 'f', 'live'), moved);
        const unchanged = (current: AliasTarget) => current;
        await assert.rejects(store.aliases.update('aliased2', 'f', 'live', created.revisionId, unchanged), isStatus(412));
        await assert.rejects(store.aliases.update('aliased2', 'f', 'nope', undefined, unchanged), isStatus(404));
        await assert.rejects(
          store.aliases.update('aliased2', 'f', 'live', undefined, () => target('0.0.7')),
          isStatus(404),
        );
        assert.deepEqual(await store.aliases.get('aliased2', 'f', 'live'), moved, 'nothing changed');
        assert.equal((await store.aliases.delete('aliased2', 'f', 'live'))?.name, 'live');
        assert.equal(await store.aliases.delete('aliased2', 'f', 'live'), undefined);
      });

      it('go with their function, and with their namespace', async () => {
        await store.createNamespace('aliased3', 'uuid-aliased3', 'key');
        await store.putAction(action('aliased3', 'f'), { overwrite: false });
        await store.putAction(action('aliased3', 'g'), { overwrite: false });
        await store.aliases.create('aliased3', 'f', 'a', target('0.0.1'));
        await store.aliases.create('aliased3', 'g', 'a', target('0.0.1'));
        await store.deleteAction('aliased3', 'f');
        assert.equal(await store.aliases.get('aliased3', 'f', 'a'), undefined);
        await store.putAction(action('aliased3', 'f'), { overwrite: false });
        assert.deepEqual(await store.aliases.list('aliased3', 'f', { limit: 10, skip: 0 }), [], 'a new function starts without');
        assert.equal((await store.aliases.get('aliased3', 'g', 'a'))?.name, 'a');
        await store.purgeNamespace('aliased3');
        assert.equal(await store.aliases.get('aliased3', 'g', 'a'), undefined);
      });
    });

    describe('activations and the queue', () => {
      it('go from queued to running to done, with their parameters while they wait', async () => {
        const id = activationId();
        const accepted = Date.now() - 1000;
        await store.enqueueActivation(queued('q', 'job', id, accepted));
        assert.equal(await store.countPending('q', 'job'), 1);
        assert.equal(await store.getActivation('q', id), undefined, 'not finished: not listed');
        const waiting = (await store.queuedActivations()).find((a) => a.activationId === id);
        assert.deepEqual(waiting, { ...queued('q', 'job', id, accepted), attempts: 0, notBefore: 0 });
        // A second enqueue of the same id changes nothing: the first record wins.
        await store.enqueueActivation({ ...queued('q', 'job', id, accepted), params: { other: true } }, 'running');
        assert.deepEqual((await store.queuedActivations()).find((a) => a.activationId === id)?.params, { job: id });

        await store.markActivationRunning(id);
        assert.equal(
          (await store.queuedActivations()).find((a) => a.activationId === id),
          undefined,
        );
        assert.equal((await store.interruptedActivations()).find((a) => a.activationId === id)?.activationId, id);
        await store.markActivationRunning(id);

        await store.requeueActivation(id, 1, accepted + 5000);
        const retry = (await store.queuedActivations()).find((a) => a.activationId === id);
        assert.equal(retry?.attempts, 1);
        assert.equal(retry?.notBefore, accepted + 5000);

        const done = finished('q', 'job', id, Date.now(), { answer: 42 });
        await store.completeActivation(done, accepted, 2);
        assert.deepEqual(await store.getActivation('q', id), done);
        assert.equal(await store.getActivation('other', id), undefined, 'only in its own namespace');
        assert.equal(await store.countPending('q', 'job'), 0);
        assert.equal(
          (await store.interruptedActivations()).find((a) => a.activationId === id),
          undefined,
        );
        // The record keeps when it was accepted, and says how many attempts it took.
        const row = await store.db
          .selectFrom('activations')
          .select(['accepted', 'attempts', 'params', 'state'])
          .where('activation_id', '=', id)
          .executeTakeFirstOrThrow();
        assert.deepEqual(row, { accepted, attempts: 2, params: null, state: 'done' });
      });

      it('keep a blocking call out of the queue: no parameters to run it again with', async () => {
        const id = activationId();
        await store.enqueueActivation({ ...queued('q', 'blocking', id), params: undefined }, 'running');
        const interrupted = (await store.interruptedActivations()).find((a) => a.activationId === id);
        assert.equal(interrupted?.params, undefined);
        assert.equal(await store.countPending('q', 'blocking'), 1);
      });

      it('list the queue oldest first', async () => {
        const [late, early] = [activationId(), activationId()];
        await store.enqueueActivation(queued('order', 'f', late, 2000));
        await store.enqueueActivation(queued('order', 'f', early, 1000));
        const ids = (await store.queuedActivations()).filter((a) => a.namespace === 'order').map((a) => a.activationId);
        assert.deepEqual(ids, [early, late]);
      });

      it('are listed finished only, newest first, by name, time window and page', async () => {
        const base = 1_700_000_000_000;
        const ids: string[] = [];
        for (let i = 0; i < 6; i++) {
          const id = activationId();
          ids.push(id);
          // Two per millisecond: the order within one comes from the sequence.
          await store.completeActivation(finished('lists', i % 2 ? 'odd' : 'even', id, base + Math.floor(i / 2)), base);
        }
        await store.enqueueActivation(queued('lists', 'even', activationId()));
        const all = await store.listActivations('lists', { limit: 100, skip: 0 });
        assert.deepEqual(
          all.map((a) => a.activationId),
          [...ids].reverse(),
        );
        const odd = await store.listActivations('lists', { limit: 100, skip: 0, name: 'odd' });
        assert.deepEqual(
          odd.map((a) => a.activationId),
          [ids[5], ids[3], ids[1]],
        );
        const window = await store.listActivations('lists', { limit: 100, skip: 0, since: base + 1, upto: base + 1 });
        assert.deepEqual(
          window.map((a) => a.activationId),
          [ids[3], ids[2]],
        );
        const page = await store.listActivations('lists', { limit: 2, skip: 1 });
        assert.deepEqual(
          page.map((a) => a.activationId),
          [ids[4], ids[3]],
        );
      });

      it('are committed together when written in one turn, each caller answered after the commit', async () => {
        const ids = Array.from({ length: 300 }, activationId);
        await Promise.all(ids.map((id, i) => store.completeActivation(finished('batch', 'f', id, 1000 + i), 1000)));
        const listed = await store.listActivations('batch', { limit: 1000, skip: 0 });
        assert.equal(listed.length, ids.length);
        // The same activation written twice in one turn: the later record is the one kept.
        const twice = activationId();
        await Promise.all([
          store.completeActivation(finished('batch', 'g', twice, 5, { n: 1 }), 5),
          store.completeActivation(finished('batch', 'g', twice, 5, { n: 2 }), 5),
        ]);
        assert.deepEqual((await store.getActivation('batch', twice))?.response.result, { n: 2 });
        // Written again in a later commit (a cut-off invoker finishing after its work ran again
        // elsewhere): the stored record stays, as callers were told.
        await store.completeActivation(finished('batch', 'g', twice, 9, { n: 3 }), 5);
        assert.deepEqual((await store.getActivation('batch', twice))?.response.result, { n: 2 });
      });

      it('take annotations after they finished, waiting for a record still in the group commit', async () => {
        const id = activationId();
        // Not awaited: the record is still in the writer when the amendment starts.
        const written = store.completeActivation(finished('amend', 'f', id, 1), 1);
        const outcome = { status: 'delivered', attempts: 1, statusCode: 200 };
        assert.equal(await store.annotateActivation('amend', id, [{ key: 'callback', value: outcome }]), true);
        await written;
        assert.deepEqual((await store.getActivation('amend', id))?.annotations, [
          { key: 'kind', value: 'nodejs:20' },
          { key: 'callback', value: outcome },
        ]);
        // The same key again replaces it; concurrent amendments of other keys all land.
        await Promise.all([
          store.annotateActivation('amend', id, [{ key: 'callback', value: { status: 'failed' } }]),
          store.annotateActivation('amend', id, [{ key: 'other', value: 1 }]),
        ]);
        const annotations = (await store.getActivation('amend', id))?.annotations ?? [];
        assert.deepEqual(
          [...annotations].sort((a, b) => a.key.localeCompare(b.key)),
          [
            { key: 'callback', value: { status: 'failed' } },
            { key: 'kind', value: 'nodejs:20' },
            { key: 'other', value: 1 },
          ],
        );
        // Only a finished record of the namespace is amended: not another namespace's, not a queued one.
        assert.equal(await store.annotateActivation('elsewhere', id, [{ key: 'x', value: 1 }], 50), false);
        const waiting = activationId();
        await store.enqueueActivation(queued('amend', 'f', waiting));
        assert.equal(await store.annotateActivation('amend', waiting, [{ key: 'x', value: 1 }], 50), false);
        assert.equal(await store.annotateActivation('amend', activationId(), [{ key: 'x', value: 1 }], 50), false);
      });

      it('are not lost when written while another transaction is open and then rolls back', async () => {
        const id = activationId();
        let written: Promise<void> | undefined;
        await assert.rejects(
          store.db.transaction().execute(async (trx) => {
            await trx.selectFrom('namespaces').select('name').execute();
            written = store.completeActivation(finished('rollback', 'f', id, 1), 1);
            for (let i = 0; i < 5; i++) await nextTurn();
            throw new Error('rolled back');
          }),
          /rolled back/,
        );
        await written;
        assert.equal((await store.getActivation('rollback', id))?.activationId, id);
      });

      it('are committed by close, and found again after reopening', async () => {
        const dir = mkdtempSync(join(tmpdir(), 'isola-store-close-'));
        const own = await database.setting(dir);
        const first = await Store.open(own);
        const id = activationId();
        void first.completeActivation(finished('reopen', 'f', id, 1), 1);
        await first.close();
        const second = await Store.open(own);
        try {
          assert.equal((await second.getActivation('reopen', id))?.activationId, id);
        } finally {
          await second.close();
          rmSync(dir, { recursive: true, force: true });
        }
      });
    });

    describe('records written ahead of their commit (the record window)', () => {
      const stateIn = async (id: string) =>
        (await store.db.selectFrom('activations').select('state').where('activation_id', '=', id).executeTakeFirst())?.state;

      it('wait for the window, and any read of finished records commits them first', async () => {
        // A window longer than the test: only a read or a flush commits.
        const windowed = await Store.open({ ...setting, records: { windowMs: 60_000 } });
        try {
          const [first, second, third] = [activationId(), activationId(), activationId()];
          windowed.recordActivation(finished('window', 'f', first, Date.now()), Date.now());
          windowed.recordActivation(finished('window', 'f', second, Date.now()), Date.now());
          await new Promise((resolve) => setImmediate(resolve));
          assert.equal(await stateIn(first), undefined, 'not committed before the window ends');
          assert.deepEqual((await windowed.getActivation('window', first))?.response.result, { ok: true });
          assert.equal(await stateIn(second), 'done', 'committed with the first');

          windowed.recordActivation(finished('window', 'f', third, Date.now()), Date.now());
          assert.equal(await windowed.countFinishedActivations('window', 'f'), 3);
          assert.equal(await stateIn(third), 'done');
        } finally {
          await windowed.close();
        }
      });

      it('go with the next commit someone waits for, and on close', async () => {
        const windowed = await Store.open({ ...setting, records: { windowMs: 60_000 } });
        const [ahead, awaited, last] = [activationId(), activationId(), activationId()];
        try {
          windowed.recordActivation(finished('window2', 'f', ahead, Date.now()), Date.now());
          await windowed.completeActivation(finished('window2', 'f', awaited, Date.now()), Date.now());
          assert.equal(await stateIn(ahead), 'done');
          windowed.recordActivation(finished('window2', 'f', last, Date.now()), Date.now());
        } finally {
          await windowed.close();
        }
        assert.equal(await stateIn(last), 'done', 'close commits what waits');
      });

      it('commit by themselves when the window ends', async () => {
        const windowed = await Store.open({ ...setting, records: { windowMs: 20 } });
        try {
          const id = activationId();
          windowed.recordActivation(finished('window3', 'f', id, Date.now()), Date.now());
          await waitFor(`the record of ${id}`, async () => ((await stateIn(id)) === 'done' ? true : undefined));
        } finally {
          await windowed.close();
        }
      });
    });

    describe('triggers and rules', () => {
      it('store triggers with their parameters, versioned on update', async () => {
        const input = {
          namespace: 'trg',
          name: 't1',
          parameters: [{ key: 'a', value: 1 }],
          annotations: [{ key: 'feed', value: 'x' }],
        };
        const first = await store.putTrigger(input, { overwrite: false });
        assert.equal(first.version, '0.0.1');
        await assert.rejects(store.putTrigger(input, { overwrite: false }), isConflict);
        const second = await store.putTrigger({ ...input, parameters: [{ key: 'a', value: 2 }] }, { overwrite: true });
        assert.equal(second.version, '0.0.2');
        assert.deepEqual(await store.getTrigger('trg', 't1'), second);
        assert.equal(await store.getTrigger('trg', 'nothing'), undefined);
        await store.putTrigger({ ...input, name: 't0' }, { overwrite: false });
        await store.putTrigger({ ...input, namespace: 'trg-other' }, { overwrite: false });
        assert.deepEqual(
          (await store.listTriggers('trg')).map((t) => t.name),
          ['t0', 't1'],
        );
        const everywhere = await store.listTriggers();
        assert.ok(everywhere.some((t) => t.namespace === 'trg-other' && t.name === 't1'));
        assert.deepEqual(await store.deleteTrigger('trg', 't1'), second);
        assert.equal(await store.getTrigger('trg', 't1'), undefined);
        assert.equal(await store.deleteTrigger('trg', 't1'), undefined);
      });

      it('store rules that tie a trigger to an action, active or not', async () => {
        const input = { namespace: 'rul', name: 'r1', trigger: 't', action: 'a', status: 'active' as const };
        const first = await store.putRule(input, { overwrite: false });
        assert.equal(first.version, '0.0.1');
        await assert.rejects(store.putRule(input, { overwrite: false }), isConflict);
        const second = await store.putRule({ ...input, action: 'b' }, { overwrite: true });
        assert.equal(second.version, '0.0.2');
        assert.deepEqual(await store.getRule('rul', 'r1'), second);
        await store.putRule({ ...input, name: 'r0', trigger: 'other' }, { overwrite: false });
        await store.putRule({ ...input, name: 'r2' }, { overwrite: false });
        assert.deepEqual(
          (await store.listRules('rul')).map((r) => r.name),
          ['r0', 'r1', 'r2'],
        );
        assert.deepEqual(
          (await store.rulesFor('rul', 't')).map((r) => r.name),
          ['r1', 'r2'],
        );
        await store.setRuleStatus('rul', 'r1', 'inactive');
        const inactive = await store.getRule('rul', 'r1');
        assert.equal(inactive?.status, 'inactive');
        assert.ok((inactive?.updated ?? 0) >= second.updated);
        assert.deepEqual(await store.deleteRule('rul', 'r1'), inactive);
        assert.equal(await store.getRule('rul', 'r1'), undefined);
        assert.equal(await store.deleteRule('rul', 'r1'), undefined);
      });

      it('get distinct versions when updated concurrently', async () => {
        const input = { namespace: 'trg-race', name: 't', parameters: [], annotations: [] };
        await store.putTrigger(input, { overwrite: false });
        const updates = await Promise.all(Array.from({ length: 8 }, () => store.putTrigger(input, { overwrite: true })));
        assert.equal(new Set(updates.map((t) => t.version)).size, 8);
        assert.equal((await store.getTrigger('trg-race', 't'))?.version, '0.0.9');
      });
    });

    describe('API routes', () => {
      const op = (relPath: string, verb: string, action = 'hello', responseType = 'json') => ({
        relPath,
        verb,
        action,
        responseType,
      });

      it('group operations into APIs by base path; an API keeps its first name; a repeated operation is replaced', async () => {
        const first = await store.putApiRoutes('apis', '/club', 'Book Club', [op('/books', 'GET', 'getBooks')], {
          replace: false,
        });
        assert.deepEqual(
          first.map((r) => [r.basePath, r.relPath, r.verb, r.action, r.responseType, r.apiName]),
          [['/club', '/books', 'GET', 'getBooks', 'json', 'Book Club']],
        );
        assert.ok(first[0] && first[0].created > 0);
        // A second operation without a name, and one with another name: both join "Book Club".
        await store.putApiRoutes('apis', '/club', undefined, [op('/books', 'POST', 'postBooks', 'http')], { replace: false });
        const third = await store.putApiRoutes('apis', '/club', 'Other', [op('/books/{isbn}', 'GET', 'pkg/getBook')], {
          replace: false,
        });
        assert.deepEqual(
          third.map((r) => [r.relPath, r.verb, r.action, r.apiName]),
          [
            ['/books', 'GET', 'getBooks', 'Book Club'],
            ['/books', 'POST', 'postBooks', 'Book Club'],
            ['/books/{isbn}', 'GET', 'pkg/getBook', 'Book Club'],
          ],
        );
        // The same path and verb again: replaced, not added.
        await store.putApiRoutes('apis', '/club', undefined, [op('/books', 'GET', 'listBooks', 'text')], { replace: false });
        const get = await store.listApiRoutes('apis', { api: '/club', relPath: '/books', verb: 'GET' });
        assert.deepEqual(
          get.map((r) => [r.action, r.responseType]),
          [['listBooks', 'text']],
        );
        // No name given: the base path is the name. Another namespace is apart.
        await store.putApiRoutes('apis', '/', undefined, [op('/root', 'GET')], { replace: false });
        await store.putApiRoutes('apis-other', '/club', undefined, [op('/books', 'GET')], { replace: false });
        assert.deepEqual(
          (await store.listApiRoutes('apis')).map((r) => `${r.apiName} ${r.basePath}${r.relPath} ${r.verb}`),
          ['/ //root GET', 'Book Club /club/books GET', 'Book Club /club/books POST', 'Book Club /club/books/{isbn} GET'],
        );
        // An API by its name rather than its base path.
        assert.equal((await store.listApiRoutes('apis', { api: 'Book Club' })).length, 3);
        assert.deepEqual(await store.listApiRoutes('apis', { api: '/nothing' }), []);
        assert.equal((await store.listApiRoutes('apis-other')).length, 1);
      });

      it('replace an API whole, and delete by API, path and verb', async () => {
        await store.putApiRoutes('apis-del', '/v1', 'V1', [op('/a', 'GET'), op('/a', 'PUT'), op('/b', 'GET')], {
          replace: false,
        });
        const replaced = await store.putApiRoutes('apis-del', '/v1', 'Renamed', [op('/a', 'GET'), op('/c', 'DELETE')], {
          replace: true,
        });
        assert.deepEqual(
          replaced.map((r) => `${r.apiName} ${r.relPath} ${r.verb}`),
          ['Renamed /a GET', 'Renamed /c DELETE'],
        );
        await store.putApiRoutes('apis-del', '/v2', undefined, [op('/a', 'GET')], { replace: false });
        assert.deepEqual(await store.deleteApiRoutes('apis-del', { api: '/v1', relPath: '/a', verb: 'PUT' }), []);
        const one = await store.deleteApiRoutes('apis-del', { api: '/v1', relPath: '/c', verb: 'DELETE' });
        assert.deepEqual(
          one.map((r) => `${r.basePath}${r.relPath} ${r.verb}`),
          ['/v1/c DELETE'],
        );
        const api = await store.deleteApiRoutes('apis-del', { api: 'Renamed' });
        assert.deepEqual(
          api.map((r) => `${r.basePath}${r.relPath} ${r.verb}`),
          ['/v1/a GET'],
        );
        assert.deepEqual(
          (await store.listApiRoutes('apis-del')).map((r) => r.basePath),
          ['/v2'],
        );
      });

      it('store every operation of concurrent puts to one API', async () => {
        await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            store.putApiRoutes('apis-race', '/r', `name-${i}`, [op(`/p${i}`, 'GET')], { replace: false }),
          ),
        );
        const routes = await store.listApiRoutes('apis-race');
        assert.equal(routes.length, 8);
        assert.equal(new Set(routes.map((r) => r.apiName)).size, 1);
      });
    });

    describe('text with a NUL character (which PostgreSQL cannot store)', () => {
      it('finds nothing when looked up by, and changes nothing', async () => {
        const odd = 'a\0b';
        await store.putAction(action('nul', 'a'), { overwrite: false });
        assert.equal(await store.getAction('nul', odd), undefined);
        assert.equal(await store.getAction(odd, 'a'), undefined);
        assert.deepEqual(await store.listVersions('nul', odd), []);
        assert.equal(await store.deleteAction('nul', odd), undefined);
        assert.equal(await store.authenticate(odd, 'key'), undefined);
        assert.equal(await store.keyOf(odd), undefined);
        assert.equal(await store.getNamespace(odd), undefined);
        assert.equal(await store.getActivation('nul', odd), undefined);
        assert.deepEqual(await store.listActivations('nul', { limit: 10, skip: 0, name: odd }), []);
        assert.equal(await store.getTrigger('nul', odd), undefined);
        assert.equal(await store.deleteTrigger('nul', odd), undefined);
        assert.equal(await store.getRule('nul', odd), undefined);
        assert.equal(await store.deleteRule('nul', odd), undefined);
        await store.setRuleStatus('nul', odd, 'inactive');
        assert.equal((await store.getAction('nul', 'a'))?.version, '0.0.1');
      });

      it('are stored in code on SQLite, and refused with 400 on PostgreSQL', async () => {
        const put = store.putAction(action('nul', 'code', 'function main() { return "\0"; }'), { overwrite: false });
        if (store.dialect === 'sqlite') assert.equal((await put).exec.code, 'function main() { return "\0"; }');
        else await assert.rejects(put, (error: unknown) => error instanceof IsolaError && error.status === 400);
        if (store.dialect === 'postgres') assert.equal(await store.getAction('nul', 'code'), undefined);
      });
    });

    describe('packages', () => {
      const pkg = (namespace: string, name: string, extra: Partial<PackageRecord> = {}) => ({
        namespace,
        name,
        parameters: [{ key: 'k', value: 1 }],
        annotations: [],
        publish: false,
        ...extra,
      });
      it('stores packages and bindings, lists them (published only when asked) and finds bindings of a package', async () => {
        const first = await store.packages.put(pkg('pk', 'tools'), { overwrite: false });
        assert.equal(first.version, '0.0.1');
        await assert.rejects(store.packages.put(pkg('pk', 'tools'), { overwrite: false }), /already exists/);
        const second = await store.packages.put(pkg('pk', 'tools', { publish: true }), { overwrite: true });
        assert.equal(second.version, '0.0.2');
        await store.packages.put(pkg('pk2', 'mine', { binding: { namespace: 'pk', name: 'tools' } }), { overwrite: false });
        await store.packages.put(pkg('pk', 'hidden'), { overwrite: false });
        assert.deepEqual((await store.packages.get('pk2', 'mine'))?.binding, { namespace: 'pk', name: 'tools' });
        assert.deepEqual(
          (await store.packages.list('pk', { limit: 10, skip: 0 })).map((p) => p.name),
          ['hidden', 'tools'],
        );
        assert.deepEqual(
          (await store.packages.list('pk', { limit: 10, skip: 0 }, { publishedOnly: true })).map((p) => p.name),
          ['tools'],
        );
        assert.deepEqual(
          (await store.packages.bindingsOf('pk', 'tools')).map((p) => `${p.namespace}/${p.name}`),
          ['pk2/mine'],
        );
      });
      it("lists a package's actions, and refuses to delete it (or make it a binding) while it holds any", async () => {
        await store.packages.put(pkg('pka', 'tools'), { overwrite: false });
        await store.putAction(action('pka', 'tools/a'), { overwrite: false });
        await store.putAction(action('pka', 'tools/b'), { overwrite: false });
        // Neighbours in name order that are not in the package.
        await store.putAction(action('pka', 'tools'), { overwrite: false });
        await store.putAction(action('pka', 'tools0'), { overwrite: false });
        await store.putAction(action('pka', 'tools_x/a'), { overwrite: false });
        assert.deepEqual(
          (await store.actions.inPackage('pka', 'tools')).map((a) => a.name),
          ['tools/a', 'tools/b'],
        );
        await assert.rejects(store.packages.delete('pka', 'tools'), /holds 2 action/);
        await assert.rejects(
          store.packages.put(pkg('pka', 'tools', { binding: { namespace: 'x', name: 'y' } }), { overwrite: true }),
          /cannot become a binding/,
        );
        await store.deleteAction('pka', 'tools/a');
        await store.deleteAction('pka', 'tools/b');
        assert.equal((await store.packages.delete('pka', 'tools'))?.name, 'tools');
        assert.equal(await store.packages.get('pka', 'tools'), undefined);
        assert.equal(await store.packages.delete('pka', 'tools'), undefined);
      });
    });

    describe('purging a namespace', () => {
      it('removes everything in it and nothing else; a namespace made again starts empty', async () => {
        await store.createNamespace('doomed', 'uuid-doomed', 'key');
        await store.createNamespace('kept', 'uuid-kept', 'key');
        for (const ns of ['doomed', 'kept']) {
          await store.putAction(action(ns, 'f'), { overwrite: false });
          await store.putAction(action(ns, 'f'), { overwrite: true });
          await store.putAction(action(ns, 'g'), { overwrite: false });
          await store.completeActivation(finished(ns, 'f', activationId(), 1), 1);
          await store.enqueueActivation(queued(ns, 'f', activationId()));
          await store.putTrigger({ namespace: ns, name: 't', parameters: [], annotations: [] }, { overwrite: false });
          await store.putRule({ namespace: ns, name: 'r', trigger: 't', action: 'f', status: 'active' }, { overwrite: false });
          await store.packages.put(
            { namespace: ns, name: 'p', parameters: [], annotations: [], publish: false },
            { overwrite: false },
          );
          await store.putApiRoutes(ns, '/api', undefined, [{ relPath: '/f', verb: 'GET', action: 'f', responseType: 'json' }], {
            replace: false,
          });
        }
        // A run of the old tenant that ends while the purge is under way: its record is not written.
        const acceptedBefore = Date.now();
        const late = finished('doomed', 'f', activationId(), 2);
        const lateWrite = store.completeActivation(late, acceptedBefore);
        const purge = await store.purgeNamespace('doomed');
        await lateWrite;
        assert.deepEqual(purge, {
          namespace: 'doomed',
          actions: 2,
          versions: 3,
          activations: 3,
          triggers: 1,
          rules: 1,
          packages: 1,
        });
        assert.equal(await store.getNamespace('doomed'), undefined);
        assert.equal(await store.authenticate('uuid-doomed', 'key'), undefined);
        assert.deepEqual(await store.actionNames('doomed'), []);
        assert.deepEqual(await store.listActivations('doomed', { limit: 10, skip: 0 }), []);
        assert.equal((await store.queuedActivations()).filter((a) => a.namespace === 'doomed').length, 0);
        assert.deepEqual(await store.listTriggers('doomed'), []);
        assert.deepEqual(await store.listRules('doomed'), []);
        assert.deepEqual(await store.listApiRoutes('doomed'), []);
        // Records of what the old tenant started before the purge stay out.
        await store.completeActivation(finished('doomed', 'f', activationId(), 3), acceptedBefore);
        assert.deepEqual(await store.listActivations('doomed', { limit: 10, skip: 0 }), []);
        // The other namespace is untouched.
        assert.deepEqual(await store.actionNames('kept'), ['f', 'g']);
        assert.equal((await store.listActivations('kept', { limit: 10, skip: 0 })).length, 1);
        assert.equal((await store.listRules('kept')).length, 1);
        assert.equal((await store.listApiRoutes('kept')).length, 1);
        // Made again: version numbers start over, and new activations are recorded.
        await store.createNamespace('doomed', 'uuid-doomed-2', 'key');
        assert.equal((await store.putAction(action('doomed', 'f'), { overwrite: false })).version, '0.0.1');
        const fresh = activationId();
        await clockPast(Date.now());
        await store.completeActivation(finished('doomed', 'f', fresh, Date.now()), Date.now());
        assert.equal((await store.getActivation('doomed', fresh))?.activationId, fresh);
        assert.equal(await store.purgeNamespace('never-was'), undefined);
      });
    });

    describe('retention', () => {
      it('walks the namespaces that have activations, in order', async () => {
        const seen: string[] = [];
        let namespace = await store.nextNamespaceWithActivations(undefined);
        while (namespace !== undefined) {
          seen.push(namespace);
          namespace = await store.nextNamespaceWithActivations(namespace);
        }
        assert.deepEqual(
          seen,
          [...new Set(seen)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
        );
        assert.ok(seen.includes('lists') && seen.includes('batch'));
      });

      it('prunes finished activations by age and by count, in batches, never queued or running ones', async () => {
        const now = Date.now();
        const old = Array.from({ length: 7 }, activationId);
        for (const [i, id] of old.entries()) await store.completeActivation(finished('ret', 'f', id, now - 100_000 - i), now);
        const recent = Array.from({ length: 5 }, activationId);
        for (const [i, id] of recent.entries()) await store.completeActivation(finished('ret', 'f', id, now + i), now);
        const waiting = activationId();
        await store.enqueueActivation(queued('ret', 'f', waiting, now - 200_000));

        const byAge = new ActivationRetention(store, { maxAgeMs: 50_000, perNamespace: 0, intervalMs: 60_000, batchSize: 3 });
        assert.ok((await byAge.pass()) >= old.length);
        const left = (await store.listActivations('ret', { limit: 100, skip: 0 })).map((a) => a.activationId);
        assert.deepEqual(left, [...recent].reverse());
        assert.equal((await store.queuedActivations()).find((a) => a.activationId === waiting)?.activationId, waiting);

        // The queued one counts towards the newest three but is never pruned.
        assert.deepEqual(await store.activationCountBoundary('ret', 100), undefined);
        const boundary = await store.activationCountBoundary('ret', 3);
        assert.equal(boundary?.start, now + 1);
        const byCount = new ActivationRetention(store, { maxAgeMs: 0, perNamespace: 3, intervalMs: 60_000, batchSize: 1 });
        await byCount.pass();
        assert.deepEqual(
          (await store.listActivations('ret', { limit: 100, skip: 0 })).map((a) => a.activationId),
          [recent[4], recent[3], recent[2]],
        );
        assert.equal(await store.countPending('ret', 'f'), 1);
      });

      it('deletes at most a batch at a time', async () => {
        for (let i = 0; i < 5; i++) await store.completeActivation(finished('prune', 'f', activationId(), 10 + i), 1);
        assert.equal(await store.pruneActivations('prune', { before: 100 }, 2), 2);
        assert.equal(await store.pruneActivations('prune', { through: { start: 14, seq: Number.MAX_SAFE_INTEGER } }, 10), 3);
        assert.equal(await store.pruneActivations('prune', { before: 100 }, 2), 0);
        assert.equal(await store.nextNamespaceWithActivations('prund'), 'q');
      });
    });
  });
}
