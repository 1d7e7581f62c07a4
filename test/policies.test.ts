import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

const SLEEPER = 'async function main(p) { await new Promise((r) => setTimeout(r, p.ms ?? 0)); return { slept: p.ms ?? 0 }; }';

describe('scheduling policies, scaling, async and triggers', () => {
  let server: TestServer;
  const metric = async (pattern: RegExp, target: TestServer = server) => {
    const text = await target.metrics();
    return Number(pattern.exec(text)?.[1] ?? 0);
  };
  const record = (id: string, timeoutMs = 15_000) =>
    waitFor(
      `activation ${id}`,
      async () => {
        const r = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
        return r.status === 200 ? r.body : undefined;
      },
      timeoutMs,
    );

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_RETRY_BASE: '100ms', ISOLA_PREWARM: 'isolate:0' } });
  });
  after(async () => {
    await server.dispose();
  });

  it('accepts a keep-alive policy per function and refuses one that does not parse', async () => {
    // How the hybrid policy prewarms is checked in the scheduler's unit tests, under mock timers.
    assert.equal(
      (await server.deploy('tick', SLEEPER, { annotations: [{ key: 'keepAlive', value: 'hybrid:50ms' }] })).status,
      200,
    );
    assert.equal((await server.invoke<ActivationRecord>('tick')).status, 200);
    const bad = await server.deploy('tick-bad', SLEEPER, { annotations: [{ key: 'keepAlive', value: 'sometimes' }] });
    assert.equal(bad.status, 400);
  });

  it('keeps provisioned instances (minInstances) ready before any call', async () => {
    await server.deploy('prov', SLEEPER, { annotations: [{ key: 'minInstances', value: 2 }] });
    await waitFor('two idle instances', async () =>
      (await metric(/isola_function_instances\{namespace="guest",action="prov",state="idle"\} (\d+)/)) === 2 ? true : undefined,
    );
    const first = (await server.invoke<ActivationRecord>('prov')).body;
    assert.equal(annotation(first, 'coldStart'), false, 'the first call is warm');
    const bad = await server.deploy('prov-bad', SLEEPER, { annotations: [{ key: 'minInstances', value: 'many' }] });
    assert.equal(bad.status, 400);
  });

  it('queues beyond maxInstances and answers 429 beyond maxQueued', async () => {
    await server.deploy('limited', SLEEPER, {
      annotations: [
        { key: 'maxInstances', value: 1 },
        { key: 'maxQueued', value: 2 },
      ],
    });
    await server.invoke('limited');
    const results = await Promise.all(
      Array.from({ length: 5 }, () => server.invoke<{ error?: string }>('limited', { ms: 400 }, 'blocking=true&result=true')),
    );
    const statuses = results.map((r) => r.status).sort();
    assert.deepEqual(statuses, [200, 200, 200, 429, 429]);
    const refused = results.find((r) => r.status === 429);
    assert.match(String(refused?.body.error), /Too many invocations of guest\/limited are waiting \(at most 2\)/);
  });

  it("answers 429 to an asynchronous invocation when the function's durable queue is full", async () => {
    await server.deploy('one-at-a-time', SLEEPER, { annotations: [{ key: 'maxQueued', value: 1 }] });
    const first = await server.invoke('one-at-a-time', { ms: 1000 }, 'blocking=false');
    assert.equal(first.status, 202);
    const second = await server.invoke<{ error: string }>('one-at-a-time', { ms: 1000 }, 'blocking=false');
    assert.equal(second.status, 429);
    assert.match(second.body.error, /are queued \(at most 1\)/);
  });

  it('retries an asynchronous invocation that fails retryably, with backoff', async () => {
    await server.deploy(
      'flaky',
      'let calls = 0; function main() { calls++; return calls < 3 ? { error: "not yet", retryable: true } : { calls }; }',
    );
    const { body } = await server.invoke<{ activationId: string }>('flaky', {}, 'blocking=false');
    const done = await record(body.activationId);
    assert.equal(done.response.status, 'success', JSON.stringify(done.annotations));
    assert.deepEqual(done.response.result, { calls: 3 }, JSON.stringify(done));
    assert.equal(annotation(done, 'attempt'), 3);
    await server.deploy('broken', 'function main() { return { error: "no" }; }');
    const failed = await record(
      (await server.invoke<{ activationId: string }>('broken', {}, 'blocking=false')).body.activationId,
    );
    assert.equal(failed.response.status, 'application error', 'a result with an error field is an application error');
    assert.equal(annotation(failed, 'attempt'), 1, 'a plain application error is not retried');
  });

  it('fires triggers through rules, and on a cron schedule', async () => {
    await server.deploy('on-event', 'function main(p) { return { got: p.what ?? null, fromTrigger: p.fixed ?? null }; }');
    assert.equal(
      (await server.request('PUT', '/api/v1/namespaces/_/triggers/event', { parameters: [{ key: 'fixed', value: 'yes' }] }))
        .status,
      200,
    );
    const rule = await server.request('PUT', '/api/v1/namespaces/_/rules/event-rule', {
      trigger: '/_/event',
      action: '/_/on-event',
    });
    assert.equal(rule.status, 200, JSON.stringify(rule.body));
    const fired = await server.request<{ activationId: string }>('POST', '/api/v1/namespaces/_/triggers/event', {
      what: 'payload',
    });
    assert.equal(fired.status, 202);
    const triggerRecord = await record(fired.body.activationId);
    const ruleLog = JSON.parse(triggerRecord.logs[0] ?? '{}') as { activationId: string; success: boolean };
    assert.equal(ruleLog.success, true);
    const actionRecord = await record(ruleLog.activationId);
    assert.deepEqual(actionRecord.response.result, { got: 'payload', fromTrigger: 'yes' });
    assert.equal(annotation(actionRecord, 'cause'), fired.body.activationId);
    await server.request('POST', '/api/v1/namespaces/_/rules/event-rule', { status: 'inactive' });
    assert.equal((await server.request('POST', '/api/v1/namespaces/_/triggers/event', {})).status, 204, 'no active rule');

    await server.deploy('on-tick', 'function main() { return {}; }');
    const cron = await server.request('PUT', '/api/v1/namespaces/_/triggers/every-second', {
      annotations: [{ key: 'cron', value: '* * * * * *' }],
    });
    assert.equal(cron.status, 200);
    await server.request('PUT', '/api/v1/namespaces/_/rules/tick-rule', { trigger: 'every-second', action: 'on-tick' });
    const count = async () =>
      (await server.request<unknown[]>('GET', '/api/v1/namespaces/_/activations?name=on-tick&limit=100')).body.length;
    await waitFor('cron firings', async () => ((await count()) >= 2 ? true : undefined), 10_000);
    // That a deleted trigger stops firing is checked in the trigger scheduler's unit tests.
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/triggers/every-second')).status, 200);
    const badCron = await server.request<{ error: string }>('PUT', '/api/v1/namespaces/_/triggers/bad', {
      annotations: [{ key: 'cron', value: 'every tuesday' }],
    });
    assert.equal(badCron.status, 400);
  });

  it('serves another namespace fairly while one floods the memory budget', async () => {
    const fair = await TestServer.start({ env: { ISOLA_MEMORY_BUDGET_MB: '256', ISOLA_PREWARM: 'isolate:0' } });
    try {
      const created = spawnSync(
        process.execPath,
        ['--import', 'tsx', 'src/cli/main.ts', 'namespace', 'create', 'other', '--data-dir', fair.dataDir],
        { encoding: 'utf8' },
      );
      const otherAuth = created.stdout.trim();
      await fair.deploy('hog', SLEEPER, { limits: { memory: 256 } });
      await fair.request(
        'PUT',
        '/api/v1/namespaces/_/actions/quick?overwrite=true',
        { exec: { kind: 'nodejs:20', code: SLEEPER }, limits: { memory: 256 } },
        { auth: otherAuth },
      );
      const flood = Array.from({ length: 6 }, (_, i) => fair.invoke<ActivationRecord>('hog', { ms: 300, i }));
      await waitFor('the flood to fill the queue', async () =>
        (await metric(/^isola_queue_length (\d+)/m, fair)) >= 5 ? true : undefined,
      );
      const quick = await fair.request<ActivationRecord>(
        'POST',
        '/api/v1/namespaces/_/actions/quick?blocking=true',
        { ms: 0 },
        { auth: otherAuth },
      );
      assert.equal(quick.body.response.status, 'success');
      const hogs = (await Promise.all(flood)).map((r) => r.body);
      // One hog runs at a time; the quiet namespace gets the next turn, not the flood's end.
      const before = hogs.filter((h) => h.start < quick.body.start).length;
      assert.ok(before <= 2, `${before} of the flood's 6 calls started before the other namespace's one`);
    } finally {
      await fair.dispose();
    }
  });
});
