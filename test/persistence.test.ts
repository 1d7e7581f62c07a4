import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../src/core/types.js';
import { storedActivationState } from './helpers/activations.js';
import { stopSharedPostgres } from './helpers/postgres.js';
import { annotation, type TestDatabase, TestServer, waitFor } from './helpers/server.js';

const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));

after(() => stopSharedPostgres());

/** An activation's record through the API, once the server has it. */
function finishedRecord(server: TestServer, id: string, timeoutMs?: number): Promise<ActivationRecord> {
  return waitFor(
    `activation ${id}`,
    async () => {
      const r = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
      return r.status === 200 ? r.body : undefined;
    },
    timeoutMs,
  );
}

// On SQLite in the data dir, and on a private PostgreSQL (`isola serve --database postgres://...`).
for (const database of ['sqlite', 'postgres'] as const satisfies readonly TestDatabase[]) {
  describe(`a server killed with SIGKILL and restarted (${database})`, () => {
    let server: TestServer;
    // The budget fits two 256 MB instances: with both blockers running, the worker has to queue.
    const env = { ISOLA_MEMORY_BUDGET_MB: '512', ISOLA_PREWARM: 'isolate:0' };
    let finishedId = '';
    let runningId = '';
    let runningOnceId = '';
    let queuedId = '';
    const record = (id: string) => finishedRecord(server, id, 30_000);

    before(async () => {
      server = await TestServer.start({ env, database });
    });
    after(async () => {
      await server.dispose();
    });

    it('is set up with versions, a finished activation, two running and one queued', async () => {
      const limits = { memory: 256, timeout: 60000 };
      const sleeper = 'async function main(p) { await new Promise((r) => setTimeout(r, p.ms)); return { slept: p.ms }; }';
      assert.equal((await server.deploy('worker', 'function main(p) { return { done: p.job }; }', { limits })).status, 200);
      assert.equal((await server.deploy('worker', 'function main(p) { return { done: p.job, v: 2 }; }', { limits })).status, 200);
      await server.deploy('blocker', sleeper, { limits });
      await server.deploy('blocker-once', sleeper, { limits, annotations: [{ key: 'retries', value: 0 }] });
      const finished = await server.invoke<ActivationRecord>('worker', { job: 'before' });
      assert.equal(finished.body.response.success, true);
      finishedId = finished.body.activationId;

      runningId = (await server.invoke<{ activationId: string }>('blocker', { ms: 3000 }, 'blocking=false')).body.activationId;
      runningOnceId = (await server.invoke<{ activationId: string }>('blocker-once', { ms: 3000 }, 'blocking=false')).body
        .activationId;
      await waitFor('the blockers to start', async () =>
        (await storedActivationState(server, runningId)) === 'running' &&
        (await storedActivationState(server, runningOnceId)) === 'running'
          ? true
          : undefined,
      );
      queuedId = (await server.invoke<{ activationId: string }>('worker', { job: 'queued' }, 'blocking=false')).body.activationId;
      assert.equal(await storedActivationState(server, queuedId), 'queued', 'the worker waits for memory');
      // The finished call's record commits within the record window after its answer (what a kill
      // inside the window may lose is tested below): killed once it has, not while it may not have.
      await waitFor(`the record of ${finishedId} in the database`, async () =>
        (await storedActivationState(server, finishedId)) === 'done' ? true : undefined,
      );
      await server.kill();
    });

    it('still has every action, version and finished activation', async () => {
      await server.restart();
      const versions = await server.request<{ version: string }[]>('GET', '/api/v1/namespaces/_/actions/worker/versions');
      assert.equal(versions.status, 200, JSON.stringify(versions.body));
      assert.deepEqual(
        versions.body.map((v) => v.version),
        ['0.0.2', '0.0.1'],
      );
      const blocker = await server.request('GET', '/api/v1/namespaces/_/actions/blocker');
      assert.equal(blocker.status, 200, JSON.stringify(blocker.body));
      const finished = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${finishedId}`);
      assert.equal(finished.status, 200, JSON.stringify(finished.body));
      assert.deepEqual(finished.body.response.result, { done: 'before', v: 2 }, JSON.stringify(finished.body));
    });

    it('holds the data dir again: the lock of the killed server was taken over', async () => {
      const pid = (await server.request<{ pid: number }>('GET', '/healthz', undefined, { auth: null })).body.pid;
      const second = spawnSync(
        process.execPath,
        [
          '--no-node-snapshot',
          '--import',
          import.meta.resolve('tsx'),
          MAIN,
          'serve',
          '--port',
          '0',
          '--data-dir',
          server.dataDir,
        ],
        { env: { ...process.env, ISOLA_BACKENDS: 'isolate', ISOLA_PREWARM: 'isolate:0' }, encoding: 'utf8', timeout: 60_000 },
      );
      assert.notEqual(second.status, 0);
      assert.match(second.stderr, new RegExp(`Another Isola server \\(pid ${pid}, listening on ${server.url}\\)`));
    });

    it('runs the activation that was still queued', async () => {
      const queued = await record(queuedId);
      assert.equal(queued.response.success, true);
      assert.deepEqual(queued.response.result, { done: 'queued', v: 2 });
    });

    it('runs an interrupted activation again (at least once), noting the attempt', async () => {
      const rerun = await record(runningId);
      assert.equal(rerun.response.status, 'success');
      assert.deepEqual(rerun.response.result, { slept: 3000 });
      assert.equal(annotation(rerun, 'attempt'), 2);
    });

    it('records an interrupted activation of a function without retries as failed, with the reason', async () => {
      const failed = await record(runningOnceId);
      assert.equal(failed.response.status, 'whisk internal error');
      assert.match(
        String((failed.response.result as { error: string }).error),
        /server stopped while this activation was running/,
      );
      assert.match(server.output, /1 queued activation\(s\) resumed, 1 interrupted one\(s\) run again, 1 recorded as failed/);
    });
  });
}

// The record window (ISOLA_RECORD_WINDOW): a blocking call is answered before its record commits.
for (const database of ['sqlite', 'postgres'] as const satisfies readonly TestDatabase[]) {
  describe(`what a SIGKILL may lose of answered calls (${database})`, () => {
    /** A server with this record window and a hello function, killed and restarted by `body`. */
    async function withServer(recordWindow: string, body: (server: TestServer) => Promise<void>): Promise<void> {
      const server = await TestServer.start({ env: { ISOLA_PREWARM: 'isolate:0', ISOLA_RECORD_WINDOW: recordWindow }, database });
      try {
        await server.deploy('hello', 'function main(p) { return { hello: p.name }; }');
        await body(server);
      } finally {
        await server.dispose();
      }
    }

    it('never an accepted asynchronous invocation: stored before its 202, run after the restart', () =>
      withServer('1s', async (server) => {
        const ids: string[] = [];
        for (let i = 0; i < 20; i++)
          ids.push(
            (await server.invoke<{ activationId: string }>('hello', { name: `a${i}` }, 'blocking=false')).body.activationId,
          );
        await server.kill();
        await server.restart();
        for (const [i, id] of ids.entries())
          assert.deepEqual((await finishedRecord(server, id)).response.result, { hello: `a${i}` });
      }));

    it("a blocking call's record commits by itself within the window, and then survives", () =>
      withServer('50ms', async (server) => {
        const answered = await server.invoke<ActivationRecord>('hello', { name: 'window' });
        assert.equal(answered.status, 200);
        const id = answered.body.activationId;
        // Read from the database itself: a read through the API would commit it first.
        await waitFor(`the record of ${id} in the database`, async () =>
          (await storedActivationState(server, id)) === 'done' ? true : undefined,
        );
        await server.kill();
        await server.restart();
        const stored = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
        assert.equal(stored.status, 200);
        assert.deepEqual(stored.body.response.result, { hello: 'window' });
      }));

    it('none with a window of 0: the record commits before the answer', () =>
      withServer('0', async (server) => {
        const answered = await server.invoke<ActivationRecord>('hello', { name: 'first' });
        // Killed at once: nothing had a chance to commit after the answer.
        await server.kill();
        await server.restart();
        const stored = await server.request<ActivationRecord>(
          'GET',
          `/api/v1/namespaces/_/activations/${answered.body.activationId}`,
        );
        assert.equal(stored.status, 200);
        assert.deepEqual(stored.body.response.result, { hello: 'first' });
      }));
  });
}
