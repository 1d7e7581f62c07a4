import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import type { InvokeOutcome } from '../platform/invoke.js';
import { invokeFor, outcomeError } from './door.js';
import { testFunction } from './door-testing.js';

describe('every door', () => {
  it("logs through the request's logger, which carries the activation id once there is one", async () => {
    const lines: Record<string, unknown>[] = [];
    const app = Fastify({
      logger: { level: 'debug', stream: { write: (line: string) => lines.push(JSON.parse(line) as Record<string, unknown>) } },
    });
    const outcome: InvokeOutcome = { kind: 'accepted', function: testFunction, activationId: 'b'.repeat(32), late: false };
    app.post('/', async (request, reply) => {
      await invokeFor({ invoke: async () => outcome }, request, reply, {
        function: { namespace: 'guest', name: 'fn' },
        params: {},
        mode: 'async',
        door: 'openfaas',
        caller: { kind: 'namespace', namespace: 'guest' },
      });
      request.log.warn('after the invoke');
      return {};
    });
    try {
      await app.inject({ method: 'POST', url: '/' });
    } finally {
      await app.close();
    }
    const invoked = lines.find((line) => line.msg === 'invoked');
    assert.equal(invoked?.activationId, 'b'.repeat(32));
    assert.equal(invoked?.outcome, 'accepted');
    assert.equal(invoked?.door, 'openfaas');
    assert.equal(lines.find((line) => line.msg === 'after the invoke')?.activationId, 'b'.repeat(32));
    assert.equal(lines.find((line) => line.msg === 'request completed')?.activationId, 'b'.repeat(32));
  });

  it('answers each refusal with its status', () => {
    const rejected = (reason: Extract<InvokeOutcome, { kind: 'rejected' }>['reason']) =>
      outcomeError({ kind: 'rejected', function: testFunction, reason, message: reason }).status;
    assert.deepEqual(
      [rejected('forbidden'), rejected('unauthorised'), rejected('queue-full'), rejected('too-big')],
      [403, 401, 429, 503],
    );
    assert.equal(outcomeError({ kind: 'not-found', message: 'gone' }).status, 404);
  });
});
