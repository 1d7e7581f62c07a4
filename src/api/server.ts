import { type IncomingMessage, type ServerResponse, STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { Counter } from 'prom-client';
import { IsolaError } from '../core/errors.js';
import { newRequestId } from '../core/ids.js';
import type { Platform } from '../platform/platform.js';
import { registerUiRoutes } from '../ui/routes.js';
import { adminOnly, registerAdminRoutes } from './admin.js';
import { registerApiGatewayRoutes } from './api-gateway.js';
import { activationOf } from './door.js';
import { parseJson } from './json.js';
import { registerLambdaRoutes } from './lambda.js';
import { type ErrorAnswer, leanInvokeHandler } from './lean-invoke.js';
import { registerOpenFaasRoutes } from './openfaas.js';
import { registerOpenWhiskRoutes } from './openwhisk.js';
import { registerPackageRoutes } from './openwhisk-packages.js';
import { RoundEnd } from './round-end.js';
import { registerTriggerRoutes } from './triggers-rules.js';
import { registerWebActionRoutes } from './web.js';

const API_INFO = {
  description: 'Isola: functions as a service under the isolation you choose',
  api_paths: ['/api/v1'],
};

/** Levels at which Fastify logs lines per request: only there is a child logger per request worth its cost. */
const PER_REQUEST_LEVELS = new Set(['info', 'debug', 'trace']);

const FRAMEWORK_ERRORS = new Map<string, [number, string]>([
  ['FST_ERR_BAD_URL', [400, 'The request URL is malformed (a bad percent-encoding).']],
  ['FST_ERR_MAX_PARAM_LENGTH', [414, 'A segment of the request path is longer than 1024 characters.']],
]);

/**
 * Requests that are not HTTP at all, or too slow (Node's request and headers timeouts): a JSON
 * error, then the connection is closed, and the answer says so. (Fastify's default answer omits
 * `Connection: close`, so a keep-alive client may send its next request into a closing socket.)
 */
function answerClientError(error: Error & { code?: string }, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, message] =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'The request was not received in time.']
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'The request headers are too large.']
        : [400, 'The request is not valid HTTP.'];
  const body = JSON.stringify({ error: message, code: newRequestId() });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
  socket.destroy();
}

/** The HTTP server: every door onto the platform, one error shape, one request id per request. */
export function buildServer(platform: Platform): FastifyInstance {
  const config = platform.config;
  const app = Fastify({
    logger: { level: platform.config.logLevel },
    bodyLimit: config.maxPayloadBytes,
    genReqId: () => newRequestId(),
    // Below info, nothing logs a line per request: the requests share the server's logger, and the
    // lines that are logged name their request id themselves. (A child logger per request is a
    // visible share of a warm call's time.)
    childLoggerFactory: (logger, bindings, options) =>
      PER_REQUEST_LEVELS.has(logger.level) ? logger.child(bindings, options) : logger,
    // Action names may be up to 256 characters, and URL-encoded.
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 1024 },
    return503OnClosing: true,
    // Slow or silent clients may not hold connections: the headers, then the whole request, must
    // arrive in time (408 and closed otherwise), and an idle keep-alive connection is closed.
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.idleTimeoutMs,
    // A connection with no traffic at all for longer than any call can wait (a client that stopped
    // reading its response, say) is closed too.
    connectionTimeout: config.blockingWaitMs + config.requestTimeoutMs,
    http: {
      headersTimeout: config.headersTimeoutMs,
      // Node checks those deadlines on this interval (30 s by default, longer than the bounds).
      connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(config.headersTimeoutMs / 4))),
    },
    // Fastify's own 4xx answers (a malformed URL, a parameter too long) in the API's error shape.
    frameworkErrors: (error, request, reply) => {
      const [status, message] = FRAMEWORK_ERRORS.get(error.code) ?? [400, 'The request is malformed.'];
      void (reply as FastifyReply).code(status).send({ error: message, code: String(request.id) });
    },
    clientErrorHandler: answerClientError,
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
    const answer = errorAnswer(error, String(request.id), request.routeOptions.bodyLimit ?? platform.config.maxPayloadBytes);
    if (answer.internal) {
      request.log.error({ err: error, requestId: answer.body.code, activationId: activationOf(request) }, 'request failed');
    }
    return reply.code(answer.status).send(answer.body);
  });

  // Every answer, the lean path's too, is written at the end of the event loop's round: see RoundEnd.
  const rounds = new RoundEnd((error) => app.log.error({ err: error }, 'writing an answer failed'));
  app.addHook('onSend', (_request, _reply, payload, done) => rounds.defer(() => done(null, payload)));

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
    // Backends whose background probe has not ended: they may still become available.
    probing: platform.backendStatuses.filter((s) => s.probing).map((s) => s.isolation),
  }));
  app.get('/metrics', { onRequest: adminOnly(platform) }, async (_request, reply) => {
    reply.header('content-type', platform.metrics.registry.contentType);
    return platform.metrics.registry.metrics();
  });
  app.get('/api/v1/invokers', { onRequest: adminOnly(platform) }, async () => ({ invokers: await platform.invokers() }));
  // A cluster's invoker takes calls from controllers, not from clients: it answers only the above.
  if (config.role === 'invoker') return app;

  registerOpenWhiskRoutes(app, platform);
  registerTriggerRoutes(app, platform);
  registerPackageRoutes(app, platform);
  registerWebActionRoutes(app, platform);
  registerLambdaRoutes(app, platform);
  registerOpenFaasRoutes(app, platform);
  registerAdminRoutes(app, platform);
  registerApiGatewayRoutes(app, platform);
  registerUiRoutes(app, platform);

  // Only where no line is logged per request: the lean path logs none.
  if (!PER_REQUEST_LEVELS.has(config.logLevel)) {
    let closing = false;
    app.addHook('preClose', async () => {
      closing = true;
    });
    const lean = leanInvokeHandler({
      platform,
      bodyLimit: config.maxPayloadBytes,
      blockingWaitMs: config.blockingWaitMs,
      log: app.log,
      errorAnswer: (error, requestId) => errorAnswer(error, requestId, config.maxPayloadBytes),
      closing: () => closing,
      taken: leanCounter(platform),
      rounds,
    });
    // In front of Fastify's handler on the server Fastify made, so that its timeouts and closing stay as they are.
    const [fastifyHandler] = app.server.listeners('request') as ((request: IncomingMessage, response: ServerResponse) => void)[];
    if (fastifyHandler) {
      app.server.removeListener('request', fastifyHandler);
      app.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
        if (!lean(request, response)) fastifyHandler(request, response);
      });
    }
  }
  return app;
}

/** Counts the invokes the lean path answered, in /metrics: which path a warm call took shows there. */
function leanCounter(platform: Platform): () => void {
  const registry = platform.metrics.registry;
  const name = 'isola_api_lean_invokes_total';
  const counter =
    (registry.getSingleMetric(name) as Counter | undefined) ??
    new Counter({
      name,
      help: 'OpenWhisk invokes answered without the framework (the plain blocking or queued invoke of an action by name).',
      registers: [registry],
    });
  return () => counter.inc();
}

/** The API's answer to an error: the error's own status for the caller's mistakes, a bare 500 for the platform's. */
function errorAnswer(error: unknown, requestId: string, bodyLimit: number): ErrorAnswer {
  if (error instanceof IsolaError)
    return { status: error.status, body: { error: error.message, code: requestId }, internal: false };
  const failure = error as FastifyError;
  const status = failure.statusCode ?? 500;
  if (status === 413) {
    return {
      status: 413,
      body: { error: `The request content is larger than the ${bodyLimit} bytes allowed.`, code: requestId },
      internal: false,
    };
  }
  if (status < 500) return { status, body: { error: failure.message, code: requestId }, internal: false };
  return { status: 500, body: { error: 'The server encountered an internal error.', code: requestId }, internal: true };
}
