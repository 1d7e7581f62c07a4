import type { FastifyInstance, FastifyReply } from 'fastify';
import { badRequest, notFound } from '../core/errors.js';
import { assertEntityName } from '../core/names.js';
import type { ActivationRecord } from '../core/types.js';
import type { Platform } from '../platform/platform.js';
import { draftFromPut } from './action-draft.js';
import { authenticate, resolveNamespace } from './auth.js';
import {
  ActionPutSchema,
  ActivationListQuerySchema,
  GetActionQuerySchema,
  InvokeQuerySchema,
  ListQuerySchema,
  PutQuerySchema,
  paramsFrom,
  parseOrThrow,
} from './schemas.js';
import { actionView, activationSummary, invokeStatus, resultView } from './views.js';

interface NamespaceParams {
  namespace: string;
}
interface ActionParams extends NamespaceParams {
  name: string;
}
interface ActivationParams extends NamespaceParams {
  id: string;
}

const ACTIVATION_ID = /^[0-9a-f]{32}$/;

/** OpenWhisk's REST API for namespaces, actions and activations. */
export function registerOpenWhiskRoutes(app: FastifyInstance, platform: Platform): void {
  const base = '/api/v1/namespaces/:namespace';
  const caller = async (request: Parameters<typeof authenticate>[1], requested: string) =>
    resolveNamespace(requested, await authenticate(platform, request));

  app.get('/api/v1/namespaces', async (request) => {
    const { namespace } = await authenticate(platform, request);
    return [namespace];
  });

  app.get<{ Params: NamespaceParams }>(`${base}/actions`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const page = parseOrThrow(ListQuerySchema, request.query, 'query');
    const actions = await platform.store.listActions(namespace, page);
    return actions.map((a) => actionView(a, { code: false }));
  });

  app.put<{ Params: ActionParams }>(`${base}/actions/:name`, { bodyLimit: platform.config.maxActionBytes }, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const { overwrite } = parseOrThrow(PutQuerySchema, request.query, 'query');
    const body = parseOrThrow(ActionPutSchema, request.body ?? {}, 'action');
    const name = assertEntityName('action', request.params.name);
    const current = overwrite ? await platform.getAction(namespace, name) : undefined;
    const stored = await platform.deploy(draftFromPut(namespace, name, body, current), overwrite);
    return actionView(stored);
  });

  app.get<{ Params: ActionParams }>(`${base}/actions/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const query = parseOrThrow(GetActionQuerySchema, request.query, 'query');
    const name = assertEntityName('action', request.params.name);
    const action = query.version
      ? await platform.store.getAction(namespace, name, query.version)
      : await platform.getAction(namespace, name);
    if (!action) throw notFound(`The action "${name}" does not exist${query.version ? ` at version ${query.version}` : ''}.`);
    return actionView(action, { code: query.code !== 'false' });
  });

  app.get<{ Params: ActionParams }>(`${base}/actions/:name/versions`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const name = assertEntityName('action', request.params.name);
    const versions = await platform.store.listVersions(namespace, name);
    if (versions.length === 0) throw notFound(`The action "${name}" does not exist.`);
    return versions.map((v) => actionView(v, { code: false }));
  });

  app.delete<{ Params: ActionParams }>(`${base}/actions/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    return actionView(await platform.deleteAction(namespace, assertEntityName('action', request.params.name)), { code: false });
  });

  app.post<{ Params: ActionParams }>(`${base}/actions/:name`, async (request, reply) => {
    const namespace = await caller(request, request.params.namespace);
    const query = parseOrThrow(InvokeQuerySchema, request.query, 'query');
    // As OpenWhisk: `timeout` bounds how long a blocking call waits, up to the server's own wait.
    const maxWaitMs = platform.config.blockingWaitMs;
    if (query.timeout !== undefined && query.timeout > maxWaitMs) {
      throw badRequest(`timeout must be a number of milliseconds from 0 to ${maxWaitMs}; got ${query.timeout}.`);
    }
    const params = paramsFrom(request.body);
    const action = await platform.requireAction(namespace, assertEntityName('action', request.params.name));
    if (!query.blocking) {
      const activationId = await platform.invokeAsync(action, params, namespace);
      return reply.code(202).send({ activationId });
    }
    const outcome = await platform.invokeBlocking(action, params, namespace, [], {
      ...(query.timeout !== undefined ? { waitMs: query.timeout } : {}),
    });
    if (!outcome.done) return reply.code(202).send({ activationId: outcome.activationId });
    return sendRecord(reply, outcome.record, query.result);
  });

  app.get<{ Params: NamespaceParams }>(`${base}/activations`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const query = parseOrThrow(ActivationListQuerySchema, request.query, 'query');
    const records = await platform.store.listActivations(namespace, {
      limit: query.limit,
      skip: query.skip,
      ...(query.name ? { name: query.name.replace(/^.*\//, '') } : {}),
      ...(query.since !== undefined ? { since: query.since } : {}),
      ...(query.upto !== undefined ? { upto: query.upto } : {}),
    });
    return query.docs ? records : records.map(activationSummary);
  });

  const findActivation = async (request: { params: ActivationParams } & Parameters<typeof authenticate>[1]) => {
    const namespace = await caller(request, request.params.namespace);
    const id = request.params.id;
    const record = ACTIVATION_ID.test(id) ? await platform.store.getActivation(namespace, id) : undefined;
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

function sendRecord(reply: FastifyReply, record: ActivationRecord, resultOnly: boolean) {
  reply.code(invokeStatus(record));
  return reply.send(resultOnly ? (record.response.result ?? {}) : record);
}
