import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { OpenFaasFunctionStatus } from '../src/api/openfaas/system.js';
import { annotation, postDeclaredBody, TestServer, waitFor } from './helpers/server.js';
import { freePort } from './helpers/server-process.js';

// Echoes what it was given, or answers the response `params.respond` describes.
const ECHO = 'function main(params) { return params.respond ?? params; }';
const HTTP =
  'function main(p) { return { statusCode: 201, headers: { "content-type": "text/csv", "x-made-by": "fn" }, body: "a,b\\n1,2" }; }';
const BINARY =
  'function main(p) { return { statusCode: 200, headers: { "content-type": "image/png" }, body: "iVBORw==", isBase64Encoded: true }; }';
const ODD = 'function main(p) { return { statusCode: 99999, headers: "nope", body: 5 }; }';
const THROWS = 'function main() { throw new Error("boom"); }';
// Names the instance it runs on (made once per instance), after waiting `params.ms`.
const INSTANCE =
  'const born = Math.random().toString(36).slice(2); async function main(p) { await new Promise((r) => setTimeout(r, p.ms ?? 0)); return { born }; }';

interface Received {
  headers: IncomingHttpHeaders;
  body: string;
}

/** A callback receiver on loopback: records what it is sent, and answers `failStatus` to the first `failFirst` posts. */
async function receiver(
  failFirst = 0,
  failStatus = 503,
): Promise<{ url: string; received: Received[]; attempts: () => number; close: () => Promise<void> }> {
  const received: Received[] = [];
  let attempts = 0;
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      attempts++;
      if (attempts <= failFirst) {
        response.writeHead(failStatus).end();
        return;
      }
      received.push({ headers: request.headers, body: Buffer.concat(chunks).toString('utf8') });
      response.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/done?x=1`,
    received,
    attempts: () => attempts,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

describe('OpenFaaS gateway end to end', () => {
  let server: TestServer;
  let basic: string;
  const call = (path: string, init: RequestInit = {}) =>
    fetch(`${server.url}${path}`, { ...init, headers: { authorization: basic, ...(init.headers ?? {}) } });
  const names = async () =>
    ((await (await call('/system/functions')).json()) as OpenFaasFunctionStatus[]).map((f) => f.name).sort();

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_LOG_LEVEL: 'info' } });
    basic = `Basic ${Buffer.from(server.auth).toString('base64')}`;
    for (const [name, code] of [
      ['echo', ECHO],
      ['http', HTTP],
      ['binary', BINARY],
      ['odd', ODD],
      ['throws', THROWS],
    ] as const) {
      assert.equal((await server.deploy(name, code)).status, 200);
    }
  });
  after(async () => {
    await server.dispose();
  });

  describe('/function/{name}', () => {
    it("reads `curl -d '{...}'` as JSON, and passes other bodies on raw with their content type", async () => {
      // What `curl -d '{"name":"Ada"}'` sends.
      const form = await call('/function/echo', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: '{"name":"Ada"}',
      });
      assert.equal(form.status, 200);
      const params = (await form.json()) as Record<string, unknown>;
      assert.equal(params.name, 'Ada');
      assert.equal(params['{"name":"Ada"}'], undefined);

      const text = (await (
        await call('/function/echo/sub?q=1', { method: 'PUT', headers: { 'content-type': 'text/csv' }, body: 'a,b\n1,2' })
      ).json()) as Record<string, unknown>;
      assert.equal(text.__ow_body, 'a,b\n1,2');
      assert.equal((text.__ow_headers as Record<string, string>)['content-type'], 'text/csv');
      assert.equal(text.__ow_method, 'put');
      assert.equal(text.__ow_path, '/sub');
      assert.equal(text.q, '1');

      const bytes = Buffer.from([0, 1, 2, 255]);
      const binary = (await (
        await call('/function/echo', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes })
      ).json()) as Record<string, unknown>;
      assert.equal(binary.__ow_body, bytes.toString('base64'));
    });

    it('answers the response a {statusCode, headers, body} result describes', async () => {
      const csv = await call('/function/http', { method: 'POST' });
      assert.equal(csv.status, 201);
      assert.equal(csv.headers.get('content-type'), 'text/csv');
      assert.equal(csv.headers.get('x-made-by'), 'fn');
      assert.equal(await csv.text(), 'a,b\n1,2');
      assert.match(csv.headers.get('x-call-id') ?? '', /^[0-9a-f]{32}$/);

      const png = await call('/function/binary', { method: 'GET' });
      assert.equal(png.status, 200);
      assert.equal(png.headers.get('content-type'), 'image/png');
      assert.deepEqual([...new Uint8Array(await png.arrayBuffer())], [137, 80, 78, 71]);

      const lambdaStyle = await call('/function/echo', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ respond: { statusCode: 404, body: { missing: true } } }),
      });
      assert.equal(lambdaStyle.status, 404);
      assert.deepEqual(await lambdaStyle.json(), { missing: true });
    });

    it('sends a result HTTP cannot carry as JSON 200, never a 5xx', async () => {
      const odd = await call('/function/odd', { method: 'POST' });
      assert.equal(odd.status, 200);
      assert.deepEqual(await odd.json(), { statusCode: 99999, headers: 'nope', body: 5 });
      // (A result that is not a dictionary at all is the function's error on every door: see the failure test.)
      for (const respond of [[1], { statusCode: 'abc' }, { statusCode: 200, headers: { 'bad name': 'x' }, body: 'x' }]) {
        const response = await call('/function/echo', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ respond }),
        });
        assert.equal(response.status, 200, JSON.stringify(respond));
        assert.deepEqual(await response.json(), respond);
      }
    });

    it('refuses bad input with a 4xx: unknown function, malformed JSON declared as JSON, a body over the limit', async () => {
      assert.equal((await call('/function/nope', { method: 'POST' })).status, 404);
      const before = (await server.request<unknown[]>('GET', '/api/v1/namespaces/_/activations?name=echo&limit=200')).body.length;
      const malformed = await call('/function/echo', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"a":',
      });
      assert.equal(malformed.status, 400);
      const basic = `Basic ${Buffer.from(server.auth).toString('base64')}`;
      const huge = await postDeclaredBody(
        server.url,
        '/function/echo',
        { 'content-type': 'text/plain', authorization: basic },
        2 * 1024 * 1024,
      );
      assert.equal(huge.status, 413);
      const afterwards = (await server.request<unknown[]>('GET', '/api/v1/namespaces/_/activations?name=echo&limit=200')).body
        .length;
      assert.equal(afterwards, before, 'nothing ran for a refused call');
      assert.equal((await fetch(`${server.url}/function/echo`, { method: 'POST' })).status, 401);
    });
  });

  describe('the system API', () => {
    it('lists and describes functions in OpenFaaS shape', async () => {
      assert.equal((await call('/function/echo', { method: 'POST' })).status, 200);
      const list = (await (await call('/system/functions')).json()) as OpenFaasFunctionStatus[];
      assert.deepEqual(list.map((f) => f.name).sort(), ['binary', 'echo', 'http', 'odd', 'throws']);
      const echo = (await (await call('/system/function/echo')).json()) as OpenFaasFunctionStatus;
      assert.equal(echo.name, 'echo');
      assert.equal(echo.image, 'nodejs:20');
      assert.equal(echo.namespace, 'guest');
      assert.ok(echo.invocationCount >= 1, `invocationCount ${echo.invocationCount}`);
      assert.ok(echo.replicas >= 1, 'the instance that just ran is live');
      assert.equal(echo.labels['com.openfaas.scale.min'], '0');
      assert.equal(typeof echo.annotations, 'object');
      assert.equal((await call('/system/function/nope')).status, 404);
      assert.equal((await call('/system/functions?namespace=someone-else')).status, 403);
      assert.equal((await fetch(`${server.url}/system/functions`)).status, 401);
    });

    it('answers /system/info with the provider', async () => {
      const info = (await (await call('/system/info')).json()) as {
        provider: { provider: string; orchestration: string; version: { release: string } };
      };
      assert.equal(info.provider.provider, 'isola');
      assert.equal(info.provider.orchestration, 'isola');
      assert.match(info.provider.version.release, /^\d+\.\d+\.\d+/);
    });

    it('scales a function without a new version: replicas set the instances kept provisioned, and the warm one stays', async () => {
      assert.equal((await server.deploy('scaled', INSTANCE)).status, 200);
      const version = async () =>
        (await server.request<{ version: string }>('GET', '/api/v1/namespaces/_/actions/scaled')).body.version;
      const was = await version();
      const invoke = async (ms = 0) => {
        const response = await call('/function/scaled', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ ms }),
        });
        assert.equal(response.status, 200);
        const { born } = (await response.json()) as { born: string };
        const id = response.headers.get('x-call-id') ?? '';
        const record = (
          await server.request<{ annotations: { key: string; value: unknown }[] }>(
            'GET',
            `/api/v1/namespaces/_/activations/${id}`,
          )
        ).body;
        return { born, coldStart: annotation(record, 'coldStart') };
      };
      const status = async () => (await (await call('/system/function/scaled')).json()) as OpenFaasFunctionStatus;
      const first = await invoke();
      assert.equal(first.coldStart, true);

      const scale = await call('/system/scale-function/scaled', {
        method: 'POST',
        body: JSON.stringify({ serviceName: 'scaled', replicas: 2 }),
      });
      assert.equal(scale.status, 200, await scale.text());
      assert.equal(await version(), was, 'scaling stores no new version');
      const scaled = await waitFor('two instances', async () => {
        const now = await status();
        return now.availableReplicas === 2 ? now : undefined;
      });
      assert.equal(scaled.replicas, 2);
      assert.equal(scaled.labels['com.openfaas.scale.min'], '2');
      assert.equal(scaled.labels['isola.version'], was);
      assert.equal(scaled.annotations.minInstances, undefined, "the annotations are the version's, unchanged");
      // Two calls at once take both instances (one run each): the one that served the first call is one of them.
      const both = await Promise.all([invoke(300), invoke(300)]);
      assert.deepEqual(
        both.map((b) => b.coldStart),
        [false, false],
        'no cold start: both instances were ready',
      );
      assert.ok(
        both.some((b) => b.born === first.born),
        `the warm instance ${first.born} is still there (got ${both.map((b) => b.born)})`,
      );
      assert.equal((await status()).replicas, 2, 'nothing more was started');

      const down = await call('/system/scale-function/scaled', { method: 'POST', body: JSON.stringify({ replicas: 0 }) });
      assert.equal(down.status, 200);
      const after = await waitFor('the idle instances let go', async () => {
        const now = await status();
        return now.replicas === 0 ? now : undefined;
      });
      assert.equal(after.labels['com.openfaas.scale.min'], '0');
      assert.equal(await version(), was);
    });

    it('refuses bad replicas and bodies with a 400 and changes nothing', async () => {
      assert.equal((await server.deploy('steady', ECHO)).status, 200);
      const version = async () =>
        (await server.request<{ version: string }>('GET', '/api/v1/namespaces/_/actions/steady')).body.version;
      const was = await version();
      for (const body of [
        '{"replicas":-1}',
        '{"replicas":1.5}',
        '{"replicas":"2"}',
        '{"replicas":101}',
        '{}',
        '[2]',
        '{"replicas":',
        '',
        '{"serviceName":"other","replicas":1}',
        '{"replicas":2,"serviceName":"steady"}x',
      ]) {
        const response = await call('/system/scale-function/steady', { method: 'POST', body });
        assert.equal(response.status, 400, body);
      }
      assert.equal((await call('/system/scale-function/nope', { method: 'POST', body: '{"replicas":1}' })).status, 404);
      assert.equal(await version(), was, 'no new version was stored');
      const status = (await (await call('/system/function/steady')).json()) as OpenFaasFunctionStatus;
      assert.equal(status.labels['com.openfaas.scale.min'], '0', 'no count was stored');
      assert.equal(status.replicas, 0, 'nothing was provisioned');
      // Never more than the function's own maxInstances.
      assert.equal((await server.deploy('capped', ECHO, { annotations: [{ key: 'maxInstances', value: 1 }] })).status, 200);
      const capped = await call('/system/scale-function/capped', { method: 'POST', body: '{"replicas":2}' });
      assert.equal(capped.status, 400);
      assert.match(((await capped.json()) as { error: string }).error, /maxInstances/);
      assert.equal(((await (await call('/system/function/capped')).json()) as OpenFaasFunctionStatus).replicas, 0);
    });

    it('deletes a function; refuses a body without a name, an unknown one, and deploying an image', async () => {
      assert.equal((await server.deploy('doomed', ECHO)).status, 200);
      assert.equal((await call('/system/functions', { method: 'DELETE', body: '{}' })).status, 400);
      assert.equal((await call('/system/functions', { method: 'DELETE', body: 'nope' })).status, 400);
      assert.equal((await call('/system/functions', { method: 'DELETE', body: '{"functionName":"nope"}' })).status, 404);
      const deleted = await call('/system/functions', { method: 'DELETE', body: JSON.stringify({ functionName: 'doomed' }) });
      assert.equal(deleted.status, 200);
      assert.equal((await call('/system/function/doomed')).status, 404);

      const before = await names();
      const deploy = await call('/system/functions', {
        method: 'POST',
        body: JSON.stringify({ service: 'figlet', image: 'ghcr.io/openfaas/figlet:latest' }),
      });
      assert.equal(deploy.status, 400);
      const { error } = (await deploy.json()) as { error: string };
      assert.match(error, /container images/);
      assert.match(error, /isola action create|CreateFunction/);
      assert.deepEqual(await names(), before, 'nothing stored');
    });
  });

  describe('/async-function/{name} with X-Callback-Url', () => {
    /** The activation's `callback` annotation, once its delivery has ended. */
    const deliveryOf = (callId: string | null) =>
      waitFor('the delivery recorded on the activation', async () => {
        const response = await server.request<{ annotations: { key: string; value: unknown }[] }>(
          'GET',
          `/api/v1/namespaces/_/activations/${callId}`,
        );
        if (response.status !== 200) return undefined;
        return annotation(response.body, 'callback') as
          | { url: string; status: string; attempts: number; statusCode?: number; error?: string; at: number }
          | undefined;
      });

    it('answers 202 with the call id, then posts the result with its status and duration', async () => {
      const sink = await receiver();
      try {
        const accepted = await call('/async-function/http', { method: 'POST', headers: { 'x-callback-url': sink.url } });
        assert.equal(accepted.status, 202);
        const callId = accepted.headers.get('x-call-id');
        assert.match(callId ?? '', /^[0-9a-f]{32}$/);
        const [delivered] = await waitFor('the callback', async () => (sink.received.length > 0 ? sink.received : undefined));
        assert.equal(delivered?.headers['x-call-id'], callId);
        assert.equal(delivered?.headers['x-function-status'], '201');
        assert.equal(delivered?.headers['x-function-name'], 'http');
        assert.ok(Number(delivered?.headers['x-duration-seconds']) >= 0);
        assert.equal(delivered?.headers['content-type'], 'text/csv');
        assert.equal(delivered?.body, 'a,b\n1,2');
        await waitFor('the delivery logged', async () =>
          server.output.includes('openfaas callback delivered') && server.output.includes(callId ?? '-') ? true : undefined,
        );
        const delivery = await deliveryOf(callId);
        assert.equal(delivery.status, 'delivered');
        assert.equal(delivery.attempts, 1);
        assert.equal(delivery.statusCode, 200);
        assert.equal(delivery.error, undefined);
        assert.equal(delivery.url, sink.url);
        assert.ok(Number.isInteger(delivery.at) && delivery.at > 0);
      } finally {
        await sink.close();
      }
    });

    it("retries a failing receiver, and posts a function's failure with the status a waiting call would get", async () => {
      const sink = await receiver(2);
      try {
        const accepted = await call('/async-function/throws', { method: 'POST', headers: { 'x-callback-url': sink.url } });
        assert.equal(accepted.status, 202);
        const [delivered] = await waitFor('the callback after retries', async () =>
          sink.received.length > 0 ? sink.received : undefined,
        );
        assert.equal(sink.attempts(), 3);
        assert.equal(delivered?.headers['x-function-status'], '502');
        assert.equal(delivered?.headers['x-call-id'], accepted.headers.get('x-call-id'));
        assert.match(JSON.parse(delivered?.body ?? '{}').error, /boom/);
        const delivery = await deliveryOf(accepted.headers.get('x-call-id'));
        assert.deepEqual([delivery.status, delivery.attempts, delivery.statusCode], ['delivered', 3, 200]);
      } finally {
        await sink.close();
      }
    });

    it('records a delivery given up on the activation: a receiver that fails every time, and one nobody answers', async () => {
      const failing = await receiver(Number.POSITIVE_INFINITY, 500);
      const unreachable = `http://127.0.0.1:${await freePort()}/gone`;
      try {
        const [toFailing, toNobody] = await Promise.all([
          call('/async-function/echo', { method: 'POST', headers: { 'x-callback-url': failing.url } }),
          call('/async-function/echo', { method: 'POST', headers: { 'x-callback-url': unreachable } }),
        ]);
        assert.equal(toFailing.status, 202);
        assert.equal(toNobody.status, 202);
        const [refused, unanswered] = await Promise.all([
          deliveryOf(toFailing.headers.get('x-call-id')),
          deliveryOf(toNobody.headers.get('x-call-id')),
        ]);
        assert.equal(refused.status, 'failed');
        assert.equal(refused.attempts, 4);
        assert.equal(refused.statusCode, 500);
        assert.equal(failing.attempts(), 4);
        assert.equal(unanswered.status, 'failed');
        assert.equal(unanswered.attempts, 4);
        assert.equal(unanswered.statusCode, undefined);
        assert.match(unanswered.error ?? '', /ECONNREFUSED|connect/i);
        assert.equal(unanswered.url, unreachable);
      } finally {
        await failing.close();
      }
    });

    it('refuses a callback to the server itself or not over HTTP, before anything is queued', async () => {
      const count = async () =>
        (await server.request<unknown[]>('GET', '/api/v1/namespaces/_/activations?name=echo&limit=200')).body.length;
      const before = await count();
      const own = new URL(server.url);
      for (const url of [
        `http://127.0.0.1:${own.port}/function/echo`,
        `http://localhost:${own.port}/function/echo`,
        'ftp://127.0.0.1/x',
        'not a url',
      ]) {
        const response = await call('/async-function/echo', { method: 'POST', headers: { 'x-callback-url': url } });
        assert.equal(response.status, 400, url);
        assert.equal(response.headers.get('x-call-id'), null, 'no call was accepted');
      }
      assert.equal(
        (await call('/async-function/nope', { method: 'POST', headers: { 'x-callback-url': 'not a url' } })).status,
        404,
        'a missing function is reported first',
      );
      // Anything queued would have run by the time this synchronous call has.
      assert.equal((await call('/function/echo', { method: 'POST' })).status, 200);
      assert.equal(await count(), before + 1);
    });
  });
});
