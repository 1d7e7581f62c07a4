import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IsolaError } from '../core/errors.js';
import { assertEntityName } from '../core/names.js';
import type { Caller, InvokeCommand, InvokeOutcome } from '../platform/invoke.js';
import type { Platform } from '../platform/platform.js';
import { authenticateScope, callerNamespace, namespaceAuth } from './auth.js';
import { attempt, errorBody, invokeFor, jsonRenderer, outcomeError, rawBodyScope } from './door.js';
import { httpParams } from './http-params.js';

interface FunctionParams {
  name: string;
  '*'?: string;
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/** An OpenFaaS call, parsed. */
export interface OpenFaasCall {
  command: InvokeCommand;
  /** The request could not be read: refused once the function is found. */
  badRequest?: IsolaError;
  json: ReturnType<typeof jsonRenderer>;
}

/** `/function/{name}[/path]` (waits) or `/async-function/{name}[/path]` (answers at once), any method. */
export function parseOpenFaasCall(
  request: FastifyRequest<{ Params: FunctionParams }>,
  caller: Caller & { kind: 'namespace' },
  mode: 'sync' | 'async',
): OpenFaasCall {
  const name = assertEntityName('function', request.params.name);
  const params = attempt(() => httpParams(request, request.params['*'] ? `/${request.params['*']}` : ''));
  const json = jsonRenderer();
  const failed = params instanceof IsolaError;
  return {
    command: {
      function: { namespace: caller.namespace, name },
      params: failed ? {} : params,
      mode: failed ? 'dry-run' : mode,
      door: 'openfaas',
      caller,
      ...(mode === 'sync' ? { checkResult: json.check } : {}),
    },
    ...(failed ? { badRequest: params } : {}),
    json,
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
      const body = record.response.success ? call.json.render(record.response.result) : undefined;
      if (typeof body === 'string') return reply.code(200).type('application/json; charset=utf-8').send(body);
      // The function's own failure is a bad gateway; only the platform's is a 500.
      const status = record.response.status === 'whisk internal error' ? 500 : 502;
      return reply.code(status).send(errorBody(record.response.result, body, record.activationId, String(reply.request.id)));
    }
  }
}

/**
 * OpenFaaS's gateway routes: `/function/{name}` waits for the result, `/async-function/{name}`
 * answers 202 with the call id. Unlike a bare OpenFaaS gateway, the caller authenticates
 * (HTTP Basic) and reaches the functions of its own namespace.
 */
export function registerOpenFaasRoutes(app: FastifyInstance, platform: Platform): void {
  rawBodyScope(app, (scope) => {
    authenticateScope(scope, namespaceAuth(platform));
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
            const call = parseOpenFaasCall(request, { kind: 'namespace', namespace: callerNamespace(request) }, mode);
            return formatOpenFaasCall(reply, call, await invokeFor(platform, request, reply, call.command));
          },
        });
      }
    }
  });
}
