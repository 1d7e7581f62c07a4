import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { InvokeOutcome } from '../platform/invoke.js';
import { formatted, testFunction, testRecord } from './door-testing.js';
import { formatLambdaInvoke, type LambdaCall, parseLambdaInvoke } from './lambda.js';

const caller = { kind: 'namespace', namespace: 'guest' } as const;

function parse(options: { name?: string; query?: Record<string, string>; body?: string; headers?: Record<string, string> } = {}) {
  return parseLambdaInvoke(
    {
      query: options.query ?? {},
      body: Buffer.from(options.body ?? ''),
      params: { name: options.name ?? 'fn' },
      headers: options.headers ?? {},
    },
    caller,
  );
}

const answer = (call: LambdaCall, outcome: InvokeOutcome) => formatted((reply) => formatLambdaInvoke(reply, call, outcome));

describe('the Lambda door', () => {
  it("parses the function from a name or an ARN, and the Qualifier (or the ARN's) as a version or an alias", () => {
    const byAlias = parse({ name: 'arn:aws:lambda:eu-west-1:123:function:fn:prod' });
    assert.deepEqual(byAlias.command.function, { namespace: 'guest', name: 'fn' });
    assert.equal(byAlias.alias, 'prod', 'resolved by the route');
    assert.equal(parse({ query: { Qualifier: 'prod' } }).alias, 'prod');
    assert.deepEqual(parse({ name: 'arn:aws:lambda:eu-west-1:123:function:fn:4' }).command.function, {
      namespace: 'guest',
      name: 'fn',
      version: '0.0.4',
    });
    assert.equal(parse({ query: { Qualifier: '4' } }).alias, undefined);
    assert.throws(
      () => parse({ name: 'arn:aws:lambda:eu-west-1:123:function:fn:prod', query: { Qualifier: 'beta' } }),
      /does not match the specified qualifier/,
    );
    assert.deepEqual(parse({ query: { Qualifier: '$LATEST' } }).command.function, { namespace: 'guest', name: 'fn' });
    assert.deepEqual(parse({ query: { Qualifier: '0.0.2' } }).command.function, {
      namespace: 'guest',
      name: 'fn',
      version: '0.0.2',
    });
    assert.throws(() => parse({ name: 'bad name!' }), /function/);
  });

  it('maps each invocation type to a mode; an unknown one is looked up, then refused', () => {
    const mode = (type?: string) => parse(type ? { headers: { 'x-amz-invocation-type': type } } : {}).command.mode;
    assert.equal(mode(), 'sync');
    assert.equal(mode('RequestResponse'), 'sync');
    assert.equal(mode('Event'), 'async');
    assert.equal(mode('DryRun'), 'dry-run');
    const unknown = parse({ headers: { 'x-amz-invocation-type': 'Sometimes' } });
    assert.equal(unknown.command.mode, 'dry-run');
    assert.equal(unknown.unknownType, 'Sometimes');
    assert.equal(parse({ headers: { 'x-amz-invocation-type': 'constructor' } }).unknownType, 'constructor');
  });

  it('takes any JSON event: objects as the params, anything else wrapped; bad JSON is refused after the lookup', () => {
    assert.deepEqual(parse({ body: '{"a":1}' }).command.params, { a: 1 });
    assert.deepEqual(parse({ body: '[1,2]' }).command.params, { payload: [1, 2] });
    assert.deepEqual(parse().command.params, {});
    const bad = parse({ body: '{"a":' });
    assert.equal(bad.command.mode, 'dry-run');
    assert.equal(bad.badPayload?.status, 400);
  });

  it('answers a missing function first, with the qualifier when one was asked for', async () => {
    const missing: InvokeOutcome = { kind: 'not-found', message: 'The action "fn" does not exist in namespace "guest".' };
    const plain = await answer(parse({ body: '{' }), missing);
    assert.equal(plain.status, 404);
    assert.match(plain.body, /does not exist in namespace/);
    const qualified = await answer(parse({ query: { Qualifier: '7.7.7' } }), missing);
    assert.equal(qualified.status, 404);
    assert.match(qualified.body, /Function not found: fn:7\.7\.7/);
  });

  it('refuses a bad payload, then an unknown type, once the function is known', async () => {
    const dryRun: InvokeOutcome = { kind: 'dry-run', function: testFunction };
    const bad = await answer(parse({ body: '{' }), dryRun);
    assert.equal(bad.status, 400);
    assert.equal(bad.headers['x-amz-executed-version'], undefined);
    const unknown = await answer(parse({ headers: { 'x-amz-invocation-type': 'Sometimes' } }), dryRun);
    assert.equal(unknown.status, 400);
    assert.match(unknown.body, /RequestResponse, Event or DryRun; got Sometimes/);
    assert.equal(unknown.headers['x-amz-executed-version'], '$LATEST');
  });

  it('answers a dry run 204 and an event 202 with the activation id', async () => {
    const dry = await answer(parse({ headers: { 'x-amz-invocation-type': 'DryRun' } }), {
      kind: 'dry-run',
      function: testFunction,
    });
    assert.equal(dry.status, 204);
    assert.equal(dry.headers['x-amz-executed-version'], '$LATEST');
    const pinned = await answer(parse({ query: { Qualifier: '3' }, headers: { 'x-amz-invocation-type': 'DryRun' } }), {
      kind: 'dry-run',
      function: testFunction,
    });
    assert.equal(pinned.headers['x-amz-executed-version'], '3', "Lambda's number for a version asked for");
    const event = await answer(parse({ headers: { 'x-amz-invocation-type': 'Event' } }), {
      kind: 'accepted',
      function: testFunction,
      activationId: 'b'.repeat(32),
      late: false,
    });
    assert.equal(event.status, 202);
    assert.equal(event.headers['x-isola-activation-id'], 'b'.repeat(32));
  });

  it('answers a refusal with its status, the version header set', async () => {
    const full = await answer(parse(), { kind: 'rejected', function: testFunction, reason: 'queue-full', message: 'full' });
    assert.equal(full.status, 429);
    assert.equal(full.headers['x-amz-executed-version'], '$LATEST');
    const big = await answer(parse(), { kind: 'rejected', function: testFunction, reason: 'too-big', message: 'big' });
    assert.equal(big.status, 503);
  });

  it('answers a result 200, a function error 200 with X-Amz-Function-Error, a platform error 500', async () => {
    const ok = parse({ headers: { 'x-amz-log-type': 'Tail' } });
    assert.equal(ok.command.checkResult?.({ n: 1 }), undefined);
    const done = await answer(ok, {
      kind: 'completed',
      function: testFunction,
      record: testRecord({ status: 'success', success: true, result: { n: 1 } }, ['line one']),
    });
    assert.equal(done.status, 200);
    assert.equal(done.body, '{"n":1}');
    assert.equal(Buffer.from(String(done.headers['x-amz-log-result']), 'base64').toString(), 'line one');
    const failed = await answer(parse(), {
      kind: 'completed',
      function: testFunction,
      record: testRecord({ status: 'application error', success: false, result: { error: 'boom' } }),
    });
    assert.equal(failed.status, 200);
    assert.equal(failed.headers['x-amz-function-error'], 'Unhandled');
    assert.deepEqual(JSON.parse(failed.body), { errorMessage: 'boom', errorType: 'Error' });
    const broken = await answer(parse(), {
      kind: 'completed',
      function: testFunction,
      record: testRecord({ status: 'whisk internal error', success: false, result: { error: 'store gone' } }),
    });
    assert.equal(broken.status, 500);
  });

  it('answers a call that outlived its wait 202 with the activation id', async () => {
    const late = await answer(parse(), { kind: 'accepted', function: testFunction, activationId: 'c'.repeat(32), late: true });
    assert.equal(late.status, 202);
    assert.equal(late.headers['x-isola-activation-id'], 'c'.repeat(32));
  });
});
