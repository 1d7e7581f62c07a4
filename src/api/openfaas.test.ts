import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FastifyRequest } from 'fastify';
import type { InvokeOutcome } from '../platform/invoke.js';
import { formatted, type TestRequest, testFunction, testRecord } from './door-testing.js';
import { callbackMessage } from './openfaas/callback.js';
import { renderOpenFaasResult } from './openfaas/result.js';
import { formatOpenFaasCall, type OpenFaasCall, parseOpenFaasCall } from './openfaas.js';

const caller = { kind: 'namespace', namespace: 'guest' } as const;
type FunctionRequest = FastifyRequest<{ Params: { name: string; '*'?: string } }>;

function faas(mode: 'sync' | 'async', outcome: (call: OpenFaasCall) => InvokeOutcome, request: Omit<TestRequest, 'route'> = {}) {
  let parsed: OpenFaasCall | undefined;
  return formatted(
    (reply, req) => {
      parsed = parseOpenFaasCall(req as FunctionRequest, caller, mode);
      return formatOpenFaasCall(reply, parsed, outcome(parsed));
    },
    { route: '/function/:name/*', url: '/function/fn/sub/path?q=1', ...request },
  ).then((response) => ({ ...response, call: parsed }));
}

const completed = (response: Parameters<typeof testRecord>[0]) => (): InvokeOutcome => ({
  kind: 'completed',
  function: testFunction,
  record: testRecord(response),
});

describe('the OpenFaaS door', () => {
  it("parses the caller's function, the sub-path and the query; only a waiting call checks its result", async () => {
    const { call } = await faas('sync', completed({ status: 'success', success: true, result: {} }));
    assert.deepEqual(call?.command.function, { namespace: 'guest', name: 'fn' });
    assert.equal(call?.command.params.__ow_path, '/sub/path');
    assert.equal(call?.command.door, 'openfaas');
    assert.equal(typeof call?.command.checkResult, 'function');
    const queued = await faas('async', () => ({
      kind: 'accepted',
      function: testFunction,
      activationId: 'b'.repeat(32),
      late: false,
    }));
    assert.equal(queued.call?.command.mode, 'async');
    assert.equal(queued.call?.command.checkResult, undefined);
    assert.equal(queued.status, 202);
    assert.equal(queued.headers['x-call-id'], 'b'.repeat(32));
  });

  it('answers a missing function 404 before a body it cannot read', async () => {
    const badJson = { headers: { 'content-type': 'application/json' }, body: '[' };
    const missing = await faas(
      'sync',
      () => ({ kind: 'not-found', message: 'The action "fn" does not exist in namespace "guest".' }),
      badJson,
    );
    assert.equal(missing.status, 404);
    assert.equal(missing.call?.command.mode, 'dry-run');
    const bad = await faas('async', () => ({ kind: 'dry-run', function: testFunction }), badJson);
    assert.equal(bad.status, 400);
  });

  it('answers the result 200 with the call id and duration; failures 502 (function) or 500 (platform)', async () => {
    const ok = await faas('sync', completed({ status: 'success', success: true, result: { n: 1 } }));
    assert.equal(ok.status, 200);
    assert.equal(ok.body, '{"n":1}');
    assert.equal(ok.headers['x-call-id'], 'a'.repeat(32));
    assert.equal(ok.headers['x-duration-seconds'], '0.25');
    const failed = await faas('sync', completed({ status: 'application error', success: false, result: { error: 'boom' } }));
    assert.equal(failed.status, 502);
    assert.equal(JSON.parse(failed.body).error, 'boom');
    assert.equal((await faas('sync', completed({ status: 'whisk internal error', success: false, result: {} }))).status, 500);
    const late = await faas('sync', () => ({
      kind: 'accepted',
      function: testFunction,
      activationId: 'c'.repeat(32),
      late: true,
    }));
    assert.equal(late.status, 202);
    assert.equal(late.headers['x-call-id'], 'c'.repeat(32));
  });

  it('reads JSON by content, whatever the content type; passes any other body through raw with its content type', async () => {
    const params = async (headers: Record<string, string>, body: string) =>
      (await faas('sync', completed({ status: 'success', success: true, result: {} }), { headers, body })).call?.command.params;
    // What `curl -d` sends.
    const form = await params({ 'content-type': 'application/x-www-form-urlencoded' }, '{"name":"Ada"}');
    assert.equal(form?.name, 'Ada');
    assert.equal(form?.__ow_body, undefined);
    assert.equal(form?.['{"name":"Ada"}'], undefined);
    const text = await params({ 'content-type': 'text/plain' }, 'hello=world');
    assert.equal(text?.__ow_body, 'hello=world');
    assert.equal((text?.__ow_headers as Record<string, string> | undefined)?.['content-type'], 'text/plain');
    const formFields = await params({ 'content-type': 'application/x-www-form-urlencoded' }, 'a=1&b=2');
    assert.equal(formFields?.__ow_body, 'a=1&b=2', 'a form is passed on, not decoded');
    assert.equal(formFields?.a, undefined);
    const notQuiteJson = await params({ 'content-type': 'text/plain' }, '{not json');
    assert.equal(notQuiteJson?.__ow_body, '{not json', 'undeclared JSON that does not parse is just a body');
    const binary = await params({ 'content-type': 'application/octet-stream' }, 'abc');
    assert.equal(binary?.__ow_body, Buffer.from('abc').toString('base64'));
    const array = await params({ 'content-type': 'text/plain' }, '[1,2]');
    assert.deepEqual(array?.__ow_body, [1, 2]);
    const proto = await faas('sync', completed({ status: 'success', success: true, result: {} }), {
      headers: { 'content-type': 'text/plain' },
      body: '{"__proto__":{"x":1}}',
    });
    assert.equal(proto.status, 400);
  });

  it('renders a {statusCode, headers, body} result as that response, and anything odd as JSON 200', () => {
    const http = renderOpenFaasResult({ statusCode: 201, headers: { 'X-Thing': 'a' }, body: 'made' });
    assert.ok(!(http instanceof Error));
    assert.equal(http.statusCode, 201);
    assert.deepEqual(http.headers, [
      ['x-thing', 'a'],
      ['content-type', 'text/plain; charset=utf-8'],
    ]);
    assert.equal(http.body?.toString(), 'made');
    const binary = renderOpenFaasResult({
      statusCode: 200,
      headers: { 'content-type': 'image/png' },
      body: Buffer.from([1, 2, 255]).toString('base64'),
      isBase64Encoded: true,
    });
    assert.ok(!(binary instanceof Error));
    assert.deepEqual([...(binary.body ?? [])], [1, 2, 255]);
    const cookies = renderOpenFaasResult({ statusCode: 200, cookies: ['a=1', 'b=2'] });
    assert.ok(!(cookies instanceof Error));
    assert.deepEqual(cookies.headers, [['set-cookie', ['a=1', 'b=2']]]);
    const json = renderOpenFaasResult({ statusCode: 200, body: { n: 1 } });
    assert.ok(!(json instanceof Error));
    assert.equal(json.body?.toString(), '{"n":1}');
    for (const odd of [
      { statusCode: 700, body: 'x' },
      { statusCode: 'abc' },
      { statusCode: 200, headers: { 'bad name': 'x' } },
      { statusCode: 200, headers: { h: 'line\nbreak' } },
      { statusCode: 200, body: 'not base64!', isBase64Encoded: true },
      { statusCode: 200, cookies: 'a=1' },
      'a string',
      [1, 2],
      null,
      { body: 'no headers: not a response' },
    ]) {
      const rendered = renderOpenFaasResult(odd);
      assert.ok(!(rendered instanceof Error), JSON.stringify(odd));
      assert.equal(rendered.statusCode, 200, JSON.stringify(odd));
      assert.deepEqual(JSON.parse(rendered.body?.toString() ?? ''), odd);
    }
  });

  it('answers a waiting call with the response its result describes', async () => {
    const response = await faas('sync', (call) => {
      const result = { statusCode: 418, headers: { 'content-type': 'text/html' }, body: '<p>teapot</p>' };
      assert.equal(call.command.checkResult?.(result), undefined);
      return completed({ status: 'success', success: true, result })();
    });
    assert.equal(response.status, 418);
    assert.equal(response.headers['content-type'], 'text/html');
    assert.equal(response.body, '<p>teapot</p>');
    assert.equal(response.headers['x-call-id'], 'a'.repeat(32));
  });

  it("gives a callback the waiting call's status, body and OpenFaaS's headers", () => {
    const ok = callbackMessage(testRecord({ status: 'success', success: true, result: { statusCode: 201, body: 'done' } }));
    assert.equal(ok.headers['x-function-status'], '201');
    assert.equal(ok.headers['x-call-id'], 'a'.repeat(32));
    assert.equal(ok.headers['x-duration-seconds'], '0.25');
    assert.equal(ok.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(ok.body.toString(), 'done');
    const failed = callbackMessage(testRecord({ status: 'application error', success: false, result: { error: 'boom' } }));
    assert.equal(failed.headers['x-function-status'], '502');
    assert.equal(JSON.parse(failed.body.toString()).error, 'boom');
    const platform = callbackMessage(testRecord({ status: 'whisk internal error', success: false, result: { error: 'x' } }));
    assert.equal(platform.headers['x-function-status'], '500');
  });
});
