import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { FastifyRequest } from 'fastify';
import type { InvokeOutcome } from '../platform/invoke.js';
import { formatted, type TestRequest, testFunction, testRecord } from './door-testing.js';
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
});
