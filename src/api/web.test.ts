import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FastifyRequest } from 'fastify';
import type { InvokeOutcome } from '../platform/invoke.js';
import { formatted, type TestRequest, testFunction, testRecord } from './door-testing.js';
import { formatWebCall, parseWebCall, type WebCall, webCaller } from './web.js';

const ROUTE = '/api/v1/web/:namespace/:package/*';
type WebRequest = FastifyRequest<{ Params: { namespace: string; package: string; '*': string } }>;

/** Parses a request to `path` and answers it as if the platform's outcome were `outcome(call)`. */
function web(path: string, outcome: (call: WebCall) => InvokeOutcome, request: Omit<TestRequest, 'route' | 'url'> = {}) {
  let parsed: WebCall | undefined;
  const answered = formatted(
    (reply, req) => {
      parsed = parseWebCall(req as WebRequest, webCaller(req));
      return formatWebCall(reply, parsed, outcome(parsed));
    },
    { route: ROUTE, url: path, method: 'GET', ...request },
  );
  return answered.then((response) => ({ ...response, call: parsed }));
}

const completedWith =
  (result: unknown) =>
  (call: WebCall): InvokeOutcome => {
    const broken = call.command.checkResult?.(result);
    return {
      kind: 'completed',
      function: testFunction,
      record: testRecord(
        broken === undefined
          ? { status: 'success', success: true, result }
          : { status: 'action developer error', success: false, result: { error: broken } },
      ),
    };
  };

describe('the web door', () => {
  it('parses the function, its extension and the rest of the path into a sync command', async () => {
    const { call, status } = await web('/api/v1/web/guest/default/page.json/a/b?x=1', completedWith({ ok: 1 }));
    assert.equal(status, 200);
    assert.deepEqual(call?.command.function, { namespace: 'guest', name: 'page' });
    assert.equal(call?.command.mode, 'sync');
    assert.equal(call?.command.door, 'web');
    assert.equal(call?.command.params.__ow_path, '/a/b');
    assert.equal(call?.command.params.x, '1');
  });

  it('carries what the request offers as proof, and nothing more', async () => {
    const basic = `Basic ${Buffer.from('u:k').toString('base64')}`;
    const { call } = await web('/api/v1/web/guest/default/page', completedWith({}), {
      headers: { authorization: basic, 'x-require-whisk-auth': 'secret' },
    });
    assert.deepEqual(call?.command.caller, { kind: 'web', credentials: { uuid: 'u', key: 'k' }, secret: 'secret' });
    const bare = await web('/api/v1/web/guest/default/page', completedWith({}));
    assert.deepEqual(bare.call?.command.caller, { kind: 'web' });
  });

  it('names the action in its package, or with "default" outside any', async () => {
    const names: string[] = [];
    const seen = (call: { command: { function: { name: string } } }) => {
      names.push(call.command.function.name);
      return { kind: 'not-found', message: 'no' } as const;
    };
    await web('/api/v1/web/guest/pkg/page.json', seen);
    await web('/api/v1/web/guest/default/page', seen);
    assert.deepEqual(names, ['pkg/page', 'page']);
  });

  it('answers a missing or hidden function 404, an unauthorised caller 401, then a body it cannot read 400', async () => {
    const badJson = { method: 'POST' as const, headers: { 'content-type': 'application/json' }, body: '{' };
    const missing = await web('/api/v1/web/guest/default/page', () => ({ kind: 'not-found', message: 'secret detail' }), badJson);
    assert.equal(missing.status, 404);
    assert.doesNotMatch(missing.body, /secret detail/);
    assert.equal(missing.call?.command.mode, 'dry-run');
    const refused = await web(
      '/api/v1/web/guest/default/page',
      () => ({ kind: 'rejected', function: testFunction, reason: 'unauthorised', message: 'x' }),
      badJson,
    );
    assert.equal(refused.status, 401);
    const bad = await web('/api/v1/web/guest/default/page', () => ({ kind: 'dry-run', function: testFunction }), badJson);
    assert.equal(bad.status, 400);
  });

  it('sends the response the result describes, checked as the run ended', async () => {
    const page = await web(
      '/api/v1/web/guest/default/page',
      completedWith({ statusCode: 201, headers: { 'x-made': 'yes' }, body: 'made' }),
    );
    assert.equal(page.status, 201);
    assert.equal(page.headers['x-made'], 'yes');
    assert.equal(page.body, 'made');
    assert.equal(page.headers['x-openwhisk-activation-id'], 'a'.repeat(32));
    const broken = await web('/api/v1/web/guest/default/page', completedWith({ statusCode: 'soon' }));
    assert.equal(broken.status, 502);
  });

  it("answers the function's failure 502, the platform's 500, a late call 202 with its id", async () => {
    const record = (status: 'application error' | 'whisk internal error') => (): InvokeOutcome => ({
      kind: 'completed',
      function: testFunction,
      record: testRecord({ status, success: false, result: { error: 'x' } }),
    });
    assert.equal((await web('/api/v1/web/guest/default/page', record('application error'))).status, 502);
    assert.equal((await web('/api/v1/web/guest/default/page', record('whisk internal error'))).status, 500);
    const late = await web('/api/v1/web/guest/default/page', () => ({
      kind: 'accepted',
      function: testFunction,
      activationId: 'b'.repeat(32),
      late: true,
    }));
    assert.equal(late.status, 202);
    assert.deepEqual(JSON.parse(late.body), { activationId: 'b'.repeat(32) });
    const full = await web('/api/v1/web/guest/default/page', () => ({
      kind: 'rejected',
      function: testFunction,
      reason: 'queue-full',
      message: 'full',
    }));
    assert.equal(full.status, 429);
  });
});
