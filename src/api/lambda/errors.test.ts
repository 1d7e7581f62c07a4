import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import Fastify from 'fastify';
import { IsolaError, tooManyRequests, unavailable } from '../../core/errors.js';
import { invalidRequestContent, lambdaErrorHandler } from './errors.js';

/** What a client gets when a Lambda route throws this. */
async function answerFor(error: Error, bodyLimit?: number) {
  const app = Fastify();
  app.setErrorHandler(lambdaErrorHandler);
  app.post('/', { ...(bodyLimit !== undefined ? { bodyLimit } : {}) }, async () => {
    throw error;
  });
  const response = await app.inject({ method: 'POST', url: '/', payload: { a: 'x'.repeat(100) } });
  await app.close();
  return { status: response.statusCode, type: response.headers['x-amzn-errortype'], body: JSON.parse(response.body) };
}

describe("the Lambda API's errors", () => {
  it('names each status as Lambda does, in the header and the body', async () => {
    const cases: [Error, number, string][] = [
      [tooManyRequests('full'), 429, 'TooManyRequestsException'],
      [unavailable('too big'), 503, 'ServiceException'],
      [new IsolaError(404, 'gone'), 404, 'ResourceNotFoundException'],
      [new IsolaError(409, 'exists'), 409, 'ResourceConflictException'],
      [invalidRequestContent('not json'), 400, 'InvalidRequestContentException'],
      [new IsolaError(400, 'bad'), 400, 'InvalidParameterValueException'],
    ];
    for (const [error, status, type] of cases) {
      const answer = await answerFor(error);
      assert.equal(answer.status, status);
      assert.equal(answer.type, type);
      assert.equal(answer.body.__type, type);
      assert.equal(answer.body.message, error.message);
      assert.equal(answer.body.Message, error.message);
      assert.match(answer.body.code, /./);
    }
  });

  it("answers the platform's own failure 500 ServiceException without its details", async () => {
    const answer = await answerFor(new Error('the store is gone at /var/lib/secret'));
    assert.deepEqual(
      [answer.status, answer.type, answer.body.message],
      [500, 'ServiceException', 'The server encountered an internal error.'],
    );
  });

  it('answers a body over the limit 413 RequestTooLargeException', async () => {
    const answer = await answerFor(new Error('not reached'), 10);
    assert.equal(answer.status, 413);
    assert.equal(answer.type, 'RequestTooLargeException');
  });
});
