import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

type Action = {
  name: string;
  version: string;
  exec: { kind: string; code?: string };
  annotations: { key: string; value: unknown }[];
  limits: Record<string, number>;
};

const HELLO =
  'function main(params) { console.log("hello", params.name); return { greeting: "Hello " + (params.name ?? "world") }; }';

describe('OpenWhisk API end to end', () => {
  let server: TestServer;
  before(async () => {
    server = await TestServer.start();
  });
  after(async () => {
    await server.dispose();
  });

  it('deploys an action and answers with the stored action in OpenWhisk shape', async () => {
    const res = await server.deploy('hello', HELLO, { limits: { memory: 128, timeout: 5000 } });
    assert.equal(res.status, 200);
    const action = res.body as unknown as Action;
    assert.equal(action.name, 'hello');
    assert.equal(action.version, '0.0.1');
    assert.equal(action.exec.kind, 'nodejs:20');
    assert.equal(annotation(action, 'isolation'), 'isolate');
    assert.deepEqual(action.limits, { memory: 128, timeout: 5000, concurrency: 1, logs: 10240 });
  });

  it('cold-starts the first invocation and reuses the warm instance for the next', async () => {
    const cold = await server.invoke<ActivationRecord>('hello', { name: 'Ada' });
    assert.equal(cold.status, 200);
    assert.deepEqual(cold.body.response, { status: 'success', success: true, result: { greeting: 'Hello Ada' } });
    assert.equal(annotation(cold.body, 'coldStart'), true);
    assert.equal(typeof annotation(cold.body, 'initTime'), 'number');
    assert.equal(typeof annotation(cold.body, 'waitTime'), 'number');
    assert.equal(annotation(cold.body, 'kind'), 'nodejs:20');
    assert.equal(annotation(cold.body, 'isolation'), 'isolate');
    assert.deepEqual(annotation(cold.body, 'limits'), { memory: 128, timeout: 5000, concurrency: 1, logs: 10240 });
    assert.match(cold.body.logs[0] ?? '', /^\d{4}-\d\d-\d\dT[\d:.]+Z stdout: hello Ada$/);
    assert.match(cold.body.activationId, /^[0-9a-f]{32}$/);
    assert.ok(cold.body.end >= cold.body.start && cold.body.duration === cold.body.end - cold.body.start);

    const warm = await server.invoke<ActivationRecord>('hello', { name: 'Bob' });
    assert.equal(annotation(warm.body, 'coldStart'), false);
    assert.equal(annotation(warm.body, 'initTime'), undefined, 'initTime is only on cold starts');
  });

  it('returns only the result with result=true', async () => {
    const res = await server.invoke('hello', { name: 'Cy' }, 'blocking=true&result=true');
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { greeting: 'Hello Cy' });
  });

  it('stores a new version on update, drains the old one and keeps the old version readable', async () => {
    const updated = await server.deploy('hello', 'function main() { return { v: 2 }; }');
    assert.equal((updated.body as unknown as Action).version, '0.0.2');
    const run = await server.invoke<ActivationRecord>('hello');
    assert.deepEqual(run.body.response.result, { v: 2 });
    assert.equal(run.body.version, '0.0.2');
    assert.equal(annotation(run.body, 'coldStart'), true, 'a new version starts a new instance');
    const old = await server.request<Action>('GET', '/api/v1/namespaces/_/actions/hello?version=0.0.1');
    assert.equal(old.status, 200);
    assert.match(old.body.exec.code ?? '', /Hello/);
    const versions = await server.request<Action[]>('GET', '/api/v1/namespaces/_/actions/hello/versions');
    assert.deepEqual(
      versions.body.map((v) => v.version),
      ['0.0.2', '0.0.1'],
    );
  });

  it('keeps what an update leaves out and merges annotations', async () => {
    await server.deploy('keep', HELLO, {
      limits: { memory: 64 },
      parameters: [{ key: 'name', value: 'Default' }],
      annotations: [{ key: 'team', value: 'a' }],
    });
    const res = await server.request<Action & { parameters: unknown[] }>(
      'PUT',
      '/api/v1/namespaces/_/actions/keep?overwrite=true',
      {
        annotations: [{ key: 'owner', value: 'b' }],
      },
    );
    assert.equal(res.status, 200);
    assert.equal(res.body.version, '0.0.2');
    assert.match(res.body.exec.code ?? '', /Hello/);
    assert.equal(res.body.limits.memory, 64);
    assert.deepEqual(res.body.parameters, [{ key: 'name', value: 'Default' }]);
    assert.equal(annotation(res.body, 'team'), 'a');
    assert.equal(annotation(res.body, 'owner'), 'b');
    const run = await server.invoke('keep', {}, 'blocking=true&result=true');
    assert.deepEqual(run.body, { greeting: 'Hello Default' }, 'default parameters reach the function');
    const overridden = await server.invoke('keep', { name: 'Given' }, 'blocking=true&result=true');
    assert.deepEqual(overridden.body, { greeting: 'Hello Given' }, 'invocation parameters win');
  });

  it('refuses to create over an existing action without overwrite', async () => {
    const res = await server.request('PUT', '/api/v1/namespaces/_/actions/hello', { exec: { kind: 'nodejs:20', code: HELLO } });
    assert.equal(res.status, 409);
  });

  it('lists actions without code and gets one with it', async () => {
    const list = await server.request<Action[]>('GET', '/api/v1/namespaces/_/actions');
    assert.equal(list.status, 200);
    assert.ok(list.body.some((a) => a.name === 'hello'));
    assert.ok(list.body.every((a) => a.exec.code === undefined));
    const one = await server.request<Action>('GET', '/api/v1/namespaces/guest/actions/hello');
    assert.equal(one.body.version, '0.0.2');
    assert.ok(one.body.exec.code);
  });

  it('lists activations and reads one, its logs and its result', async () => {
    const run = await server.invoke<ActivationRecord>('keep', { name: 'Logs' });
    const id = run.body.activationId;
    const list = await server.request<{ activationId: string; statusCode: number; logs?: unknown }[]>(
      'GET',
      '/api/v1/namespaces/_/activations?name=keep&limit=5',
    );
    assert.equal(list.status, 200);
    assert.equal(list.body[0]?.activationId, id, 'newest first');
    assert.equal(list.body[0]?.statusCode, 0);
    assert.equal(list.body[0]?.logs, undefined, 'lists carry no logs without docs=true');
    const docs = await server.request<ActivationRecord[]>('GET', '/api/v1/namespaces/_/activations?name=keep&limit=1&docs=true');
    assert.deepEqual(docs.body[0]?.response.result, { greeting: 'Hello Logs' });
    const one = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
    assert.equal(one.body.activationId, id);
    assert.equal(one.body.name, 'keep');
    const logs = await server.request<{ logs: string[] }>('GET', `/api/v1/namespaces/_/activations/${id}/logs`);
    assert.match(logs.body.logs.join('\n'), /stdout: hello Logs/);
    const result = await server.request<{ result: unknown; success: boolean; status: string }>(
      'GET',
      `/api/v1/namespaces/_/activations/${id}/result`,
    );
    assert.deepEqual(result.body.result, { greeting: 'Hello Logs' });
    assert.equal(result.body.status, 'success');
    const skipped = await server.request<{ activationId: string }[]>(
      'GET',
      '/api/v1/namespaces/_/activations?name=keep&limit=1&skip=1',
    );
    assert.notEqual(skipped.body[0]?.activationId, id);
    const missing = await server.request('GET', `/api/v1/namespaces/_/activations/${'0'.repeat(32)}`);
    assert.equal(missing.status, 404);
  });

  it('accepts a non-blocking invoke with 202 and stores its record once it ran', async () => {
    const res = await server.invoke<{ activationId: string }>('hello', {}, 'blocking=false');
    assert.equal(res.status, 202);
    assert.match(res.body.activationId, /^[0-9a-f]{32}$/);
    const record = await waitFor('the activation record', async () => {
      const r = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${res.body.activationId}`);
      return r.status === 200 ? r.body : undefined;
    });
    assert.equal(record.response.success, true);
  });

  it('deletes an action; invoking it then is a 404', async () => {
    await server.deploy('doomed', HELLO);
    const del = await server.request('DELETE', '/api/v1/namespaces/_/actions/doomed');
    assert.equal(del.status, 200);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions/doomed')).status, 404);
    assert.equal((await server.invoke('doomed')).status, 404);
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/actions/doomed')).status, 404);
  });

  describe('authentication and namespaces', () => {
    it('answers 401 without credentials or with a wrong key', async () => {
      const none = await server.request<{ error: string; code: string }>('GET', '/api/v1/namespaces/_/actions', undefined, {
        auth: null,
      });
      assert.equal(none.status, 401);
      assert.match(none.body.code, /^[0-9a-f]{32}$/, 'errors carry the request id');
      const uuid = server.auth.split(':')[0];
      const wrong = await server.request('GET', '/api/v1/namespaces/_/actions', undefined, { auth: `${uuid}:not-the-key` });
      assert.equal(wrong.status, 401);
    });

    it('keeps namespaces apart', async () => {
      const created = spawnSync(
        process.execPath,
        ['--import', 'tsx', 'src/cli/main.ts', 'namespace', 'create', 'team-b', '--data-dir', server.dataDir],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(created.status, 0, created.stderr);
      const otherAuth = created.stdout.trim();
      assert.match(otherAuth, /^[0-9a-f-]{36}:\S{64}$/);
      const mine = await server.request<Action[]>('GET', '/api/v1/namespaces/_/actions', undefined, { auth: otherAuth });
      assert.equal(mine.status, 200);
      assert.deepEqual(mine.body, [], "another namespace's actions are not listed");
      const theirs = await server.request('GET', '/api/v1/namespaces/guest/actions/hello', undefined, { auth: otherAuth });
      assert.equal(theirs.status, 403);
      const invoke = await server.request(
        'POST',
        '/api/v1/namespaces/guest/actions/hello?blocking=true',
        {},
        { auth: otherAuth },
      );
      assert.equal(invoke.status, 403);
      const own = await server.request('GET', '/api/v1/namespaces/team-b/actions/hello', undefined, { auth: otherAuth });
      assert.equal(own.status, 404, 'the same name in its own namespace does not exist');
      const activations = await server.request<unknown[]>('GET', '/api/v1/namespaces/_/activations', undefined, {
        auth: otherAuth,
      });
      assert.deepEqual(activations.body, []);
    });
  });

  describe('validation at the door', () => {
    const put = (name: string, body: unknown, raw?: string) =>
      server.request<{ error: string; code: string }>(
        'PUT',
        `/api/v1/namespaces/_/actions/${name}?overwrite=true`,
        body,
        raw ? { raw, headers: { 'content-type': 'application/json' } } : {},
      );

    it('rejects malformed JSON with 400', async () => {
      const res = await put('bad', undefined, '{"exec": {');
      assert.equal(res.status, 400);
      assert.match(res.body.error, /malformed/);
    });
    it('rejects unknown kinds, isolations, fields and bad names', async () => {
      assert.match((await put('x', { exec: { kind: 'cobol', code: 'x' } })).body.error, /kind "cobol" is not supported/);
      const iso = await put('x', {
        exec: { kind: 'nodejs:20', code: HELLO },
        annotations: [{ key: 'isolation', value: 'docker' }],
      });
      assert.equal(iso.status, 400);
      assert.match(iso.body.error, /isolation annotation must be one of/);
      const unknown = await put('x', { exec: { kind: 'nodejs:20', code: HELLO }, colour: 'red' });
      assert.equal(unknown.status, 400);
      assert.match(unknown.body.error, /colour/);
      const badName = await put('-bad', { exec: { kind: 'nodejs:20', code: HELLO } });
      assert.equal(badName.status, 400);
      assert.match(badName.body.error, /name "-bad" is not valid/);
    });
    it('rejects limits out of range, naming the limit', async () => {
      const res = await put('x', { exec: { kind: 'nodejs:20', code: HELLO }, limits: { timeout: 10 } });
      assert.equal(res.status, 400);
      assert.match(res.body.error, /limits\.timeout must be an integer from 100 to 300000/);
      const low = await put('x', {
        exec: { kind: 'nodejs:20', code: HELLO },
        limits: { memory: 32 },
        annotations: [{ key: 'isolation', value: 'process' }],
      });
      assert.match(low.body.error, /at least 64 MB under isolation "process"/);
    });
    it('answers 413 for a body over the limit and keeps serving', async () => {
      const big = { exec: { kind: 'nodejs:20', code: `// ${'x'.repeat(2 * 1024 * 1024)}\n${HELLO}` } };
      const res = await server.request<{ error: string }>('POST', '/api/v1/namespaces/_/actions/hello?blocking=true', big);
      assert.equal(res.status, 413);
      assert.match(res.body.error, /larger than/);
      assert.equal((await server.invoke('hello')).status, 200);
    });
    it('rejects invocation parameters that are not an object', async () => {
      const res = await server.request('POST', '/api/v1/namespaces/_/actions/hello?blocking=true', [1, 2]);
      assert.equal(res.status, 400);
    });
    it('answers unknown routes with a JSON 404', async () => {
      const res = await server.request<{ error: string }>('GET', '/api/v1/nothing-here');
      assert.equal(res.status, 404);
      assert.ok(res.body.error);
    });
  });

  describe('other doors', () => {
    it('serves web actions only when exported, turning the result into the response', async () => {
      await server.deploy(
        'page',
        'function main(p) { return { statusCode: 201, headers: { "x-who": p.who }, body: "<p>" + p.__ow_method + " " + p.who + "</p>" }; }',
        {
          annotations: [{ key: 'web-export', value: true }],
        },
      );
      const res = await fetch(`${server.url}/api/v1/web/guest/default/page?who=web`);
      assert.equal(res.status, 201);
      assert.equal(res.headers.get('x-who'), 'web');
      assert.equal(await res.text(), '<p>get web</p>');
      const json = await fetch(`${server.url}/api/v1/web/guest/default/page.json`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"who":"json"}',
      });
      assert.equal(json.status, 200);
      assert.equal(((await json.json()) as { statusCode: number }).statusCode, 201);
      const hidden = await fetch(`${server.url}/api/v1/web/guest/default/hello`);
      assert.equal(hidden.status, 404, 'an action without web-export is not reachable');
    });

    it('serves OpenFaaS invocations, sync and async', async () => {
      const auth = `Basic ${Buffer.from(server.auth).toString('base64')}`;
      const res = await fetch(`${server.url}/function/hello`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: '{}',
      });
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { v: 2 });
      assert.match(res.headers.get('x-call-id') ?? '', /^[0-9a-f]{32}$/);
      const async = await fetch(`${server.url}/async-function/hello`, { method: 'POST', headers: { authorization: auth } });
      assert.equal(async.status, 202);
      assert.match(async.headers.get('x-call-id') ?? '', /^[0-9a-f]{32}$/);
      const anonymous = await fetch(`${server.url}/function/hello`, { method: 'POST' });
      assert.equal(anonymous.status, 401);
    });

    it('serves Lambda Invoke signed with AWS Signature V4', async () => {
      const aws4 = (await import('aws4')).default;
      const [accessKeyId, secretAccessKey] = server.auth.split(':') as [string, string];
      const url = new URL(server.url);
      const sign = (body: string, headers: Record<string, string> = {}, secret = secretAccessKey) =>
        aws4.sign(
          {
            host: url.host,
            path: '/2015-03-31/functions/hello/invocations',
            method: 'POST',
            service: 'lambda',
            region: 'us-east-1',
            body,
            headers,
          },
          { accessKeyId, secretAccessKey: secret },
        );
      const call = (opts: ReturnType<typeof sign>) =>
        fetch(`${server.url}${opts.path}`, {
          method: 'POST',
          headers: opts.headers as Record<string, string>,
          body: opts.body as string,
        });
      const ok = await call(sign('{"name":"lambda"}'));
      assert.equal(ok.status, 200);
      assert.deepEqual(await ok.json(), { v: 2 });
      assert.equal(ok.headers.get('x-amz-executed-version'), '0.0.2');
      const event = await call(sign('{}', { 'X-Amz-Invocation-Type': 'Event' }));
      assert.equal(event.status, 202);
      const forged = await call(sign('{}', {}, 'wrong-secret'));
      assert.equal(forged.status, 401);
      await server.deploy('thrower', 'function main() { throw new Error("lambda boom"); }');
      const failed = await call({ ...sign('{}'), path: '/2015-03-31/functions/thrower/invocations' });
      assert.equal(failed.status, 401, 'the signature covers the path');
      const signedThrower = aws4.sign(
        {
          host: url.host,
          path: '/2015-03-31/functions/thrower/invocations',
          method: 'POST',
          service: 'lambda',
          region: 'us-east-1',
          body: '{}',
        },
        { accessKeyId, secretAccessKey },
      );
      const thrown = await call(signedThrower);
      assert.equal(thrown.status, 200);
      assert.equal(thrown.headers.get('x-amz-function-error'), 'Unhandled');
      assert.equal(((await thrown.json()) as { errorMessage: string }).errorMessage, 'lambda boom');
    });
  });

  it('serves health and Prometheus metrics', async () => {
    const health = await server.request<{ status: string; backends: string[] }>('GET', '/healthz', undefined, { auth: null });
    assert.equal(health.body.status, 'ok');
    assert.ok(health.body.backends.includes('isolate'));
    const text = await server.metrics();
    assert.match(text, /isola_activations_total\{isolation="isolate",namespace="guest",action="hello",status="success"\} \d+/);
    assert.match(text, /isola_starts_total\{isolation="isolate",namespace="guest",action="hello",start="(cold|prewarm)"\} \d+/);
    assert.match(text, /isola_instances\{isolation="isolate",state="idle"\} \d+/);
  });

  it('works with the openwhisk npm client', async () => {
    const openwhisk = (await import('openwhisk')).default;
    const ow = openwhisk({ apihost: server.url, api_key: server.auth });
    await ow.actions.create({ name: 'owclient', action: 'function main(p) { return { sum: p.a + p.b }; }' });
    const listed = await ow.actions.list();
    assert.ok(listed.some((a: { name?: string }) => a.name === 'owclient'));
    const result = await ow.actions.invoke({ name: 'owclient', blocking: true, result: true, params: { a: 2, b: 3 } });
    assert.deepEqual(result, { sum: 5 });
    const activation = await ow.actions.invoke({ name: 'owclient', blocking: true, params: { a: 1, b: 1 } });
    const fetched = await ow.activations.get({ name: activation.activationId });
    assert.deepEqual(fetched.response?.result, { sum: 2 });
    const updated = await ow.actions.update({ name: 'owclient', action: 'function main(p) { return { product: p.a * p.b }; }' });
    assert.equal(updated.version, '0.0.2');
    assert.deepEqual(await ow.actions.invoke({ name: 'owclient', blocking: true, result: true, params: { a: 2, b: 3 } }), {
      product: 6,
    });
    const activations = await ow.activations.list({ name: 'owclient' });
    assert.ok(activations.length >= 3);
    await ow.actions.delete({ name: 'owclient' });
    await assert.rejects(ow.actions.get({ name: 'owclient' }));
  });
});
