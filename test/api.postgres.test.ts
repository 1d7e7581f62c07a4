// The whole end-to-end API suite again, with every server it starts on PostgreSQL: each
// `isola serve` gets `--database postgres://...` on a new database of a private instance. Then
// the store paths that suite does not take over HTTP: triggers and rules, namespaces made and
// deleted through a live server, retention.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { runCli } from './helpers/cli.js';
import { stopSharedPostgres } from './helpers/postgres.js';
import { databaseOf, TestServer, useDatabaseForTestServers, waitFor } from './helpers/server.js';

useDatabaseForTestServers('postgres');
after(() => stopSharedPostgres());
await import('./api.test.js');

const ECHO = 'function main(p) { return { got: p }; }';

describe('store paths beyond the API suite, on PostgreSQL', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start({
      env: { ISOLA_PREWARM: 'isolate:0', ISOLA_ACTIVATIONS_PER_NAMESPACE: '3', ISOLA_RETENTION_INTERVAL: '200ms' },
    });
  });
  after(async () => {
    await server.dispose();
  });

  const activations = async (auth = server.auth) =>
    (await server.request<ActivationRecord[]>('GET', '/api/v1/namespaces/_/activations?limit=200&docs=true', undefined, { auth }))
      .body;

  it('runs on the database it was given', () => {
    assert.match(databaseOf(server) ?? '', /^postgres:\/\/postgres@127\.0\.0\.1:\d+\/server_[0-9a-f]+$/);
    assert.match(server.output, /Database: PostgreSQL at postgres:\/\/postgres@127\.0\.0\.1:\d+\//);
  });

  it('stores triggers and rules, and a fired trigger runs the action its active rule names', async () => {
    assert.equal((await server.deploy('echo', ECHO)).status, 200);
    const trigger = await server.request('PUT', '/api/v1/namespaces/_/triggers/ping', {
      parameters: [{ key: 'from', value: 'trigger' }],
    });
    assert.equal(trigger.status, 200);
    assert.equal((await server.request('PUT', '/api/v1/namespaces/_/triggers/ping', {})).status, 409);
    const rule = await server.request('PUT', '/api/v1/namespaces/_/rules/ping-echo', { trigger: 'ping', action: 'echo' });
    assert.equal(rule.status, 200);
    const listed = await server.request<{ name: string }[]>('GET', '/api/v1/namespaces/_/rules');
    assert.deepEqual(
      listed.body.map((r) => r.name),
      ['ping-echo'],
    );
    assert.equal((await server.request<{ name: string }[]>('GET', '/api/v1/namespaces/_/triggers')).body.length, 1);

    const fired = await server.request<{ activationId: string }>('POST', '/api/v1/namespaces/_/triggers/ping', { n: 1 });
    assert.equal(fired.status, 202);
    const run = await waitFor('the rule to run echo', async () =>
      (await activations()).find((a) => a.name === 'echo' && (a.response.result as { got?: { n?: number } }).got?.n === 1),
    );
    assert.deepEqual(run.response.result, { got: { from: 'trigger', n: 1 } });

    const disabled = await server.request<{ status: string }>('POST', '/api/v1/namespaces/_/rules/ping-echo', {
      status: 'inactive',
    });
    assert.equal(disabled.status, 200);
    assert.equal(
      (await server.request<{ status: string }>('GET', '/api/v1/namespaces/_/rules/ping-echo')).body.status,
      'inactive',
    );
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/rules/ping-echo')).status, 200);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/rules/ping-echo')).status, 404);
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/triggers/ping')).status, 200);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/triggers/ping')).status, 404);
  });

  it('makes and deletes namespaces through the live server; one made again starts empty', async () => {
    const created = await runCli(['namespace', 'create', 'tenant', '--data-dir', server.dataDir]);
    assert.equal(created.code, 0, created.stderr);
    const auth = created.stdout.trim();
    const deploy = await server.request(
      'PUT',
      '/api/v1/namespaces/_/actions/mine',
      { exec: { kind: 'nodejs:20', code: ECHO } },
      { auth },
    );
    assert.equal(deploy.status, 200);
    assert.equal((await server.request('POST', '/api/v1/namespaces/_/actions/mine?blocking=true', {}, { auth })).status, 200);
    assert.equal((await activations(auth)).length, 1);

    const deleted = await runCli(['namespace', 'delete', 'tenant', '--data-dir', server.dataDir]);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions', undefined, { auth })).status, 401);
    const again = (await runCli(['namespace', 'create', 'tenant', '--data-dir', server.dataDir])).stdout.trim();
    assert.deepEqual((await server.request('GET', '/api/v1/namespaces/_/actions', undefined, { auth: again })).body, []);
    assert.deepEqual(await activations(again), []);
    const redeployed = await server.request<{ version: string }>(
      'PUT',
      '/api/v1/namespaces/_/actions/mine',
      { exec: { kind: 'nodejs:20', code: ECHO } },
      { auth: again },
    );
    assert.equal(redeployed.body.version, '0.0.1');
  });

  it('keeps the newest finished activations per namespace', async () => {
    await server.deploy('counted', ECHO);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await server.invoke<ActivationRecord>('counted', { i })).body.activationId);
    const kept = await waitFor('pruning down to 3', async () => {
      const now = (await activations()).map((a) => a.activationId);
      return now.length === 3 ? now : undefined;
    });
    assert.deepEqual(kept, ids.slice(2).reverse());
  });
});
