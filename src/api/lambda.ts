import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { IsolaError } from '../core/errors.js';
import type { ActivationRecord } from '../core/types.js';
import type { Caller, InvokeCommand, InvokeMode, InvokeOutcome } from '../platform/invoke.js';
import type { Platform } from '../platform/platform.js';
import { authenticateScope, basicCredentials, callerNamespace } from './auth.js';
import { attempt, invokeFor, jsonRenderer, outcomeError, rawBody, rawBodyScope, safeJson } from './door.js';
import { parseJson } from './json.js';
import { aliasVersion, registerAliasRoutes } from './lambda/aliases.js';
import { registerCodeLocationRoute } from './lambda/code-location.js';
import {
  invalidParameter,
  invalidRequestContent,
  LambdaError,
  lambdaErrorHandler,
  resourceNotFound,
  sendLambdaError,
} from './lambda/errors.js';
import { arnScope, registerFunctionRoutes } from './lambda/functions.js';
import { invokeTarget, lambdaVersion } from './lambda/names.js';
import { registerTagRoutes } from './lambda/tags.js';
import { LambdaQuerySchema, parseOrThrow } from './schemas.js';
import { parseSigV4, verifySigV4 } from './sigv4.js';

interface InvokeParams {
  name: string;
}

/** Lambda's invocation types, and the mode each asks of the platform. */
const INVOCATION_TYPES: Record<string, InvokeMode> = { RequestResponse: 'sync', Event: 'async', DryRun: 'dry-run' };

/** A Lambda Invoke, parsed. */
export interface LambdaCall {
  command: InvokeCommand;
  /** `X-Amz-Invocation-Type` as sent, when it is none of Lambda's: refused once the function is found. */
  unknownType?: string;
  /** The payload could not be read: refused once the function is found, as Lambda orders its checks. */
  badPayload?: IsolaError;
  qualifier?: string;
  /** The alias the qualifier names: the route resolves it to a version (see `resolveAlias`). */
  alias?: string;
  /** `X-Amz-Log-Type: Tail`: the log's end comes back in a header. */
  tail: boolean;
  json: ReturnType<typeof jsonRenderer>;
}

/** `POST /2015-03-31/functions/{name or ARN}/invocations?Qualifier=` with the event as its body. */
export function parseLambdaInvoke(
  request: { query: unknown; body: unknown; params: InvokeParams; headers: Record<string, string | string[] | undefined> },
  caller: Caller & { kind: 'namespace' },
): LambdaCall {
  const { Qualifier } = parseOrThrow(LambdaQuerySchema, request.query, 'query');
  const target = invokeTarget(caller.namespace, request.params.name, Qualifier);
  const ref = target.ref;
  const body = attempt(() => lambdaPayload(rawBody(request.body)));
  const clientContext = attempt(() => clientContextOf(request.headers['x-amz-client-context']));
  const payload = body instanceof IsolaError ? body : clientContext instanceof IsolaError ? clientContext : body;
  const type = String(request.headers['x-amz-invocation-type'] ?? 'RequestResponse');
  const mode = Object.hasOwn(INVOCATION_TYPES, type) ? INVOCATION_TYPES[type] : undefined;
  const json = jsonRenderer();
  return {
    command: {
      function: ref,
      params: payload instanceof IsolaError ? {} : payload,
      // What cannot be run is still looked up, so that a missing function is what the caller hears first.
      mode: mode === undefined || payload instanceof IsolaError ? 'dry-run' : mode,
      door: 'lambda',
      caller,
      checkResult: json.check,
      // As on Lambda, only a synchronous invocation hands its client context on.
      ...(typeof clientContext === 'string' && mode === 'sync' ? { clientContext } : {}),
    },
    ...(mode === undefined ? { unknownType: type } : {}),
    ...(payload instanceof IsolaError ? { badPayload: payload } : {}),
    ...(ref.version !== undefined || target.alias !== undefined ? { qualifier: target.qualifier ?? ref.version } : {}),
    ...(target.alias !== undefined ? { alias: target.alias } : {}),
    tail: String(request.headers['x-amz-log-type'] ?? '') === 'Tail',
    json,
  };
}

/** Lambda's answers: 204 for a dry run, 202 for an event, 200 with the result (or the function's error). */
export function formatLambdaInvoke(reply: FastifyReply, call: LambdaCall, outcome: InvokeOutcome) {
  if (outcome.kind === 'not-found') {
    const ref = call.command.function;
    throw call.qualifier !== undefined
      ? resourceNotFound(`Function not found: ${ref.name}:${call.qualifier.slice(0, 40)}`)
      : resourceNotFound(outcomeError(outcome).message);
  }
  if (call.badPayload) throw call.badPayload;
  reply.header('x-amzn-requestid', String(reply.request.id));
  // Lambda's name for what ran: $LATEST, or the version number a qualifier (or alias) chose.
  const executed = call.command.function.version === undefined ? '$LATEST' : lambdaVersion(outcome.function.version);
  reply.header('x-amz-executed-version', executed);
  if (outcome.kind === 'rejected') throw outcomeError(outcome);
  if (call.unknownType !== undefined)
    throw invalidParameter(
      `X-Amz-Invocation-Type must be RequestResponse, Event or DryRun; got ${call.unknownType.slice(0, 40)}.`,
    );
  switch (outcome.kind) {
    case 'dry-run':
      return reply.code(204).send();
    case 'accepted':
      return reply.code(202).header('x-isola-activation-id', outcome.activationId).send();
    case 'completed':
      return sendLambdaResult(reply, outcome.record, call.json, call.tail);
  }
}

/**
 * AWS Lambda's Invoke API (`POST /2015-03-31/functions/{name}/invocations`), so that the AWS SDK
 * and CLI work against Isola with `--endpoint-url`. Requests are signed with Signature V4 using
 * the namespace uuid as the access key id and its key as the secret; Basic auth works too.
 */
export function registerLambdaRoutes(app: FastifyInstance, platform: Platform): void {
  // The code links that GetFunction hands out are their own grant: no credentials.
  registerCodeLocationRoute(app, platform);
  rawBodyScope(app, (scope) => {
    scope.setErrorHandler(lambdaErrorHandler);
    authenticateScope(scope, (request) => lambdaCaller(platform, request));
    registerFunctionRoutes(scope, platform);
    registerTagRoutes(scope, platform);
    registerAliasRoutes(scope, platform);
    // Operations Isola does not serve (layers, permissions...) are named as Lambda names them.
    scope.all('/2015-03-31/*', async (request) => {
      const path = (request.raw.url ?? request.url).split('?')[0] ?? '';
      throw new LambdaError(
        404,
        'UnknownOperationException',
        `Isola's Lambda API does not serve ${request.method} ${path.slice(0, 200)}.`,
      );
    });
    scope.post<{ Params: InvokeParams }>('/2015-03-31/functions/:name/invocations', async (request, reply) => {
      const call = parseLambdaInvoke(request, { kind: 'namespace', namespace: callerNamespace(request) });
      await resolveAlias(platform, request, call);
      return formatLambdaInvoke(reply, call, await invokeFor(platform, request, reply, call.command));
    });
  });
}

/** An Invoke through an alias runs the version the alias's weights pick for this call. */
async function resolveAlias(platform: Platform, request: FastifyRequest, call: LambdaCall): Promise<void> {
  if (call.alias === undefined) return;
  const ref = call.command.function;
  const version = await aliasVersion(platform, arnScope(request), ref.name, call.alias, true);
  call.command.function = { ...ref, ...(version !== undefined ? { version } : {}) };
}

/** Signature V4 over the exact bytes sent, or HTTP Basic. */
async function lambdaCaller(platform: Platform, request: FastifyRequest): Promise<Caller> {
  const sig = parseSigV4(request.headers.authorization);
  if (sig) {
    const owner = await platform.namespaces.keyOf(sig.accessKeyId);
    if (!owner)
      throw new LambdaError(403, 'UnrecognizedClientException', 'The security token included in the request is invalid.');
    const problem = verifySigV4(
      { method: request.method, rawUrl: request.raw.url ?? request.url, headers: request.headers, body: rawBody(request.body) },
      sig,
      owner.key,
    );
    if (problem) throw new LambdaError(403, 'InvalidSignatureException', problem);
    return { kind: 'namespace', namespace: owner.namespace };
  }
  const basic = basicCredentials(request.headers.authorization);
  const namespace = basic ? await platform.authenticate(basic.uuid, basic.key) : undefined;
  // Lambda answers every failed authentication 403.
  if (!namespace && basic) throw new LambdaError(403, 'UnrecognizedClientException', 'The credentials are invalid.');
  if (!namespace)
    throw new LambdaError(
      403,
      'MissingAuthenticationTokenException',
      'Sign the request with AWS Signature V4 (access key = namespace uuid, secret = key) or use Basic auth.',
    );
  return { kind: 'namespace', namespace };
}

/** Lambda's bound on `X-Amz-Client-Context`, base64 as sent. */
const MAX_CLIENT_CONTEXT_CHARS = 3583;

/**
 * `X-Amz-Client-Context`: base64 of a JSON object, handed to a custom runtime as that JSON on one
 * line of ASCII (a header value), characters beyond it escaped as JSON escapes them.
 */
function clientContextOf(header: string | string[] | undefined): string | undefined {
  if (header === undefined || header === '') return undefined;
  const text = Array.isArray(header) ? header.join(',') : header;
  const refused = () =>
    invalidRequestContent(
      `X-Amz-Client-Context must be a base64-encoded JSON object of at most ${MAX_CLIENT_CONTEXT_CHARS} characters.`,
    );
  if (text.length > MAX_CLIENT_CONTEXT_CHARS || !/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw refused();
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(text, 'base64').toString('utf8'));
  } catch {
    throw refused();
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw refused();
  return JSON.stringify(value).replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A Lambda event is any JSON; Isola functions take an object, so anything else is wrapped. */
function lambdaPayload(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  let payload: unknown;
  try {
    payload = parseJson(body.toString('utf8'));
  } catch (error) {
    throw invalidRequestContent(error instanceof IsolaError ? error.message : 'Could not parse request body into json.');
  }
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
  // An error already in Lambda's shape (a custom runtime's, posted to the Runtime API) is the payload as it was given.
  if (body === undefined && response.status === 'application error' && isLambdaErrorBody(error)) {
    return reply
      .code(200)
      .header('x-amz-function-error', 'Unhandled')
      .header('content-type', 'application/json')
      .send(JSON.stringify(error));
  }
  const rendered = body ?? (typeof error === 'string' ? error : safeJson(error));
  const message = rendered instanceof Error ? rendered.message : rendered;
  if (response.status === 'whisk internal error') {
    return sendLambdaError(reply, 500, 'ServiceException', typeof message === 'string' ? message : String(message));
  }
  // Lambda answers 200 for a function's own failure and says so in a header.
  const errorType = response.status === 'application error' ? 'Error' : 'Runtime.ExitError';
  return reply
    .code(200)
    .header('x-amz-function-error', 'Unhandled')
    .header('content-type', 'application/json')
    .send(JSON.stringify({ errorMessage: message, errorType }));
}

function isLambdaErrorBody(error: unknown): boolean {
  if (error === null || typeof error !== 'object' || Array.isArray(error)) return false;
  const { errorMessage, errorType } = error as Record<string, unknown>;
  return typeof errorMessage === 'string' && typeof errorType === 'string';
}
