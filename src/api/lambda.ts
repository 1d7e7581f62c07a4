import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { badRequest, notFound, unauthorized } from '../core/errors.js';
import { assertEntityName } from '../core/names.js';
import type { ActionVersion, ActivationRecord } from '../core/types.js';
import type { Platform } from '../platform/platform.js';
import { basicCredentials } from './auth.js';
import { jsonRenderer, rawBody, rawBodyScope, safeJson } from './door.js';
import { parseJson } from './json.js';
import { LambdaQuerySchema, parseOrThrow } from './schemas.js';
import { parseSigV4, verifySigV4 } from './sigv4.js';

interface InvokeParams {
  name: string;
}

/**
 * AWS Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`), so that the AWS SDK
 * and CLI work against Isola with `--endpoint-url`. Requests are signed with Signature V4 using
 * the namespace uuid as the access key id and its key as the secret; Basic auth works too.
 */
export function registerLambdaRoutes(app: FastifyInstance, platform: Platform): void {
  rawBodyScope(app, (scope) => {
    scope.post<{ Params: InvokeParams }>('/2015-03-31/functions/:name/invocations', async (request, reply) => {
      const namespace = await authenticateLambda(platform, request);
      const { Qualifier } = parseOrThrow(LambdaQuerySchema, request.query, 'query');
      const name = request.params.name.replace(/^arn:aws:lambda:[^:]*:[^:]*:function:/, '').replace(/:.*$/, '');
      const action = await resolveQualified(platform, namespace, assertEntityName('function', name), Qualifier);
      const params = lambdaPayload(rawBody(request.body));
      const type = String(request.headers['x-amz-invocation-type'] ?? 'RequestResponse');
      reply.header('x-amzn-requestid', String(request.id));
      reply.header('x-amz-executed-version', action.version);
      if (type === 'DryRun') return reply.code(204).send();
      if (type === 'Event') {
        const activationId = await platform.invokeAsync(action, params, namespace, [{ key: 'door', value: 'lambda' }]);
        return reply.code(202).header('x-isola-activation-id', activationId).send();
      }
      if (type !== 'RequestResponse')
        throw badRequest(`X-Amz-Invocation-Type must be RequestResponse, Event or DryRun; got ${type.slice(0, 40)}.`);
      const json = jsonRenderer();
      const outcome = await platform.invokeBlocking(action, params, namespace, [{ key: 'door', value: 'lambda' }], {
        checkResult: json.check,
      });
      if (!outcome.done) return reply.code(202).header('x-isola-activation-id', outcome.activationId).send();
      return sendLambdaResult(reply, outcome.record, json, String(request.headers['x-amz-log-type'] ?? '') === 'Tail');
    });
  });
}

async function authenticateLambda(platform: Platform, request: FastifyRequest): Promise<string> {
  const sig = parseSigV4(request.headers.authorization);
  if (sig) {
    const owner = await platform.store.keyOf(sig.accessKeyId);
    if (!owner) throw unauthorized('The security token included in the request is invalid.');
    const problem = verifySigV4(
      { method: request.method, rawUrl: request.raw.url ?? request.url, headers: request.headers, body: rawBody(request.body) },
      sig,
      owner.key,
    );
    if (problem) throw unauthorized(problem);
    return owner.namespace;
  }
  const basic = basicCredentials(request.headers.authorization);
  const namespace = basic ? await platform.authenticate(basic.uuid, basic.key) : undefined;
  if (!namespace)
    throw unauthorized('Sign the request with AWS Signature V4 (access key = namespace uuid, secret = key) or use Basic auth.');
  return namespace;
}

async function resolveQualified(platform: Platform, namespace: string, name: string, qualifier?: string): Promise<ActionVersion> {
  if (!qualifier || qualifier === '$LATEST') return platform.requireAction(namespace, name);
  const action = await platform.store.getAction(namespace, name, qualifier);
  if (!action) throw notFound(`Function not found: ${name}:${qualifier.slice(0, 40)}`);
  return action;
}

/** A Lambda event is any JSON; Isola functions take an object, so anything else is wrapped. */
function lambdaPayload(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  const payload = parseJson(body.toString('utf8'));
  if (payload !== null && typeof payload === 'object' && !Array.isArray(payload)) return payload as Record<string, unknown>;
  return { payload };
}

function sendLambdaResult(reply: FastifyReply, record: ActivationRecord, json: ReturnType<typeof jsonRenderer>, tail: boolean) {
  reply.header('x-isola-activation-id', record.activationId);
  if (tail) reply.header('x-amz-log-result', Buffer.from(record.logs.join('\n').slice(-4096)).toString('base64'));
  const response = record.response;
  const body = response.success ? json.render(response.result) : undefined;
  if (typeof body === 'string') return reply.code(200).header('content-type', 'application/json').send(body);
  const error = (response.result as { error?: unknown } | undefined)?.error ?? response.result;
  const rendered = body ?? (typeof error === 'string' ? error : safeJson(error));
  const message = rendered instanceof Error ? rendered.message : rendered;
  if (response.status === 'whisk internal error') {
    return reply.code(500).send({ error: message, code: String(reply.request.id), Type: 'Service', message });
  }
  // Lambda answers 200 for a function's own failure and says so in a header.
  const errorType = response.status === 'application error' ? 'Error' : 'Runtime.ExitError';
  return reply
    .code(200)
    .header('x-amz-function-error', 'Unhandled')
    .header('content-type', 'application/json')
    .send(JSON.stringify({ errorMessage: message, errorType }));
}
