import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { badRequest, notFound } from '../core/errors.js';
import { assertEntityName } from '../core/names.js';
import type { Platform } from '../platform/platform.js';
import { localName, ruleView, Triggers, triggerView } from '../platform/triggers.js';
import { authenticate, resolveNamespace } from './auth.js';
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
  const base = '/api/v1/namespaces/:namespace';
  const caller = async (request: Parameters<typeof authenticate>[1], requested: string) =>
    resolveNamespace(requested, await authenticate(platform, request));
  const store = platform.store;

  app.get<{ Params: Omit<Params, 'name'> }>(`${base}/triggers`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const page = parseOrThrow(ListQuerySchema, request.query, 'query');
    const triggers = (await store.listTriggers(namespace)).slice(page.skip, page.skip + page.limit);
    return triggers.map((t) => triggerView(t, []));
  });

  app.put<{ Params: Params }>(`${base}/triggers/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const name = assertEntityName('trigger', request.params.name);
    const { overwrite } = parseOrThrow(PutQuerySchema, request.query, 'query');
    const body = parseOrThrow(TriggerPutSchema, request.body ?? {}, 'trigger');
    const current = overwrite ? await store.getTrigger(namespace, name) : undefined;
    const annotations = (body.annotations ?? current?.annotations ?? []).map((a) => ({ key: a.key, value: a.value ?? null }));
    Triggers.validate(annotations);
    const stored = await store.putTrigger(
      {
        namespace,
        name,
        parameters: (body.parameters ?? current?.parameters ?? []).map((p) => ({ key: p.key, value: p.value ?? null })),
        annotations,
      },
      { overwrite },
    );
    platform.triggers.schedule(stored);
    return triggerView(stored, await store.rulesFor(namespace, name));
  });

  app.get<{ Params: Params }>(`${base}/triggers/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const name = assertEntityName('trigger', request.params.name);
    const trigger = await store.getTrigger(namespace, name);
    if (!trigger) throw notFound(`The trigger "${name}" does not exist.`);
    return triggerView(trigger, await store.rulesFor(namespace, trigger.name));
  });

  app.delete<{ Params: Params }>(`${base}/triggers/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const name = assertEntityName('trigger', request.params.name);
    const trigger = await store.deleteTrigger(namespace, name);
    if (!trigger) throw notFound(`The trigger "${name}" does not exist.`);
    platform.triggers.unschedule(namespace, trigger.name);
    return triggerView(trigger, []);
  });

  app.post<{ Params: Params }>(`${base}/triggers/:name`, async (request, reply) => {
    const namespace = await caller(request, request.params.namespace);
    const name = assertEntityName('trigger', request.params.name);
    const activationId = await platform.triggers.fire(namespace, name, paramsFrom(request.body), 'api');
    if (!activationId) return reply.code(204).send();
    return reply.code(202).send({ activationId });
  });

  app.get<{ Params: Omit<Params, 'name'> }>(`${base}/rules`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const page = parseOrThrow(ListQuerySchema, request.query, 'query');
    return (await store.listRules(namespace)).slice(page.skip, page.skip + page.limit).map(ruleView);
  });

  app.put<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const name = assertEntityName('rule', request.params.name);
    const { overwrite } = parseOrThrow(PutQuerySchema, request.query, 'query');
    const body = parseOrThrow(RulePutSchema, request.body ?? {}, 'rule');
    const trigger = localName(body.trigger, namespace, 'trigger');
    const action = localName(body.action, namespace, 'action');
    if (!(await store.getTrigger(namespace, trigger))) throw badRequest(`The trigger "${trigger}" does not exist.`);
    if (!(await platform.getAction(namespace, action))) throw badRequest(`The action "${action}" does not exist.`);
    const stored = await store.putRule(
      { namespace, name, trigger, action, status: body.status === 'inactive' ? 'inactive' : 'active' },
      { overwrite },
    );
    return ruleView(stored);
  });

  app.get<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const rule = await store.getRule(namespace, assertEntityName('rule', request.params.name));
    if (!rule) throw notFound(`The rule "${request.params.name}" does not exist.`);
    return ruleView(rule);
  });

  app.post<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const { status } = parseOrThrow(RuleStatusSchema, request.body ?? {}, 'rule status');
    const rule = await store.getRule(namespace, assertEntityName('rule', request.params.name));
    if (!rule) throw notFound(`The rule "${request.params.name}" does not exist.`);
    await store.setRuleStatus(namespace, rule.name, status);
    return ruleView({ ...rule, status });
  });

  app.delete<{ Params: Params }>(`${base}/rules/:name`, async (request) => {
    const namespace = await caller(request, request.params.namespace);
    const rule = await store.deleteRule(namespace, assertEntityName('rule', request.params.name));
    if (!rule) throw notFound(`The rule "${request.params.name}" does not exist.`);
    return ruleView(rule);
  });
}
