import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { InvokeOutcome } from '../platform/invoke.js';
import { formatted, testFunction, testRecord } from './door-testing.js';
import { formatOpenWhiskInvoke, parseOpenWhiskInvoke } from './openwhisk.js';

const caller = { kind: 'namespace', namespace: 'guest' } as const;
const parse = (query: Record<string, string>, body: unknown = undefined) =>
  parseOpenWhiskInvoke({ query, body }, { namespace: 'guest', name: 'fn' }, caller, 60_000);

describe("OpenWhisk's invoke", () => {
  it('parses blocking (with its own wait) into sync, anything else into async', () => {
    const blocking = parse({ blocking: 'true', result: 'true', timeout: '500' }, { a: 1 });
    assert.equal(blocking.command.mode, 'sync');
    assert.equal(blocking.command.waitMs, 500);
    assert.equal(blocking.resultOnly, true);
    assert.deepEqual(blocking.command.params, { a: 1 });
    assert.equal(blocking.command.door, 'openwhisk');
    const queued = parse({});
    assert.equal(queued.command.mode, 'async');
    assert.equal(queued.command.waitMs, undefined);
    assert.throws(
      () => parse({ blocking: 'true', timeout: '60001' }),
      /timeout must be a number of milliseconds from 0 to 60000/,
    );
    assert.throws(() => parse({}, [1]), /must be a JSON object/);
  });

  it('parses a query string once and gives the same answer for it again; a bad one is refused each time', () => {
    const withUrl = (url: string, query: Record<string, string>) =>
      parseOpenWhiskInvoke({ query, body: undefined, url }, { namespace: 'guest', name: 'fn' }, caller, 60_000);
    for (let i = 0; i < 3; i++) {
      const call = withUrl('/api/v1/namespaces/_/actions/fn?blocking=true&result=true', { blocking: 'true', result: 'true' });
      assert.equal(call.command.mode, 'sync');
      assert.equal(call.resultOnly, true);
      const queued = withUrl('/api/v1/namespaces/_/actions/fn', {});
      assert.equal(queued.command.mode, 'async');
      assert.equal(queued.resultOnly, false);
      const waiting = withUrl('/api/v1/namespaces/_/actions/fn?blocking=true&timeout=250', { blocking: 'true', timeout: '250' });
      assert.equal(waiting.command.waitMs, 250);
      assert.throws(
        () => withUrl('/api/v1/namespaces/_/actions/fn?blocking=maybe', { blocking: 'maybe' }),
        /Invalid query: blocking/,
      );
      // The server's wait bounds a query that parsed before.
      assert.throws(
        () =>
          parseOpenWhiskInvoke(
            { query: { blocking: 'true', timeout: '250' }, body: undefined, url: '/x?blocking=true&timeout=250' },
            { namespace: 'guest', name: 'fn' },
            caller,
            100,
          ),
        /timeout must be a number of milliseconds from 0 to 100/,
      );
    }
  });

  it('answers 202 with the activation id, or the record (or its result) with its status', async () => {
    const answer = (query: Record<string, string>, outcome: InvokeOutcome) =>
      formatted((reply) => formatOpenWhiskInvoke(reply, parse(query), outcome));
    const accepted = await answer({}, { kind: 'accepted', function: testFunction, activationId: 'b'.repeat(32), late: false });
    assert.equal(accepted.status, 202);
    assert.deepEqual(JSON.parse(accepted.body), { activationId: 'b'.repeat(32) });
    const record = testRecord({ status: 'application error', success: false, result: { error: 'no' } });
    const whole = await answer({ blocking: 'true' }, { kind: 'completed', function: testFunction, record });
    assert.equal(whole.status, 502);
    assert.equal(JSON.parse(whole.body).activationId, record.activationId);
    const result = await answer({ blocking: 'true', result: 'true' }, { kind: 'completed', function: testFunction, record });
    assert.deepEqual(JSON.parse(result.body), { error: 'no' });
    const missing = await answer(
      { blocking: 'true' },
      { kind: 'not-found', message: 'The action "fn" does not exist in namespace "guest".' },
    );
    assert.equal(missing.status, 404);
    const forbidden = await answer({}, { kind: 'rejected', function: testFunction, reason: 'forbidden', message: 'no' });
    assert.equal(forbidden.status, 403);
  });
});
