import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Platform } from '../platform/platform.js';
import { authenticate } from './auth.js';
import { rawBodyScope } from './door.js';
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
      const action = await platform.requireAction(namespace, request.params.name);
      const params = httpParams(request, request.params['*'] ? `/${request.params['*']}` : '');
      return { namespace, action, params };
    };
    for (const path of ['/function/:name', '/function/:name/*']) {
      scope.route<{ Params: FunctionParams }>({
        method: [...METHODS],
        url: path,
        handler: async (request, reply) => {
          const { namespace, action, params } = await sync(request);
          const outcome = await platform.invokeBlocking(action, params, namespace, [{ key: 'door', value: 'openfaas' }]);
          if (!outcome.done) return reply.code(202).header('x-call-id', outcome.activationId).send();
          const record = outcome.record;
          reply.header('x-call-id', record.activationId).header('x-duration-seconds', String(record.duration / 1000));
          if (record.response.success) return reply.code(200).send(record.response.result);
          return reply.code(500).send({ ...(record.response.result as object), code: String(request.id) });
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
