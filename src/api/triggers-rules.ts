import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { badRequest, IsolaError, notFound } from '../core/errors.js';
import { assertEntityName, parseReference, qualifiedName, viewedName } from '../core/names.js';
import type { Platform } from '../platform/platform.js';
import { localName, ruleView, triggerView } from '../platform/triggers.js';
import { authenticateScope, namespaceAuth, pathNamespace } from './auth.js';
import { KeyValueSchema, ListQuerySchema, PutQuerySchema, paramsFrom, parseOrThrow } from './schemas.js';

const TriggerPutSchema = z.strictObject({
  namespace: z.string().optional(),
  name: z.string().optional(),
  version: z.string().optional(),
  publish: z.boolean().optional(),
  parameters: z.array(KeyValueSchema).max(1000).optional(),
  annotations: z.array(KeyValueSchema).max(1000).optional(),
  limits: z.strictObject({}).optional(),
});

const RulePutSchema = z.strictObject({
  namespace: z.string().optional(),
  name: z.string().optional(),
  version: z.string().optional(),
  publish: z.boolean().optional(),
  trigger: z.string().min(1),
  action: z.string().min(1),
  status: z.enum(['active', 'inactive', '']).optional(),
});

const RuleStatusSchema = z.strictObject({ status: z.enum(['active', 'inactive']) });

interface Params {
  namespace: string;
  name: string;
}

/** OpenWhisk's `/triggers` and `/rules`. */
export function registerTriggerRoutes(app: FastifyInstance, platform: Platform): void {
  void app.register(async (scope) => {
    authenticateScope(scope, namespaceAuth(platform));
    registerRoutes(scope, platform);
  });
}

function registerRoutes(app: FastifyInstance, platform: Platform): void {
  const base = '/api/v1/namespaces/:namespace';
  const { triggers, rules } = platform;

  app.get<{ Params: Omit<Params, 'name'> }>(`${base}/triggers`, async (request) => {
    const page = parseOrThrow(ListQuerySchema, request.query, 'query');
    return (await triggers.list(pathNamespace(request), page)).map((t) => triggerView(t, []));
  });

  app.put<{ Params: Params }>(`${base}/triggers/:name`, async (request) => {
    const namespace = pathNamespace(request);
    const name = assertEntityName('trigger', request.params.name);
    const { overwrite } = parseOrThrow(PutQuerySchema, request.query, 'query');
    const body = parseOrThrow(TriggerPutSchema, request.body ?? {}, 'trigger');
    const current = overwrite ? await triggers.get(namespace, name) : undefined;
    const stored = await triggers.put(
      {
        namespace,
        name,
        parameters: (body.parameters ?? current?.parameters ?? []).map((p) => ({ key: p.key, value: p.value ?? null })),
        annotations: (body.annotations ?? current?.annotations ?? []).map((a) => ({ key: a.key, value: a.value ?? null })),
      },
      { overwrite },
    );
    return triggerView(stored, await rules.forTrigger(namespace, name));
  });

  app.get<{ Params: Params }>(`${base}/triggers/:name`, async (request) => {
    const namespace = pathNamespace(request);
    const name = assertEntityName('trigger', request.params.name);
    const trigger = await triggers.get(namespace, name);
    if (!trigger) throw notFound(`The trigger "${name}" does not exist.`);
    return triggerView(trigger, await rules.forTrigger(namespace, trigger.name));
  });

  app.delete<{ Params: Params }>(`${base}/triggers/:name`, async (request) => {
    const trigger = await triggers.delete(pathNamespace(request), assertEntityName('trigger', request.params.name));
    if (!trigger) throw notFound(`The trigger "${request.params.name}" does not exist.`);
    return triggerView(trigger, []);
  });

  app.post<{ Params: Params }>(`${base}/triggers/:name`, async (request, reply) => {
    const name = assertEntityName('trigger', request.params.name);
    const activationId = await triggers.fire(pathNamespace(request), name, paramsFrom(request.body), 'api');
    if (!activationId) return reply.code(204).send();
    return reply.code(202).send({ activationId });
  });

  app.get<{ Params: Omit<Params, 'name'> }>(`${base}/rules`, async (request) => {
    const page = parseOrThrow(ListQuerySchema, request.query, 'query');
    return (await rules.list(pathNamespace(request), page)).map(ruleView);
  });

  app.put<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const namespace = pathNamespace(request);
    const name = assertEntityName('rule', request.params.name);
    const { overwrite } = parseOrThrow(PutQuerySchema, request.query, 'query');
    const body = parseOrThrow(RulePutSchema, request.body ?? {}, 'rule');
    const trigger = localName(body.trigger, namespace, 'trigger');
    const action = asBadRequest(() => viewedName(parseReference(body.action, namespace), namespace));
    if (!(await triggers.get(namespace, trigger))) throw badRequest(`The trigger "${trigger}" does not exist.`);
    if (!(await platform.findAction({ namespace, name: action })))
      throw badRequest(`The action "${qualifiedName(namespace, action)}" does not exist.`);
    const stored = await rules.put(
      { namespace, name, trigger, action, status: body.status === 'inactive' ? 'inactive' : 'active' },
      { overwrite },
    );
    return ruleView(stored);
  });

  app.get<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const rule = await rules.get(pathNamespace(request), assertEntityName('rule', request.params.name));
    if (!rule) throw notFound(`The rule "${request.params.name}" does not exist.`);
    return ruleView(rule);
  });

  app.post<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const namespace = pathNamespace(request);
    const { status } = parseOrThrow(RuleStatusSchema, request.body ?? {}, 'rule status');
    const rule = await rules.get(namespace, assertEntityName('rule', request.params.name));
    if (!rule) throw notFound(`The rule "${request.params.name}" does not exist.`);
    await rules.setStatus(namespace, rule.name, status);
    return ruleView({ ...rule, status });
  });

  app.delete<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const rule = await rules.delete(pathNamespace(request), assertEntityName('rule', request.params.name));
    if (!rule) throw notFound(`The rule "${request.params.name}" does not exist.`);
    return ruleView(rule);
  });
}

/** In a rule's body, an action that may not be used is a bad request, not a refused call. */
function asBadRequest<T>(read: () => T): T {
  try {
    return read();
  } catch (error) {
    throw error instanceof IsolaError ? badRequest(error.message) : error;
  }
}
