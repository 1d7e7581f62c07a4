import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import { IsolaError } from '../core/errors.js';
import { newRequestId } from '../core/ids.js';
import type { Platform } from '../platform/platform.js';
import { adminOnly, registerAdminRoutes } from './admin.js';
import { parseJson } from './json.js';
import { registerLambdaRoutes } from './lambda.js';
import { registerOpenFaasRoutes } from './openfaas.js';
import { registerOpenWhiskRoutes } from './openwhisk.js';
import { registerTriggerRoutes } from './triggers-rules.js';
import { registerWebActionRoutes } from './web.js';

const API_INFO = {
  description: 'Isola: functions as a service under the isolation you choose',
  api_paths: ['/api/v1'],
};

/** The HTTP server: every door onto the platform, one error shape, one request id per request. */
export function buildServer(platform: Platform): FastifyInstance {
  const app = Fastify({
    logger: { level: process.env.ISOLA_LOG_LEVEL ?? 'warn' },
    bodyLimit: platform.config.maxPayloadBytes,
    genReqId: () => newRequestId(),
    // Action names may be up to 256 characters, and URL-encoded.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 1024 },
    return503OnClosing: true,
  });

  // JSON bodies as OpenWhisk takes them: an empty body is no body; malformed JSON is a clear 400.
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = String(body);
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, parseJson(text));
    } catch (error) {
      done(error as Error);
    }
  });

  app.setErrorHandler((error: FastifyError | IsolaError, request, reply) => {
    const requestId = String(request.id);
    if (error instanceof IsolaError) return reply.code(error.status).send({ error: error.message, code: requestId });
    const status = error.statusCode ?? 500;
    if (status === 413) {
      return reply.code(413).send({
        error: `The request content is larger than the ${request.routeOptions.bodyLimit ?? platform.config.maxPayloadBytes} bytes allowed.`,
        code: requestId,
      });
    }
    if (status < 500) return reply.code(status).send({ error: error.message, code: requestId });
    request.log.error({ err: error, requestId }, 'request failed');
    return reply.code(500).send({ error: 'The server encountered an internal error.', code: requestId });
  });

  app.setNotFoundHandler((request, reply) =>
    reply.code(404).send({ error: 'The requested resource does not exist.', code: String(request.id) }),
  );

  app.get('/', async () => API_INFO);
  app.get('/api/v1', async () => ({
    ...API_INFO,
    runtimes: { nodejs: [{ kind: 'nodejs:20', default: true }], wasm: [{ kind: 'wasm', default: true }] },
    backends: platform.backendStatuses.map((s) => ({ isolation: s.isolation, available: s.available })),
  }));
  app.get('/healthz', async () => ({
    status: 'ok',
    pid: process.pid,
    backends: platform.backendStatuses.filter((s) => s.available).map((s) => s.isolation),
  }));
  app.get('/metrics', { onRequest: adminOnly(platform) }, async (_request, reply) => {
    reply.header('content-type', platform.metrics.registry.contentType);
    return platform.metrics.registry.metrics();
  });

  registerOpenWhiskRoutes(app, platform);
  registerTriggerRoutes(app, platform);
  registerWebActionRoutes(app, platform);
  registerLambdaRoutes(app, platform);
  registerOpenFaasRoutes(app, platform);
  registerAdminRoutes(app, platform);
  return app;
}
