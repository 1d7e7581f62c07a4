import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { badRequest, notFound } from '../core/errors.js';
import { LIMIT_RANGES } from '../core/limits.js';
import { assertActionName, parseReference, qualifiedName, viewedName } from '../core/names.js';
import type { Caller, InvokeCommand, InvokeOutcome } from '../platform/invoke.js';
import type { Platform } from '../platform/platform.js';
import { MAX_SEQUENCE_ACTIONS } from '../platform/sequences.js';
import { draftFromPut } from './action-draft.js';
import { authenticateScope, callerNamespace, callerOf, namespaceAuth, pathNamespace } from './auth.js';
import { invokeFor, outcomeError } from './door.js';
import {
  ActionPutSchema,
  ActivationListQuerySchema,
  GetActionQuerySchema,
  InvokeQuerySchema,
  ListQuerySchema,
  memoisedQueryParser,
  PutQuerySchema,
  paramsFrom,
  parseOrThrow,
  rawQueryOf,
} from './schemas.js';
import { actionView, activationSummary, invokeStatus, resultView } from './views.js';

interface NamespaceParams {
  namespace: string;
}
interface ActionParams extends NamespaceParams {
  /** Present on `/actions/{package}/{name}`. */
  package?: string;
  name: string;
}
interface ActivationParams extends NamespaceParams {
  id: string;
}

const ACTIVATION_ID = /^[0-9a-f]{32}$/;

/** An OpenWhisk invoke, parsed: the command, and whether the answer is the result alone. */
export interface OpenWhiskCall {
  command: InvokeCommand;
  resultOnly: boolean;
}

/** Every invoke of a busy client has the same query string: it is validated once. */
const parseInvokeQuery = memoisedQueryParser(InvokeQuerySchema);

/**
 * `POST /namespaces/{ns}/actions/{name}?blocking=&result=&timeout=` with the params as its body.
 * With the request's `url`, the query is parsed once per distinct query string.
 * `maxWaitMs` is the server's blocking wait: as OpenWhisk, `timeout` bounds how long a blocking
 * call waits, up to that.
 */
export function parseOpenWhiskInvoke(
  request: { query: unknown; body: unknown; url?: string },
  ref: { namespace: string; name: string },
  caller: Caller,
  maxWaitMs: number,
): OpenWhiskCall {
  const query = parseInvokeQuery(request.url === undefined ? undefined : rawQueryOf(request.url), request.query);
  if (query.timeout !== undefined && query.timeout > maxWaitMs) {
    throw badRequest(`timeout must be a number of milliseconds from 0 to ${maxWaitMs}; got ${query.timeout}.`);
  }
  const params = paramsFrom(request.body);
  return {
    command: {
      function: ref,
      params,
      mode: query.blocking ? 'sync' : 'async',
      door: 'openwhisk',
      caller,
      ...(query.blocking && query.timeout !== undefined ? { waitMs: query.timeout } : {}),
    },
    resultOnly: query.result,
  };
}

/**
 * The answer to an invoke through this door, as a status and a payload (none for a dry run):
 * one shape for the Fastify route and the lean path (lean-invoke.ts) alike.
 */
export function openWhiskInvokeAnswer(call: OpenWhiskCall, outcome: InvokeOutcome): { status: number; payload?: unknown } {
  switch (outcome.kind) {
    case 'not-found':
    case 'rejected':
      throw outcomeError(outcome);
    case 'accepted':
      return { status: 202, payload: { activationId: outcome.activationId } };
    case 'dry-run':
      // OpenWhisk has no dry run and its door never asks for one; were it to, nothing ran.
      return { status: 204 };
    case 'completed': {
      const record = outcome.record;
      return { status: invokeStatus(record), payload: call.resultOnly ? (record.response.result ?? {}) : record };
    }
  }
}

/** OpenWhisk's answers: 202 with the activation id, or the record (or its result) with its status. */
export function formatOpenWhiskInvoke(reply: FastifyReply, call: OpenWhiskCall, outcome: InvokeOutcome) {
  const { status, payload } = openWhiskInvokeAnswer(call, outcome);
  return reply.code(status).send(payload);
}

/**
 * The limits a deploy is checked against, under OpenWhisk's names (`actionDuration*` is the
 * timeout in ms). Only what Isola enforces: it has no per-minute invocation or fire quotas.
 * Memory tops out at the server's budget (a deploy above it is refused); logs are in KB, the unit
 * `limits.logs` takes here.
 */
export function namespaceLimits(memoryBudgetMb: number) {
  const { memory, timeout, concurrency, logs } = LIMIT_RANGES;
  return {
    actionMemoryMax: Math.min(memory.max, memoryBudgetMb),
    actionMemoryMin: memory.min,
    actionDurationMax: timeout.max,
    actionDurationMin: timeout.min,
    actionConcurrencyMax: concurrency.max,
    actionConcurrencyMin: concurrency.min,
    actionLogsMax: logs.max,
    actionLogsMin: logs.min,
    actionSequenceMaxLimit: MAX_SEQUENCE_ACTIONS,
  };
}

/** OpenWhisk's REST API for namespaces, actions and activations. */
export function registerOpenWhiskRoutes(app: FastifyInstance, platform: Platform): void {
  void app.register(async (scope) => {
    authenticateScope(scope, namespaceAuth(platform));
    registerRoutes(scope, platform);
  });
}

function registerRoutes(app: FastifyInstance, platform: Platform): void {
  const base = '/api/v1/namespaces/:namespace';

  app.get('/api/v1/namespaces', async (request) => [callerNamespace(request)]);

  app.get<{ Params: NamespaceParams }>(`${base}/limits`, async (request) => {
    pathNamespace(request);
    return namespaceLimits(platform.config.memoryBudgetMb);
  });

  app.get<{ Params: NamespaceParams }>(`${base}/actions`, async (request) => {
    const page = parseOrThrow(ListQuerySchema, request.query, 'query');
    const actions = await platform.actions.list(pathNamespace(request), page);
    return actions.map((a) => actionView(a, { code: false }));
  });

  // `/actions/{name}` and `/actions/{package}/{name}`: reads and invokes may name another
  // namespace's shared package; writes only the caller's own namespace.
  for (const path of [`${base}/actions/:name`, `${base}/actions/:package/:name`]) {
    app.put<{ Params: ActionParams }>(path, { bodyLimit: platform.config.maxActionBytes }, async (request) => {
      const namespace = pathNamespace(request);
      const { overwrite } = parseOrThrow(PutQuerySchema, request.query, 'query');
      const body = parseOrThrow(ActionPutSchema, request.body ?? {}, 'action');
      const name = ownActionName(request.params);
      const current = overwrite ? await platform.actions.get(namespace, name) : undefined;
      const stored = await platform.deploy(draftFromPut(namespace, name, body, current), overwrite);
      return actionView(stored);
    });

    app.get<{ Params: ActionParams }>(path, { config: { shared: true } }, async (request) => {
      const ref = actionRef(request);
      const query = parseOrThrow(GetActionQuerySchema, request.query, 'query');
      const action = await platform.findAction({ ...ref, ...(query.version ? { version: query.version } : {}) });
      if (!action)
        throw notFound(
          `The action "${qualifiedName(ref.namespace, ref.name)}" does not exist${query.version ? ` at version ${query.version}` : ''}.`,
        );
      return actionView(action, { code: query.code !== 'false' });
    });

    app.delete<{ Params: ActionParams }>(path, async (request) => {
      const name = ownActionName(request.params);
      return actionView(await platform.deleteAction(pathNamespace(request), name), { code: false });
    });

    app.post<{ Params: ActionParams }>(path, { config: { shared: true } }, async (request, reply) => {
      const call = parseOpenWhiskInvoke(request, actionRef(request), callerOf(request), platform.config.blockingWaitMs);
      return formatOpenWhiskInvoke(reply, call, await invokeFor(platform, request, reply, call.command));
    });
  }

  app.get<{ Params: ActionParams }>(`${base}/actions/:name/versions`, async (request) => {
    const name = ownActionName(request.params);
    const versions = await platform.actions.versions(pathNamespace(request), name);
    if (versions.length === 0) throw notFound(`The action "${name}" does not exist.`);
    return versions.map((v) => actionView(v, { code: false }));
  });

  app.get<{ Params: ActionParams }>(`${base}/actions/:package/:name/versions`, async (request) => {
    const name = ownActionName(request.params);
    const versions = await platform.actions.versions(pathNamespace(request), name);
    if (versions.length === 0) throw notFound(`The action "${name}" does not exist.`);
    return versions.map((v) => actionView(v, { code: false }));
  });

  app.get<{ Params: NamespaceParams }>(`${base}/activations`, async (request) => {
    const query = parseOrThrow(ActivationListQuerySchema, request.query, 'query');
    const namespace = pathNamespace(request);
    const records = await platform.activations.list(namespace, {
      limit: query.limit,
      skip: query.skip,
      ...(query.name ? { name: activationName(query.name, namespace) } : {}),
      ...(query.since !== undefined ? { since: query.since } : {}),
      ...(query.upto !== undefined ? { upto: query.upto } : {}),
    });
    return query.docs ? records : records.map(activationSummary);
  });

  const findActivation = async (request: FastifyRequest<{ Params: ActivationParams }>) => {
    const id = request.params.id;
    const record = ACTIVATION_ID.test(id) ? await platform.activations.get(pathNamespace(request), id) : undefined;
    if (!record) throw notFound(`The activation ${id.slice(0, 64)} does not exist (or has not finished yet).`);
    return record;
  };

  app.get<{ Params: ActivationParams }>(`${base}/activations/:id`, (request) => findActivation(request));
  app.get<{ Params: ActivationParams }>(`${base}/activations/:id/logs`, async (request) => ({
    logs: (await findActivation(request)).logs,
  }));
  app.get<{ Params: ActivationParams }>(`${base}/activations/:id/result`, async (request) =>
    resultView(await findActivation(request)),
  );
}

/** The action a path names in the caller's own namespace: `name` or `package/name`. */
function ownActionName(params: ActionParams): string {
  return assertActionName(params.package === undefined ? params.name : `${params.package}/${params.name}`);
}

/**
 * The action a path names, as the caller's namespace sees it: its own, or one in another
 * namespace's shared package (named from the caller's namespace as `owner/package/action`).
 */
function actionRef(request: FastifyRequest<{ Params: ActionParams }>): { namespace: string; name: string } {
  const viewer = callerNamespace(request);
  const ref = { namespace: pathNamespace(request), name: ownActionName(request.params) };
  return { namespace: viewer, name: viewedName(ref, viewer) };
}

/** The name an activation filter gives, as stored: `name`, `package/name`, or a fully qualified one. */
function activationName(given: string, namespace: string): string {
  if (!given.startsWith('/')) return given;
  return viewedName(parseReference(given, namespace), namespace);
}
