import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IsolaError } from '../core/errors.js';
import { assertActionName } from '../core/names.js';
import type { Caller, InvokeCommand, InvokeOutcome } from '../platform/invoke.js';
import type { Platform } from '../platform/platform.js';
import { authenticateScope, callerNamespace, namespaceAuth } from './auth.js';
import { attempt, errorBody, invokeFor, outcomeError, rawBodyScope } from './door.js';
import { CallbackDeliveries, callbackTarget } from './openfaas/callback.js';
import { openFaasParams } from './openfaas/params.js';
import { renderOpenFaasResult } from './openfaas/result.js';
import { registerOpenFaasSystemRoutes } from './openfaas/system.js';
import type { WebResponse } from './web-response.js';

interface FunctionParams {
  name: string;
  '*'?: string;
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;
const CALL_HEADERS = new Set(['x-call-id', 'x-duration-seconds']);

/** An OpenFaaS call, parsed. */
export interface OpenFaasCall {
  command: InvokeCommand;
  /** The request could not be read: refused once the function is found. */
  badRequest?: IsolaError;
  /** The response the result describes, rendered as the run ends (see `checkResult`). */
  rendered: () => WebResponse | undefined;
}

/**
 * `/function/{name}[/path]` (waits) or `/async-function/{name}[/path]` (answers at once), any
 * method. `problem` is what the route found wrong before parsing (a bad callback URL): like a body
 * it cannot read, it is refused once the function is found, and nothing runs.
 */
export function parseOpenFaasCall(
  request: FastifyRequest<{ Params: FunctionParams }>,
  caller: Caller & { kind: 'namespace' },
  mode: 'sync' | 'async',
  problem?: IsolaError,
): OpenFaasCall {
  const name = assertActionName(request.params.name, 'function');
  const params = attempt(() => openFaasParams(request, request.params['*'] ? `/${request.params['*']}` : ''));
  const failure = params instanceof IsolaError ? params : problem;
  let rendered: WebResponse | undefined;
  // A result is rendered once, as the run ends: one that cannot be sent is recorded as the function's error.
  const checkResult = (result: unknown) => {
    const response = renderOpenFaasResult(result);
    if (response instanceof Error) return response.message;
    rendered = response;
    return undefined;
  };
  return {
    command: {
      function: { namespace: caller.namespace, name },
      params: params instanceof IsolaError ? {} : params,
      mode: failure ? 'dry-run' : mode,
      door: 'openfaas',
      caller,
      ...(mode === 'sync' ? { checkResult } : {}),
    },
    ...(failure ? { badRequest: failure } : {}),
    rendered: () => rendered,
  };
}

/** OpenFaaS's answers: 202 with the call id, or the result (the function's failure is a bad gateway). */
export function formatOpenFaasCall(reply: FastifyReply, call: OpenFaasCall, outcome: InvokeOutcome) {
  if (outcome.kind === 'not-found' || outcome.kind === 'rejected') throw outcomeError(outcome);
  if (call.badRequest) throw call.badRequest;
  switch (outcome.kind) {
    case 'dry-run':
      return reply.code(204).send();
    case 'accepted':
      return reply.code(202).header('x-call-id', outcome.activationId).send();
    case 'completed': {
      const record = outcome.record;
      reply.header('x-call-id', record.activationId).header('x-duration-seconds', String(record.duration / 1000));
      if (record.response.success) {
        // Rendered already, unless the run's record was made without the check.
        const rendered = call.rendered() ?? renderOpenFaasResult(record.response.result);
        if (!(rendered instanceof Error)) return sendRendered(reply, rendered);
        return reply.code(502).send(errorBody(undefined, rendered, record.activationId, String(reply.request.id)));
      }
      // The function's own failure is a bad gateway; only the platform's is a 500.
      const status = record.response.status === 'whisk internal error' ? 500 : 502;
      return reply.code(status).send(errorBody(record.response.result, undefined, record.activationId, String(reply.request.id)));
    }
  }
}

function sendRendered(reply: FastifyReply, response: WebResponse) {
  // The call's own headers are the platform's to set.
  for (const [name, value] of response.headers) if (!CALL_HEADERS.has(name)) reply.header(name, value);
  reply.code(response.statusCode);
  return response.body === undefined ? reply.send() : reply.send(response.body);
}

/**
 * OpenFaaS's gateway: `/function/{name}` waits for the result, `/async-function/{name}` answers
 * 202 with the call id (and posts the result to `X-Callback-Url` when it ends), and the system API
 * (`/system/...`) that `faas-cli` uses. Unlike a bare OpenFaaS gateway, the caller authenticates
 * (HTTP Basic) and reaches the functions of its own namespace.
 */
export function registerOpenFaasRoutes(app: FastifyInstance, platform: Platform): void {
  rawBodyScope(app, (scope) => {
    authenticateScope(scope, namespaceAuth(platform));
    const callbacks = new CallbackDeliveries(platform, scope.log);
    scope.addHook('onClose', async () => callbacks.close());
    const routes = [
      ['sync', ['/function/:name', '/function/:name/*']],
      ['async', ['/async-function/:name', '/async-function/:name/*']],
    ] as const;
    for (const [mode, paths] of routes) {
      for (const url of paths) {
        scope.route<{ Params: FunctionParams }>({
          method: [...METHODS],
          url,
          handler: async (request, reply) => {
            const caller = { kind: 'namespace', namespace: callerNamespace(request) } as const;
            const callback =
              mode === 'async'
                ? await callbackTarget(request.headers['x-callback-url'], request.socket.localPort ?? 0).catch(
                    (error: unknown) => (error instanceof IsolaError ? error : Promise.reject(error)),
                  )
                : undefined;
            const call = parseOpenFaasCall(request, caller, mode, callback instanceof IsolaError ? callback : undefined);
            const outcome = await invokeFor(platform, request, reply, call.command);
            if (outcome.kind === 'accepted' && callback instanceof URL) {
              callbacks.start({
                url: callback,
                namespace: caller.namespace,
                name: call.command.function.name,
                activationId: outcome.activationId,
                ownPort: request.socket.localPort ?? 0,
              });
            }
            return formatOpenFaasCall(reply, call, outcome);
          },
        });
      }
    }
    registerOpenFaasSystemRoutes(scope, platform);
  });
}
