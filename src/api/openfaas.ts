import type { FastifyInstance, FastifyRequest } from 'fastify';
import { assertEntityName } from '../core/names.js';
import type { Platform } from '../platform/platform.js';
import { authenticate } from './auth.js';
import { errorBody, jsonRenderer, rawBodyScope } from './door.js';
import { httpParams } from './http-params.js';

interface FunctionParams {
  name: string;
  '*'?: string;
}

const METHODS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'] as const;

/**
 * OpenFaaS's gateway routes: `/function/{name}` waits for the result, `/async-function/{name}`
 * answers 202 with the call id. Unlike a bare OpenFaaS gateway, the caller authenticates
 * (HTTP Basic) and reaches the functions of its own namespace.
 */
export function registerOpenFaasRoutes(app: FastifyInstance, platform: Platform): void {
  rawBodyScope(app, (scope) => {
    const sync = async (request: FastifyRequest<{ Params: FunctionParams }>) => {
      const { namespace } = await authenticate(platform, request);
      const action = await platform.requireAction(namespace, assertEntityName('function', request.params.name));
      const params = httpParams(request, request.params['*'] ? `/${request.params['*']}` : '');
      return { namespace, action, params };
    };
    for (const path of ['/function/:name', '/function/:name/*']) {
      scope.route<{ Params: FunctionParams }>({
        method: [...METHODS],
        url: path,
        handler: async (request, reply) => {
          const { namespace, action, params } = await sync(request);
          const json = jsonRenderer();
          const outcome = await platform.invokeBlocking(action, params, namespace, [{ key: 'door', value: 'openfaas' }], {
            checkResult: json.check,
          });
          if (!outcome.done) return reply.code(202).header('x-call-id', outcome.activationId).send();
          const record = outcome.record;
          reply.header('x-call-id', record.activationId).header('x-duration-seconds', String(record.duration / 1000));
          const body = record.response.success ? json.render(record.response.result) : undefined;
          if (typeof body === 'string') return reply.code(200).type('application/json; charset=utf-8').send(body);
          // The function's own failure is a bad gateway; only the platform's is a 500.
          const status = record.response.status === 'whisk internal error' ? 500 : 502;
          return reply.code(status).send(errorBody(record.response.result, body, record.activationId, String(request.id)));
        },
      });
    }
    for (const path of ['/async-function/:name', '/async-function/:name/*']) {
      scope.route<{ Params: FunctionParams }>({
        method: [...METHODS],
        url: path,
        handler: async (request, reply) => {
          const { namespace, action, params } = await sync(request);
          const activationId = await platform.invokeAsync(action, params, namespace, [{ key: 'door', value: 'openfaas' }]);
          return reply.code(202).header('x-call-id', activationId).send();
        },
      });
    }
  });
}
