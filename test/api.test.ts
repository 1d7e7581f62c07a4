import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { resolveServerConfig } from '../src/config.js';
import { DEFAULT_LIMITS } from '../src/core/limits.js';
import type { ActivationRecord } from '../src/core/types.js';
import { Platform } from '../src/platform/platform.js';
import { annotation, postDeclaredBody, TestServer, waitFor } from './helpers/server.js';

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
      // Declared, not sent whole: the server may close once it has answered (see postDeclaredBody).
      const basic = `Basic ${Buffer.from(server.auth).toString('base64')}`;
      const res = await postDeclaredBody(
        server.url,
        '/api/v1/namespaces/_/actions/hello?blocking=true',
        { 'content-type': 'application/json', authorization: basic },
        2 * 1024 * 1024 + 100,
      );
      assert.equal(res.status, 413);
      assert.match((JSON.parse(res.text) as { error: string }).error, /larger than/);
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
      assert.equal(ok.headers.get('x-amz-executed-version'), '$LATEST');
      const event = await call(sign('{}', { 'X-Amz-Invocation-Type': 'Event' }));
      assert.equal(event.status, 202);
      const forged = await call(sign('{}', {}, 'wrong-secret'));
      assert.equal(forged.status, 403, 'Lambda answers a bad signature 403');
      assert.equal(forged.headers.get('x-amzn-errortype'), 'InvalidSignatureException');
      await server.deploy('thrower', 'function main() { throw new Error("lambda boom"); }');
      const failed = await call({ ...sign('{}'), path: '/2015-03-31/functions/thrower/invocations' });
      assert.equal(failed.status, 403, 'the signature covers the path');
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

describe('hardening: bad input is a 4xx, a misbehaving function is its own failure', () => {
  let server: TestServer;
  const ECHO = 'function main(p) { return { ok: true, keys: Object.keys(p).sort() }; }';
  const basic = () => `Basic ${Buffer.from(server.auth).toString('base64')}`;
  type ErrorBody = { error: string; code: string; activationId?: string };
  const put = (name: string, body: unknown) =>
    server.request<ErrorBody>('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, body);
  const exists = async (name: string) => (await server.request('GET', `/api/v1/namespaces/_/actions/${name}`)).status === 200;
  const activation = (id: string) =>
    waitFor('the activation record', async () => {
      const r = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
      return r.status === 200 ? r.body : undefined;
    });

  /** A request sent exactly as written: fetch would normalise `..` and `%2e` away. */
  const rawRequest = (method: string, path: string, headers: Record<string, string>, body?: string) =>
    new Promise<{ status: number; body: ErrorBody }>((resolve, reject) => {
      const url = new URL(server.url);
      const payload = body === undefined ? undefined : Buffer.from(body);
      const req = httpRequest(
        {
          host: url.hostname,
          port: url.port,
          method,
          path,
          headers: { ...headers, ...(payload ? { 'content-length': String(payload.length) } : {}) },
        },
        (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => {
            text += chunk.toString();
          });
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as ErrorBody }));
        },
      );
      req.on('error', reject);
      req.end(payload);
    });

  before(async () => {
    server = await TestServer.start({
      env: { ISOLA_MEMORY_BUDGET_MB: '1024', ISOLA_REQUEST_TIMEOUT: '1500ms', ISOLA_HEADERS_TIMEOUT: '1s' },
    });
    assert.equal((await server.deploy('echo', ECHO)).status, 200);
  });
  after(async () => {
    await server.dispose();
  });

  it('refuses kinds named like Object.prototype members with 400, storing nothing', async () => {
    for (const kind of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const res = await put('protokind', { exec: { kind, code: ECHO } });
      assert.equal(res.status, 400, `${kind}: ${JSON.stringify(res.body)}`);
      assert.match(res.body.error, /is not supported/);
    }
    assert.equal(await exists('protokind'), false);
  });

  it('refuses keep-alive policies with zero, negative or absurd durations, storing nothing', async () => {
    for (const value of ['hybrid:0ms', 'fixed:0', 'fixed:-1s', 'fixed:0.1ms', 'fixed:2400h', 'hybrid:2h', 'fixed:']) {
      const res = await put('policy', { exec: { kind: 'nodejs:20', code: ECHO }, annotations: [{ key: 'keepAlive', value }] });
      assert.equal(res.status, 400, `${value}: ${JSON.stringify(res.body)}`);
      assert.equal(await exists('policy'), false, `${value} was stored`);
    }
    const fine = await put('policy', {
      exec: { kind: 'nodejs:20', code: ECHO },
      annotations: [{ key: 'keepAlive', value: 'hybrid:50ms' }],
    });
    assert.equal(fine.status, 200);
    assert.equal((await server.invoke('policy')).status, 200);
  });

  it('refuses an action that needs more memory than the whole budget, naming both', async () => {
    const res = await put('hungry', { exec: { kind: 'nodejs:20', code: ECHO }, limits: { memory: 2048 } });
    assert.equal(res.status, 400);
    assert.match(res.body.error, /2048 MB exceeds this server's memory budget of 1024 MB/);
    assert.equal(await exists('hungry'), false);
  });

  it('refuses require-whisk-auth values that are not true, false or a secret', async () => {
    for (const value of ['', { secret: 'x' }, [1], 1.5]) {
      const res = await put('guarded', {
        exec: { kind: 'nodejs:20', code: ECHO },
        annotations: [
          { key: 'web-export', value: true },
          { key: 'require-whisk-auth', value },
        ],
      });
      assert.equal(res.status, 400, `${JSON.stringify(value)}: ${JSON.stringify(res.body)}`);
    }
    assert.equal(await exists('guarded'), false, 'an empty secret would have let anyone in');
  });

  it('checks a web action secret: the right one passes, a wrong or missing one is 401', async () => {
    await server.deploy('secret', ECHO, {
      annotations: [
        { key: 'web-export', value: true },
        { key: 'require-whisk-auth', value: 's3cret' },
      ],
    });
    const call = (secret?: string) =>
      fetch(`${server.url}/api/v1/web/guest/default/secret.json`, {
        headers: secret === undefined ? {} : { 'x-require-whisk-auth': secret },
      });
    assert.equal((await call('s3cret')).status, 200);
    assert.equal((await call('s3creT')).status, 401);
    assert.equal((await call('s3cret-and-more')).status, 401);
    assert.equal((await call()).status, 401);
  });

  it('answers a SigV4-signed Lambda call with a malformed query, or with odd signed headers, with a 4xx', async () => {
    const aws4 = (await import('aws4')).default;
    const [accessKeyId, secretAccessKey] = server.auth.split(':') as [string, string];
    const url = new URL(server.url);
    for (const query of ['Qualifier=%zz', 'Qualifier=%', 'Qualifier=%ff%fe&x=1%2']) {
      const path = `/2015-03-31/functions/echo/invocations?${query}`;
      const signed = aws4.sign(
        { host: url.host, path, method: 'POST', service: 'lambda', region: 'us-east-1', body: '{}' },
        { accessKeyId, secretAccessKey },
      );
      // Sent with the query as written (aws4 would re-encode it), as a careless client might.
      const res = await fetch(`${server.url}${path}`, {
        method: 'POST',
        headers: signed.headers as Record<string, string>,
        body: '{}',
      });
      const body = (await res.json()) as ErrorBody;
      assert.equal(res.status, 404, `${query}: ${JSON.stringify(body)}`);
      assert.match(body.error, /Function not found/, 'the signature matched; the version does not exist');
    }
    const forged = await fetch(`${server.url}/2015-03-31/functions/echo/invocations`, {
      method: 'POST',
      headers: {
        authorization: `AWS4-HMAC-SHA256 Credential=${accessKeyId}/20260101/us-east-1/lambda/aws4_request, SignedHeaders=constructor;__proto__;host, Signature=${'0'.repeat(64)}`,
        'x-amz-date': new Date().toISOString().replace(/[-:]|\.\d{3}/g, ''),
      },
      body: '{}',
    });
    assert.equal(forged.status, 403);
  });

  it('turns web action results HTTP cannot carry into a 502 naming the activation, recorded as the function error', async () => {
    await server.deploy('shaper', 'function main(p) { return JSON.parse(p.r); }', {
      annotations: [{ key: 'web-export', value: true }],
    });
    const cases: [unknown, RegExp][] = [
      [{ statusCode: 100 }, /statusCode 100/],
      [{ statusCode: 199, body: 'x' }, /statusCode 199/],
      [{ statusCode: 'teapot' }, /statusCode "teapot"/],
      [{ headers: { 'bad name': 'x' }, body: 'x' }, /header name "bad name" is not an HTTP token/],
      [{ headers: { '': 'x' }, body: 'x' }, /header name "" is not an HTTP token/],
      [{ headers: { 'x-a': 'a\r\nb' }, body: 'x' }, /value of header x-a has characters/],
      [{ headers: { 'x-a': '€' }, body: 'x' }, /value of header x-a has characters/],
      [{ headers: { 'x-a': { o: 1 } }, body: 'x' }, /value of header x-a must be a string/],
      [{ headers: ['x'], body: 'x' }, /headers must be an object/],
      [{ headers: { 'content-type': 'image/png' }, body: '!!not base64' }, /must be base64/],
    ];
    for (const [result, error] of cases) {
      const res = await fetch(`${server.url}/api/v1/web/guest/default/shaper?r=${encodeURIComponent(JSON.stringify(result))}`, {
        signal: AbortSignal.timeout(15_000),
      });
      const body = (await res.json()) as ErrorBody;
      assert.equal(res.status, 502, `${JSON.stringify(result)}: ${JSON.stringify(body)}`);
      assert.match(body.error, error);
      assert.match(body.activationId ?? '', /^[0-9a-f]{32}$/);
      const record = await activation(body.activationId as string);
      assert.equal(record.response.status, 'action developer error');
      assert.match((record.response.result as { error: string }).error, error);
    }
    const html = await fetch(`${server.url}/api/v1/web/guest/default/shaper.html?r=${encodeURIComponent('{"html":{"a":1}}')}`);
    assert.equal(html.status, 502);
  });

  it('sends well-formed web action results: objects as JSON, binary bodies decoded, its own framing headers left out', async () => {
    const send = async (result: unknown) => {
      const res = await fetch(`${server.url}/api/v1/web/guest/default/shaper?r=${encodeURIComponent(JSON.stringify(result))}`);
      return { res, body: Buffer.from(await res.arrayBuffer()) };
    };
    const json = await send({ headers: { 'content-type': 'text/plain' }, body: { a: 1 } });
    assert.equal(json.res.status, 200);
    assert.equal(json.body.toString(), '{"a":1}');
    const png = await send({
      statusCode: 201,
      headers: { 'Content-Type': 'image/png' },
      body: Buffer.from('png!').toString('base64'),
    });
    assert.deepEqual([png.res.status, png.res.headers.get('content-type'), png.body.toString()], [201, 'image/png', 'png!']);
    const framed = await send({
      headers: { 'content-length': '100', 'transfer-encoding': 'chunked', 'set-cookie': ['a=1', 'b=2'] },
      body: 'hi',
    });
    assert.equal(framed.res.status, 200);
    assert.equal(framed.res.headers.get('transfer-encoding'), null);
    assert.equal(framed.res.headers.get('content-length'), '2');
    assert.deepEqual(framed.res.headers.getSetCookie(), ['a=1', 'b=2']);
    assert.equal(framed.body.toString(), 'hi');
  });

  it('answers an OpenFaaS call whose function failed with 502 and the activation id, not 500', async () => {
    await server.deploy('thrower', 'function main() { throw new Error("faas boom"); }');
    const res = await fetch(`${server.url}/function/thrower`, { method: 'POST', headers: { authorization: basic() } });
    const body = (await res.json()) as ErrorBody;
    assert.equal(res.status, 502);
    assert.equal(body.error, 'faas boom');
    assert.match(body.activationId ?? '', /^[0-9a-f]{32}$/);
    assert.equal(res.headers.get('x-call-id'), body.activationId);
  });

  it('honours the timeout of a blocking invoke: 202 with the activation id once it passes', async () => {
    await server.deploy(
      'sleeper',
      'async function main(p) { await new Promise((r) => setTimeout(r, p.ms)); return { slept: p.ms }; }',
    );
    const late = await server.invoke<{ activationId: string }>('sleeper', { ms: 3000 }, 'blocking=true&timeout=300');
    assert.equal(late.status, 202);
    assert.match(late.body.activationId, /^[0-9a-f]{32}$/);
    const record = await activation(late.body.activationId);
    assert.deepEqual(record.response.result, { slept: 3000 });
    const quick = await server.invoke('sleeper', { ms: 1 }, 'blocking=true&result=true&timeout=20000');
    assert.deepEqual([quick.status, quick.body], [200, { slept: 1 }]);
    for (const timeout of ['abc', '-1', '1.5', '60001', '99999999999']) {
      const res = await server.invoke<ErrorBody>('sleeper', { ms: 1 }, `blocking=true&timeout=${timeout}`);
      assert.equal(res.status, 400, `timeout=${timeout}`);
      assert.match(res.body.error, /timeout/);
    }
  });

  it('refuses JSON nested deeper than 512 levels with 400 at every door, and takes 512', async () => {
    const nested = (depth: number) => `${'['.repeat(depth - 1)}{"deep":true}${']'.repeat(depth - 1)}`;
    await server.deploy(
      'depth',
      'function main(p) { let d = 0, v = p.v; while (Array.isArray(v)) { d++; v = v[0]; } return { d }; }',
      {
        annotations: [{ key: 'web-export', value: true }],
      },
    );
    const ok = await server.request('POST', '/api/v1/namespaces/_/actions/depth?blocking=true&result=true', undefined, {
      raw: `{"v":${nested(511)}}`,
      headers: { 'content-type': 'application/json' },
    });
    assert.deepEqual([ok.status, ok.body], [200, { d: 510 }]);
    const json = { 'content-type': 'application/json', authorization: basic() };
    for (const depth of [513, 5_000, 100_000]) {
      const body = `{"v":${nested(depth)}}`;
      const doors: [string, string, RequestInit][] = [
        ['invoke', '/api/v1/namespaces/_/actions/depth?blocking=true', { method: 'POST', headers: json, body }],
        [
          'deploy',
          '/api/v1/namespaces/_/actions/depth2',
          { method: 'PUT', headers: json, body: `{"parameters":[{"key":"v","value":${nested(depth)}}]}` },
        ],
        ['web', '/api/v1/web/guest/default/depth.json', { method: 'POST', headers: json, body }],
        ['lambda', '/2015-03-31/functions/depth/invocations', { method: 'POST', headers: json, body }],
        ['openfaas', '/function/depth', { method: 'POST', headers: json, body }],
      ];
      for (const [door, path, init] of doors) {
        const res = await fetch(`${server.url}${path}`, init);
        const answer = (await res.json()) as ErrorBody;
        assert.equal(res.status, 400, `${door} at depth ${depth}: ${JSON.stringify(answer)}`);
        assert.match(answer.error, /nested more than 512 levels/);
      }
    }
    assert.equal(await exists('depth2'), false);
  });

  it('answers names with .., %2e, NUL, invalid UTF-8 or 10,000 characters with a 4xx in the API error shape', async () => {
    const names = ['..', '%2e%2e', '%2E', '.', 'a%00b', '%00', '%ff%fe', '%c3%28', '%zz', 'x'.repeat(10_000), 'x'.repeat(300)];
    for (const name of names) {
      for (const [method, path] of [
        ['GET', `/api/v1/namespaces/_/actions/${name}`],
        ['PUT', `/api/v1/namespaces/_/actions/${name}`],
        ['POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`],
        ['DELETE', `/api/v1/namespaces/_/triggers/${name}`],
        ['GET', `/api/v1/namespaces/_/rules/${name}`],
        ['POST', `/2015-03-31/functions/${name}/invocations`],
        ['POST', `/function/${name}`],
        ['GET', `/api/v1/web/guest/default/${name}`],
      ] as const) {
        const body = method === 'PUT' ? JSON.stringify({ exec: { kind: 'nodejs:20', code: ECHO } }) : undefined;
        const res = await rawRequest(method, path, { authorization: basic(), 'content-type': 'application/json' }, body);
        assert.ok(res.status >= 400 && res.status < 500, `${method} ${path.slice(0, 80)}: ${res.status}`);
        assert.match(
          res.body.code ?? '',
          /^[0-9a-f]{32}$/,
          `${method} ${path.slice(0, 80)}: ${JSON.stringify(res.body).slice(0, 200)}`,
        );
      }
    }
    const listed = await server.request<{ name: string }[]>('GET', '/api/v1/namespaces/_/actions?limit=200');
    assert.ok(
      listed.body.every((a) => /^\w[\w@ .-]*$/.test(a.name)),
      'no odd name was stored',
    );
  });

  it('closes a connection whose body trickles in slower than allowed, and keeps answering others', async () => {
    await server.deploy(
      'sleeper',
      'async function main(p) { await new Promise((r) => setTimeout(r, p.ms)); return { slept: p.ms }; }',
    );
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
    let closed = false;
    let answer = '';
    socket.on('data', (chunk) => {
      answer += chunk.toString();
    });
    socket.on('close', () => {
      closed = true;
    });
    socket.on('error', () => {});
    socket.write(
      'PUT /api/v1/namespaces/_/actions/trickle HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n' +
        `Authorization: ${basic()}\r\nContent-Length: 1000\r\n\r\n{`,
    );
    const drip = setInterval(() => {
      if (!socket.destroyed) socket.write(' ');
    }, 100);
    try {
      // Meanwhile everyone else is served.
      const health = await server.request('GET', '/healthz', undefined, { auth: null });
      assert.equal(health.status, 200);
      await waitFor('the trickling connection to be closed', async () => (closed ? true : undefined), 15_000);
    } finally {
      clearInterval(drip);
      socket.destroy();
    }
    assert.match(answer, /^HTTP\/1\.1 408 /);
    assert.match(answer, /Connection: close/i);
    assert.equal(await exists('trickle'), false);
    // A call that waits longer than the request timeout is not cut: the bound is on receiving it.
    const slow = await server.invoke('sleeper', { ms: 2500 }, 'blocking=true&result=true');
    assert.deepEqual([slow.status, slow.body], [200, { slept: 2500 }]);
  });

  it('answers a request that is not HTTP with 400 and says the connection closes', async () => {
    const socket = connect(Number(new URL(server.url).port), '127.0.0.1');
    let answer = '';
    socket.on('data', (chunk) => {
      answer += chunk.toString();
    });
    const ended = new Promise((resolve) => socket.on('close', resolve));
    socket.on('error', () => {});
    socket.write('GET /\u00ff\u00fe HTTP/1.1\r\nHost: x\r\n\r\n', 'latin1');
    await ended;
    assert.match(answer, /^HTTP\/1\.1 400 /);
    assert.match(answer, /Connection: close/i);
    assert.match(answer, /"code":"[0-9a-f]{32}"/);
  });
});

describe('platform, in process', () => {
  it('clears the blocking-wait timer when the run itself fails', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'isola-platform-'));
    const platform = await Platform.start(resolveServerConfig({ dataDir, backends: 'isolate', prewarm: 'isolate:0' }, {}));
    try {
      const action = await platform.deploy(
        {
          namespace: 'guest',
          name: 'x',
          exec: { kind: 'nodejs:20', code: 'function main() { return {}; }', binary: false },
          limits: DEFAULT_LIMITS,
          parameters: [],
          annotations: [],
          isolation: 'isolate',
        },
        true,
      );
      // The run fails as if the store could not record it.
      platform.invoker.invoke = () => Promise.reject(new Error('the store is gone'));
      const timers = () => process.getActiveResourcesInfo().filter((resource) => resource === 'Timeout').length;
      const before = timers();
      const command = {
        function: { namespace: action.namespace, name: action.name },
        params: {},
        mode: 'sync',
        door: 'openwhisk',
        caller: { kind: 'namespace', namespace: 'guest' },
      } as const;
      await assert.rejects(platform.invoke(command), /the store is gone/);
      assert.equal(timers(), before, 'no timer left behind');
    } finally {
      await platform.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
