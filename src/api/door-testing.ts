import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { IsolaError } from '../core/errors.js';
import { DEFAULT_LIMITS } from '../core/limits.js';
import type { ActionVersion, ActivationRecord, ActivationResponse } from '../core/types.js';

/** For the doors' unit tests: a stored function, as the platform's outcomes carry it. */
export const testFunction: ActionVersion = {
  namespace: 'guest',
  name: 'fn',
  version: '0.0.3',
  revision: 'r',
  exec: { kind: 'nodejs:20', code: '', binary: false },
  limits: DEFAULT_LIMITS,
  parameters: [],
  annotations: [],
  isolation: 'isolate',
  updated: 0,
};

/** For the doors' unit tests: a finished activation of `testFunction` with this response. */
export function testRecord(response: ActivationResponse, logs: string[] = []): ActivationRecord {
  return {
    activationId: 'a'.repeat(32),
    namespace: 'guest',
    name: 'fn',
    version: '0.0.3',
    subject: 'guest',
    start: 1000,
    end: 1250,
    duration: 250,
    response,
    logs,
    annotations: [],
    publish: false,
  };
}

/** A request to send through `formatted`: a route pattern for the parse step and the request itself. */
export interface TestRequest {
  route?: string;
  url?: string;
  method?: 'GET' | 'POST' | 'PUT';
  headers?: Record<string, string>;
  body?: string;
}

/**
 * Runs a door's parse and format steps in a real Fastify request and reply (bodies raw, as the
 * doors other than OpenWhisk's read them) and returns what the client would get; errors thrown
 * answer with their status, as the server's error handler does.
 */
export async function formatted(
  format: (reply: FastifyReply, request: FastifyRequest) => unknown,
  request: TestRequest = {},
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const app = Fastify();
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  app.setErrorHandler((error, _request, reply) =>
    reply.code(error instanceof IsolaError ? error.status : 500).send({ error: (error as Error).message }),
  );
  app.route({ method: ['GET', 'POST', 'PUT'], url: request.route ?? '/', handler: async (req, reply) => format(reply, req) });
  try {
    const response = await app.inject({
      method: request.method ?? 'POST',
      url: request.url ?? '/',
      headers: request.headers ?? {},
      ...(request.body !== undefined ? { payload: request.body } : {}),
    });
    return { status: response.statusCode, headers: response.headers, body: response.body };
  } finally {
    await app.close();
  }
}
