import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import type { ActivationRecord } from '../src/core/types.js';
import { TestServer, waitFor } from './helpers/server.js';

function activationState(dataDir: string, id: string): string | undefined {
  const db = new Database(join(dataDir, 'isola.db'), { readonly: true });
  try {
    return (db.prepare('select state from activations where activation_id = ?').get(id) as { state?: string } | undefined)?.state;
  } finally {
    db.close();
  }
}

describe('a server killed with SIGKILL and restarted', () => {
  let server: TestServer;
  // The budget fits one 256 MB instance, so a second invocation has to wait in the queue.
  const env = { ISOLA_MEMORY_BUDGET_MB: '256', ISOLA_PREWARM: 'isolate:0' };
  let finishedId = '';
  let runningId = '';
  let queuedId = '';

  before(async () => {
    server = await TestServer.start({ env });
  });
  after(async () => {
    await server.dispose();
  });

  it('is set up with versions, a finished activation, one running and one queued', async () => {
    const limits = { memory: 256, timeout: 60000 };
    assert.equal((await server.deploy('worker', 'function main(p) { return { done: p.job }; }', { limits })).status, 200);
    assert.equal((await server.deploy('worker', 'function main(p) { return { done: p.job, v: 2 }; }', { limits })).status, 200);
    await server.deploy('blocker', 'async function main() { await new Promise((r) => setTimeout(r, 60000)); return {}; }', {
      limits,
    });
    const finished = await server.invoke<ActivationRecord>('worker', { job: 'before' });
    assert.equal(finished.body.response.success, true);
    finishedId = finished.body.activationId;

    runningId = (await server.invoke<{ activationId: string }>('blocker', {}, 'blocking=false')).body.activationId;
    await waitFor('the blocker to start', async () =>
      activationState(server.dataDir, runningId) === 'running' ? true : undefined,
    );
    queuedId = (await server.invoke<{ activationId: string }>('worker', { job: 'queued' }, 'blocking=false')).body.activationId;
    assert.equal(activationState(server.dataDir, queuedId), 'queued', 'the worker waits for memory');
    await server.kill();
  });

  it('still has every action, version and finished activation', async () => {
    await server.restart();
    const versions = await server.request<{ version: string }[]>('GET', '/api/v1/namespaces/_/actions/worker/versions');
    assert.deepEqual(
      versions.body.map((v) => v.version),
      ['0.0.2', '0.0.1'],
    );
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/blocker')).status, 200);
    const finished = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${finishedId}`);
    assert.equal(finished.status, 200);
    assert.deepEqual(finished.body.response.result, { done: 'before', v: 2 });
  });

  it('runs the activation that was still queued', async () => {
    const record = await waitFor('the queued activation to run', async () => {
      const r = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${queuedId}`);
      return r.status === 200 ? r.body : undefined;
    });
    assert.equal(record.response.success, true);
    assert.deepEqual(record.response.result, { done: 'queued', v: 2 });
  });

  it('records the activation that was running as failed, with the reason', async () => {
    const r = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${runningId}`);
    assert.equal(r.status, 200);
    assert.equal(r.body.response.status, 'whisk internal error');
    assert.match(String((r.body.response.result as { error: string }).error), /server stopped while this activation was running/);
    assert.match(server.output, /1 queued activation\(s\) resumed, 1 interrupted one\(s\) recorded as failed/);
  });
});
