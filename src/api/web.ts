import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IsolaError, notFound, unauthorized } from '../core/errors.js';
import type { Caller, InvokeCommand, InvokeOutcome } from '../platform/invoke.js';
import type { Platform } from '../platform/platform.js';
import { authenticateScope, basicCredentials, callerOf } from './auth.js';
import { attempt, errorBody, invokeFor, outcomeError, rawBodyScope } from './door.js';
import { httpParams } from './http-params.js';
import { renderWebResult, WEB_EXTENSIONS, type WebExtension, type WebResponse, WebResultError } from './web-response.js';

interface WebParams {
  namespace: string;
  package: string;
  '*': string;
}

/** A web action call, parsed. */
export interface WebCall {
  command: InvokeCommand;
  /** The request could not be read: refused once the function is found and the caller let in. */
  badRequest?: IsolaError;
  /** The response the result describes, rendered as the run ends (see `checkResult`). */
  rendered: () => WebResponse | undefined;
}

/** What a web request runs: the function, the extension its result is rendered as, the path below it. */
export interface WebTarget {
  namespace: string;
  name: string;
  extension: WebExtension | undefined;
  /** `__ow_path`: the request's path past the function. */
  path: string;
  /** Parameters the URL itself carries (an API route's path parameters); they win over query and body. */
  pathParams?: Record<string, string>;
}

/**
 * `/api/v1/web/{namespace}/{package|default}/{action}[.ext][/path]`, any method, with any body. The result
 * is rendered as the run ends (the command's `checkResult`), so that a result HTTP cannot carry
 * is recorded as the function's error; the door then sends exactly what was checked.
 */
export function parseWebCall(request: FastifyRequest<{ Params: WebParams }>, caller: Caller): WebCall {
  const { namespace, package: pkg } = request.params;
  const [first = '', ...rest] = request.params['*'].split('/');
  const dot = first.lastIndexOf('.');
  const maybeExt = dot > 0 ? first.slice(dot + 1) : '';
  const extension = (WEB_EXTENSIONS as readonly string[]).includes(maybeExt) ? (maybeExt as WebExtension) : undefined;
  const base = extension ? first.slice(0, dot) : first;
  // `default` is OpenWhisk's name for "no package".
  const name = pkg === 'default' ? base : `${pkg}/${base}`;
  return webCall(request, caller, { namespace, name, extension, path: rest.length > 0 ? `/${rest.join('/')}` : '' });
}

/** A web call to a known target, from any door that serves web actions (the API gateway, too). */
export function webCall(request: FastifyRequest, caller: Caller, target: WebTarget): WebCall {
  const params = attempt(() => ({ ...httpParams(request, target.path), ...target.pathParams }));
  const failed = params instanceof IsolaError;
  let rendered: WebResponse | undefined;
  const checkResult = (result: unknown) => {
    try {
      rendered = renderWebResult(result, target.extension);
      return undefined;
    } catch (error) {
      if (error instanceof WebResultError) return error.message;
      throw error;
    }
  };
  return {
    command: {
      function: { namespace: target.namespace, name: target.name },
      params: failed ? {} : params,
      mode: failed ? 'dry-run' : 'sync',
      door: 'web',
      caller,
      checkResult,
    },
    ...(failed ? { badRequest: params } : {}),
    rendered: () => rendered,
  };
}

/** The response the function's result describes; the function's failure is a bad gateway. */
export function formatWebCall(reply: FastifyReply, call: WebCall, outcome: InvokeOutcome) {
  // A function the web may not see does not exist, whatever the reason.
  if (outcome.kind === 'not-found') throw notFound();
  if (outcome.kind === 'rejected' && outcome.reason === 'unauthorised') throw unauthorized();
  if (call.badRequest) throw call.badRequest;
  switch (outcome.kind) {
    case 'rejected':
      throw outcomeError(outcome);
    case 'dry-run':
      return reply.code(204).send();
    case 'accepted':
      return reply.code(202).send({ activationId: outcome.activationId });
    case 'completed': {
      const record = outcome.record;
      reply.header('x-openwhisk-activation-id', record.activationId);
      const response = record.response;
      if (response.success) {
        // Rendered already, unless the run's record was made without the check.
        const problem = call.rendered() === undefined ? call.command.checkResult?.(response.result) : undefined;
        const rendered = call.rendered();
        if (rendered !== undefined) return sendRendered(reply, rendered);
        return reply.code(502).send(errorBody(undefined, new Error(problem), record.activationId, String(reply.request.id)));
      }
      const status = response.status === 'whisk internal error' ? 500 : 502;
      return reply.code(status).send(errorBody(response.result, undefined, record.activationId, String(reply.request.id)));
    }
  }
}

/**
 * OpenWhisk web actions: `/api/v1/web/{namespace}/default/{action}[.ext][/path]` runs an action
 * annotated `web-export: true` without credentials and turns its result into the HTTP response.
 * `require-whisk-auth` (true, or a secret for the X-Require-Whisk-Auth header) puts it behind auth:
 * the scope's hook only reads what the request carries, and the platform checks it against the
 * action's annotation.
 */
export function registerWebActionRoutes(app: FastifyInstance, platform: Platform): void {
  rawBodyScope(app, (scope) => {
    authenticateScope(scope, async (request) => webCaller(request));
    scope.route<{ Params: WebParams }>({
      method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'],
      url: '/api/v1/web/:namespace/:package/*',
      handler: async (request, reply) => {
        const call = parseWebCall(request, callerOf(request));
        return formatWebCall(reply, call, await invokeFor(platform, request, reply, call.command));
      },
    });
  });
}

/** Whatever the request carries to prove who it is: Basic credentials, the X-Require-Whisk-Auth secret. */
export function webCaller(request: Pick<FastifyRequest, 'headers'>): Caller {
  const credentials = basicCredentials(request.headers.authorization);
  const secret = request.headers['x-require-whisk-auth'];
  return {
    kind: 'web',
    ...(credentials ? { credentials } : {}),
    ...(typeof secret === 'string' ? { secret } : {}),
  };
}

function sendRendered(reply: FastifyReply, response: WebResponse) {
  for (const [name, value] of response.headers) reply.header(name, value);
  reply.code(response.statusCode);
  return response.body === undefined ? reply.send() : reply.send(response.body);
}
