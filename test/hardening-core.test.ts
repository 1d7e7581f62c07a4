import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

const SLEEPER =
  'async function main(p) { await new Promise((r) => setTimeout(r, p.ms ?? 0)); return { slept: p.ms ?? 0, tag: p.tag }; }';

/** The value of one Prometheus series (0 when absent). */
async function metric(server: TestServer, pattern: RegExp): Promise<number> {
  const text = await server.metrics();
  return Number(pattern.exec(text)?.[1] ?? 0);
}

const memoryUsed = (server: TestServer) => metric(server, /^isola_memory_used_megabytes (\d+)/m);
const busyInstances = (server: TestServer) => metric(server, /^isola_instances\{isolation="isolate",state="busy"\} (\d+)/m);

describe('the scheduler under memory pressure, end to end', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start({ env: { ISOLA_MEMORY_BUDGET_MB: '512', ISOLA_PREWARM: 'isolate:0' } });
  });
  after(async () => {
    await server.dispose();
  });

  it('keeps the memory account within the budget through bursts of concurrent cold starts', async () => {
    const names = Array.from({ length: 8 }, (_, i) => `big-${i}`);
    for (const name of names) assert.equal((await server.deploy(name, SLEEPER, { limits: { memory: 256 } })).status, 200);
    let highest = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) highest = Math.max(highest, await memoryUsed(server));
    })();
    for (let round = 0; round < 5; round++) {
      const calls = names.flatMap((name) =>
        [0, 1, 2].map((i) => server.invoke<ActivationRecord>(name, { ms: 5 * i, tag: round })),
      );
      const answers = await Promise.all(calls);
      for (const answer of answers) {
        assert.equal(answer.status, 200, JSON.stringify(answer.body));
        assert.equal(answer.body.response.status, 'success');
      }
    }
    sampling = false;
    await sampler;
    assert.ok(highest <= 512, `memory in use reached ${highest} MB against a budget of 512 MB`);
    assert.ok(highest > 0, 'the sampler saw instances');
    assert.equal(await busyInstances(server), 0, 'no instance stays busy once every call has answered');
    assert.ok((await memoryUsed(server)) <= 512);
    // Nothing is wedged: another namespace's function (here another function) still starts.
    assert.equal((await server.deploy('after-burst', SLEEPER, { limits: { memory: 512 } })).status, 200);
    const after = await server.invoke<ActivationRecord>('after-burst', { ms: 0 });
    assert.equal(after.status, 200, JSON.stringify(after.body));
  });

  it('answers a call whose function fails to load after waiting for memory, and keeps serving', async () => {
    const small = await TestServer.start({ env: { ISOLA_MEMORY_BUDGET_MB: '256', ISOLA_PREWARM: 'isolate:0' } });
    try {
      await small.deploy('hold', SLEEPER, { limits: { memory: 256 } });
      await small.deploy('no-main', SLEEPER, { limits: { memory: 256 }, exec: { main: 'nope' } });
      const holding = small.invoke<ActivationRecord>('hold', { ms: 1500 });
      await waitFor('the holder to run', async () => ((await busyInstances(small)) === 1 ? true : undefined));
      const failed = await small.invoke<ActivationRecord>('no-main');
      assert.equal(failed.status, 502, JSON.stringify(failed.body));
      assert.equal(failed.body.response.status, 'action developer error');
      assert.match(String((failed.body.response.result as { error: string }).error), /no entry point "nope"/);
      assert.equal((await holding).status, 200);
      // The server survived and still starts instances.
      assert.equal((await small.invoke<ActivationRecord>('hold', { ms: 0 })).status, 200);
      assert.equal(await memoryUsed(small), 256);
    } finally {
      await small.dispose();
    }
  });

  it('refuses with 503, storing nothing, a call of a function bigger than the whole budget', async () => {
    const roomy = await TestServer.start({ env: { ISOLA_MEMORY_BUDGET_MB: '1024', ISOLA_PREWARM: 'isolate:0' } });
    try {
      assert.equal((await roomy.deploy('huge', SLEEPER, { limits: { memory: 1024 } })).status, 200);
      await roomy.stop();
      // The same data dir under a smaller budget: the stored action no longer fits.
      const tight = await TestServer.start({
        dataDir: roomy.dataDir,
        env: { ISOLA_MEMORY_BUDGET_MB: '512', ISOLA_PREWARM: 'isolate:0' },
      });
      try {
        for (const query of ['blocking=true', 'blocking=false']) {
          const answer = await tight.invoke<{ error: string }>('huge', {}, query);
          assert.equal(answer.status, 503, `${query}: ${JSON.stringify(answer.body)}`);
          assert.match(answer.body.error, /needs 1024 MB but this host's memory budget is 512 MB/);
        }
        const records = await tight.request<unknown[]>('GET', '/api/v1/namespaces/_/activations?name=huge');
        assert.deepEqual(records.body, [], 'nothing was recorded');
      } finally {
        await tight.stop();
      }
    } finally {
      await roomy.dispose();
    }
  });
});

describe('versions and dying instances, end to end', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start({ env: { ISOLA_PREWARM: 'isolate:0' } });
  });
  after(async () => {
    await server.dispose();
  });

  for (const isolation of ['isolate', 'process'] as const) {
    it(`runs the new code of an action deleted and created again while an old run is in flight (${isolation})`, async () => {
      const name = `reborn-${isolation}`;
      const annotations = [{ key: 'isolation', value: isolation }];
      const code = (tag: string) =>
        `async function main(p) { await new Promise((r) => setTimeout(r, p.ms ?? 0)); return { code: '${tag}' }; }`;
      await server.deploy(name, code('old'), { annotations, limits: { memory: 128, concurrency: 2 } });
      const inFlight = server.invoke<ActivationRecord>(name, { ms: 1500 });
      await waitFor('the old run to start', async () => {
        const text = await server.metrics();
        return new RegExp(`isola_function_instances\\{namespace="guest",action="${name}",state="busy"\\} 1`).test(text)
          ? true
          : undefined;
      });
      assert.equal((await server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`)).status, 200);
      const created = await server.deploy(name, code('new'), { annotations, limits: { memory: 128, concurrency: 2 } });
      assert.equal(created.status, 200);
      assert.notEqual(created.body.version, '0.0.1', 'versions continue after the deleted ones');
      const fresh = await server.invoke<ActivationRecord>(name, { ms: 0 });
      assert.deepEqual(fresh.body.response.result, { code: 'new' });
      assert.deepEqual((await inFlight).body.response.result, { code: 'old' });
    });

    it(`records every run on an instance that one run's timeout kills (${isolation}, concurrency 2)`, async () => {
      const name = `shared-${isolation}`;
      await server.deploy(
        name,
        'async function main(p) { if (p.hang) await new Promise(() => {}); await new Promise((r) => setTimeout(r, p.ms ?? 0)); return { ok: true }; }',
        {
          annotations: [
            { key: 'isolation', value: isolation },
            { key: 'keepAlive', value: 'fixed:300ms' },
          ],
          limits: { memory: 128, concurrency: 2, timeout: 1500 },
        },
      );
      assert.equal((await server.invoke(name, {})).status, 200, 'a first call warms one instance');
      const hung = server.invoke<ActivationRecord>(name, { hang: true });
      await waitFor('the hung run to start', async () => {
        const text = await server.metrics();
        return new RegExp(`isola_function_instances\\{namespace="guest",action="${name}",state="busy"\\} 1`).test(text)
          ? true
          : undefined;
      });
      // Shares the instance, and is still running when its neighbour's deadline kills it.
      const neighbour = server.invoke<ActivationRecord>(name, { hang: true });
      const [timedOut, collateral] = await Promise.all([hung, neighbour]);
      assert.equal(timedOut.status, 502, JSON.stringify(timedOut.body));
      assert.equal(annotation(timedOut.body, 'timeout'), true);
      assert.notEqual(collateral.status, 500, JSON.stringify(collateral.body));
      for (const answer of [timedOut, collateral]) {
        const stored = await server.request<ActivationRecord>(
          'GET',
          `/api/v1/namespaces/_/activations/${answer.body.activationId}`,
        );
        assert.equal(stored.status, 200, 'every run on the dying instance has a stored record');
      }
      // The function is not left counting a call in flight: it serves again, and its keep-alive
      // lets the idle instance go.
      assert.equal((await server.invoke(name, {})).status, 200);
      await waitFor('the keep-alive to unload the instance', async () => {
        const text = await server.metrics();
        return new RegExp(`isola_function_instances\\{namespace="guest",action="${name}",state="idle"\\}`).test(text)
          ? undefined
          : true;
      });
    });
  }
});

describe('deploy-time checks of WebAssembly modules', () => {
  it('refuses a garbage module under a name that once held a valid one (update, and delete then create)', async () => {
    const server = await TestServer.start({ env: { ISOLA_PREWARM: 'isolate:0' } });
    try {
      const valid = readFileSync(new URL('../examples/wasm/greet.wasm', import.meta.url)).toString('base64');
      const garbage = Buffer.from('definitely not wasm').toString('base64');
      const put = (code: string) =>
        server.request<{ error?: string }>('PUT', '/api/v1/namespaces/_/actions/w?overwrite=true', {
          exec: { kind: 'wasm', code, binary: true },
        });
      assert.equal((await put(valid)).status, 200);
      const update = await put(garbage);
      assert.equal(update.status, 400, JSON.stringify(update.body));
      assert.match(String(update.body.error), /WebAssembly module/);
      assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/actions/w')).status, 200);
      assert.equal((await put(garbage)).status, 400, 'nor after a delete');
      assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/w')).status, 404, 'nothing was stored');
    } finally {
      await server.dispose();
    }
  });
});

describe('a server killed with SIGKILL during a burst of asynchronous invocations', () => {
  it('runs or records as failed every invocation it accepted', async () => {
    const server = await TestServer.start({ env: { ISOLA_PREWARM: 'isolate:0', ISOLA_RETRY_BASE: '100ms' } });
    try {
      await server.deploy('tally', SLEEPER, { annotations: [{ key: 'retries', value: 1 }] });
      const accepted: string[] = [];
      let killed = false;
      const burst = Array.from({ length: 400 }, async (_, i) => {
        try {
          const answer = await server.invoke<{ activationId: string }>('tally', { ms: 20, tag: i }, 'blocking=false');
          if (answer.status === 202) accepted.push(answer.body.activationId);
        } catch {
          // refused once the server is gone: never accepted
        }
        if (!killed && accepted.length >= 100) {
          killed = true;
          await server.kill();
        }
      });
      await Promise.all(burst);
      assert.ok(killed, 'the server was killed mid-burst');
      await server.restart();
      const unique = new Set(accepted);
      assert.equal(unique.size, accepted.length, 'every accepted id is distinct');
      for (const id of unique) {
        const record = await waitFor(
          `activation ${id}`,
          async () => {
            const r = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
            return r.status === 200 ? r.body : undefined;
          },
          60_000,
        );
        if (record.response.status !== 'success') {
          assert.equal(record.response.status, 'whisk internal error', JSON.stringify(record));
          assert.match(JSON.stringify(record.response.result), /server stopped/);
        }
        // At least once, at most once per attempt allowed: the first and one retry.
        assert.ok(Number(annotation(record, 'attempt') ?? 1) <= 2, JSON.stringify(record.annotations));
      }
    } finally {
      await server.dispose();
    }
  });
});
