import type { FastifyInstance, FastifyReply } from 'fastify';
import { IsolaError, notFound, unauthorized } from '../core/errors.js';
import { annotationValue } from '../core/types.js';
import type { Platform } from '../platform/platform.js';
import { basicCredentials } from './auth.js';
import { rawBodyScope } from './door.js';
import { httpParams } from './http-params.js';

interface WebParams {
  namespace: string;
  package: string;
  '*': string;
}

const EXTENSIONS = ['json', 'html', 'http', 'text', 'svg'] as const;
type Extension = (typeof EXTENSIONS)[number];

/**
 * OpenWhisk web actions: `/api/v1/web/{namespace}/default/{action}[.ext][/path]` runs an action
 * annotated `web-export: true` without credentials and turns its result into the HTTP response.
 * `require-whisk-auth` (true, or a secret for the X-Require-Whisk-Auth header) puts it behind auth.
 */
export function registerWebActionRoutes(app: FastifyInstance, platform: Platform): void {
  rawBodyScope(app, (scope) => {
    scope.route<{ Params: WebParams }>({
      method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'],
      url: '/api/v1/web/:namespace/:package/*',
      handler: async (request, reply) => {
        const { namespace, package: pkg } = request.params;
        const [first = '', ...rest] = request.params['*'].split('/');
        const dot = first.lastIndexOf('.');
        const maybeExt = dot > 0 ? first.slice(dot + 1) : '';
        const extension = (EXTENSIONS as readonly string[]).includes(maybeExt) ? (maybeExt as Extension) : undefined;
        const name = extension ? first.slice(0, dot) : first;
        if (pkg !== 'default') throw notFound('Packages are not supported: web actions live in the package "default".');
        const action = await platform.getAction(namespace, name);
        const exported = action ? annotationValue(action.annotations, 'web-export') : undefined;
        if (!action || (exported !== true && exported !== 'true')) throw notFound();
        const requireAuth = annotationValue(action.annotations, 'require-whisk-auth');
        if (requireAuth === true || requireAuth === 'true') {
          const credentials = basicCredentials(request.headers.authorization);
          const caller = credentials ? await platform.authenticate(credentials.uuid, credentials.key) : undefined;
          if (caller !== namespace) throw unauthorized();
        } else if (typeof requireAuth === 'string' || typeof requireAuth === 'number') {
          if (String(request.headers['x-require-whisk-auth'] ?? '') !== String(requireAuth)) throw unauthorized();
        }
        const params = httpParams(request, rest.length > 0 ? `/${rest.join('/')}` : '');
        const outcome = await platform.invokeBlocking(action, params, namespace, [{ key: 'door', value: 'web' }]);
        if (!outcome.done) return reply.code(202).send({ activationId: outcome.activationId });
        const response = outcome.record.response;
        if (!response.success) {
          const status = response.status === 'whisk internal error' ? 500 : 502;
          return reply.code(status).send({ ...(response.result as object), code: String(request.id) });
        }
        return sendWebResult(reply, response.result as Record<string, unknown>, extension);
      },
    });
  });
}

function sendWebResult(reply: FastifyReply, result: Record<string, unknown>, extension: Extension | undefined) {
  switch (extension) {
    case 'json':
      return reply.code(200).send(result);
    case 'html':
      return reply
        .code(200)
        .type('text/html; charset=utf-8')
        .send(String(result.html ?? ''));
    case 'text':
      return reply
        .code(200)
        .type('text/plain; charset=utf-8')
        .send(String(result.text ?? ''));
    case 'svg':
      return reply
        .code(200)
        .type('image/svg+xml')
        .send(String(result.svg ?? ''));
    default:
      break;
  }
  const isHttp = extension === 'http' || 'body' in result || 'statusCode' in result || 'headers' in result;
  if (!isHttp) return reply.code(200).send(result);
  const statusCode = Number(result.statusCode ?? (result.body === undefined ? 204 : 200));
  if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 599) {
    throw new IsolaError(502, `The action returned an invalid statusCode: ${String(result.statusCode).slice(0, 20)}.`);
  }
  const headers = (result.headers ?? {}) as Record<string, unknown>;
  for (const [key, value] of Object.entries(headers)) reply.header(key, String(value));
  const body = result.body;
  if (body === undefined || body === null) return reply.code(statusCode).send();
  if (typeof body === 'object') return reply.code(statusCode).send(body);
  const contentType = String(Object.entries(headers).find(([k]) => k.toLowerCase() === 'content-type')?.[1] ?? '');
  // OpenWhisk's rule: a body for a binary content type is base64 and is decoded on the way out.
  if (contentType && !/^(text\/|application\/(json|xml|javascript))|\+xml|\+json/i.test(contentType)) {
    return reply.code(statusCode).send(Buffer.from(String(body), 'base64'));
  }
  if (!contentType) reply.type('text/html; charset=utf-8');
  return reply.code(statusCode).send(String(body));
}
