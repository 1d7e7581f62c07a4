import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import { notFound, unauthorized } from '../core/errors.js';
import { annotationValue } from '../core/types.js';
import type { Platform } from '../platform/platform.js';
import { basicCredentials } from './auth.js';
import { errorBody, rawBodyScope } from './door.js';
import { httpParams } from './http-params.js';
import { renderWebResult, WEB_EXTENSIONS, type WebExtension, type WebResponse, WebResultError } from './web-response.js';

interface WebParams {
  namespace: string;
  package: string;
  '*': string;
}

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
        const extension = (WEB_EXTENSIONS as readonly string[]).includes(maybeExt) ? (maybeExt as WebExtension) : undefined;
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
        } else if (requireAuth !== undefined && requireAuth !== null && requireAuth !== false) {
          // A secret; anything that is not one (stored before deploys checked it) keeps the action closed.
          const secret = typeof requireAuth === 'string' || typeof requireAuth === 'number' ? String(requireAuth) : '';
          if (secret === '' || !sameSecret(request.headers['x-require-whisk-auth'], secret)) throw unauthorized();
        }
        const params = httpParams(request, rest.length > 0 ? `/${rest.join('/')}` : '');
        // The result is rendered as the run ends, so that a result HTTP cannot carry is recorded as
        // the function's error; the door then sends exactly what was checked.
        let rendered: WebResponse | undefined;
        const checkResult = (result: unknown) => {
          try {
            rendered = renderWebResult(result, extension);
            return undefined;
          } catch (error) {
            if (error instanceof WebResultError) return error.message;
            throw error;
          }
        };
        const outcome = await platform.invokeBlocking(action, params, namespace, [{ key: 'door', value: 'web' }], {
          checkResult,
        });
        if (!outcome.done) return reply.code(202).send({ activationId: outcome.activationId });
        const record = outcome.record;
        reply.header('x-openwhisk-activation-id', record.activationId);
        const response = record.response;
        if (response.success) {
          // Rendered already, unless the run's record was made without the check.
          const problem = rendered === undefined ? checkResult(response.result) : undefined;
          if (rendered !== undefined) return sendRendered(reply, rendered);
          return reply.code(502).send(errorBody(undefined, new Error(problem), record.activationId, String(request.id)));
        }
        const status = response.status === 'whisk internal error' ? 500 : 502;
        return reply.code(status).send(errorBody(response.result, undefined, record.activationId, String(request.id)));
      },
    });
  });
}

function sendRendered(reply: FastifyReply, response: WebResponse) {
  for (const [name, value] of response.headers) reply.header(name, value);
  reply.code(response.statusCode);
  return response.body === undefined ? reply.send() : reply.send(response.body);
}

/** Compares the X-Require-Whisk-Auth header with the secret in constant time (over their digests). */
function sameSecret(given: string | string[] | undefined, secret: string): boolean {
  if (typeof given !== 'string') return false;
  const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();
  return timingSafeEqual(digest(given), digest(secret));
}
