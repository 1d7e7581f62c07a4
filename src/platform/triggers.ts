import { Cron } from 'croner';
import { badRequest, notFound } from '../core/errors.js';
import { newActivationId } from '../core/ids.js';
import { assertEntityName, pathAndName, qualifiedName } from '../core/names.js';
import type { ActivationRecord, KeyValue } from '../core/types.js';
import { annotationValue } from '../core/types.js';
import type { ListPage, RuleRecord, Store, TriggerRecord } from '../store/store.js';
import type { InvokeCommand, InvokeOutcome } from './invoke.js';

export interface TriggerHost {
  store: Store;
  /** The platform's one invoke: each rule's action is invoked through it, asynchronously. */
  invoke: (command: InvokeCommand) => Promise<InvokeOutcome>;
  warn: (message: string) => void;
}

/** `/ns/name`, `ns/name` or `name`: the name, checked to be in this namespace. */
export function localName(reference: string, namespace: string, what: string): string {
  const parts = reference.replace(/^\//, '').split('/');
  const name = parts.pop() ?? '';
  const ns = parts.join('/');
  if (ns && ns !== '_' && ns !== namespace) throw badRequest(`The ${what} "${reference}" is not in namespace "${namespace}".`);
  return assertEntityName(what, name);
}

/**
 * OpenWhisk's triggers and rules: firing a trigger invokes, asynchronously, every action an
 * active rule binds to it, and records a trigger activation listing them. A trigger annotated
 * `cron` (five fields, or six with seconds) fires itself on that schedule, like OpenWhisk's
 * alarms feed, with its parameters as the payload.
 */
export class Triggers {
  private readonly schedules = new Map<string, Cron>();

  constructor(private readonly host: TriggerHost) {}

  /** Schedules every trigger that has a cron annotation. */
  async start(): Promise<void> {
    for (const trigger of await this.host.store.listTriggers()) this.schedule(trigger);
  }

  stop(): void {
    for (const job of this.schedules.values()) job.stop();
    this.schedules.clear();
  }

  get(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    return this.host.store.getTrigger(namespace, name);
  }

  async list(namespace: string, page: ListPage): Promise<TriggerRecord[]> {
    return (await this.host.store.listTriggers(namespace)).slice(page.skip, page.skip + page.limit);
  }

  /** Stores a trigger (its cron annotation checked first) and (re)schedules it. */
  async put(input: Omit<TriggerRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<TriggerRecord> {
    Triggers.validate(input.annotations);
    const stored = await this.host.store.putTrigger(input, options);
    this.schedule(stored);
    return stored;
  }

  /** Deletes a trigger and stops its schedule; undefined when there is none. */
  async delete(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    const trigger = await this.host.store.deleteTrigger(namespace, name);
    if (trigger) this.unschedule(namespace, trigger.name);
    return trigger;
  }

  /** Checks a cron annotation before it is stored; throws a 400 naming the problem. */
  static validate(annotations: readonly KeyValue[]): void {
    const cron = annotationValue(annotations, 'cron');
    if (cron === undefined) return;
    if (typeof cron !== 'string') throw badRequest('The annotation cron must be a cron expression such as "*/5 * * * *".');
    try {
      new Cron(cron, { paused: true }).stop();
    } catch (error) {
      throw badRequest(`The annotation cron is not a valid cron expression: ${(error as Error).message}`);
    }
  }

  schedule(trigger: TriggerRecord): void {
    const key = `${trigger.namespace}/${trigger.name}`;
    this.schedules.get(key)?.stop();
    this.schedules.delete(key);
    const cron = annotationValue(trigger.annotations, 'cron');
    if (typeof cron !== 'string') return;
    const job = new Cron(cron, { protect: true, unref: true }, () => {
      this.fire(trigger.namespace, trigger.name, {}, 'cron').catch((error: unknown) =>
        this.host.warn(`cron trigger ${key} failed: ${error instanceof Error ? error.message : String(error)}`),
      );
    });
    this.schedules.set(key, job);
  }

  unschedule(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    this.schedules.get(key)?.stop();
    this.schedules.delete(key);
  }

  /**
   * Fires a trigger: the payload over the trigger's parameters goes to each action of an active
   * rule. Returns the trigger activation's id, or undefined when no rule is active.
   */
  async fire(
    namespace: string,
    name: string,
    payload: Record<string, unknown>,
    cause: 'api' | 'cron',
  ): Promise<string | undefined> {
    const store = this.host.store;
    const trigger = await store.getTrigger(namespace, name);
    if (!trigger) throw notFound(`The trigger "${name}" does not exist.`);
    const rules = (await store.rulesFor(namespace, name)).filter((r) => r.status === 'active');
    if (rules.length === 0) return undefined;
    const triggerActivationId = newActivationId();
    const started = Date.now();
    const params = { ...Object.fromEntries(trigger.parameters.map((p) => [p.key, p.value])), ...payload };
    const logs: string[] = [];
    for (const rule of rules) {
      const ruleLog = { rule: `${namespace}/${rule.name}`, action: `${namespace}/${rule.action}` };
      let entry: Record<string, unknown>;
      try {
        const outcome = await this.host.invoke({
          function: { namespace, name: rule.action },
          params,
          mode: 'async',
          door: 'trigger',
          caller: { kind: 'namespace', namespace },
          cause: triggerActivationId,
        });
        entry = ruleEntry(outcome, rule.action);
      } catch (error) {
        entry = { statusCode: 1, success: false, error: (error as Error).message };
      }
      logs.push(JSON.stringify({ ...entry, ...ruleLog }));
    }
    const end = Date.now();
    const record: ActivationRecord = {
      activationId: triggerActivationId,
      namespace,
      name,
      version: trigger.version,
      subject: namespace,
      start: started,
      end,
      duration: end - started,
      response: { status: 'success', success: true, result: params },
      logs,
      annotations: [
        { key: 'path', value: `${namespace}/${name}` },
        { key: 'kind', value: 'trigger' },
        { key: 'cause', value: cause },
      ],
      publish: false,
    };
    await store.completeActivation(record, started);
    return triggerActivationId;
  }
}

/** A trigger activation's log line for one rule: the action's activation id, or why there is none. */
function ruleEntry(outcome: InvokeOutcome, action: string): Record<string, unknown> {
  switch (outcome.kind) {
    case 'accepted':
      return { statusCode: 0, success: true, activationId: outcome.activationId };
    case 'not-found':
      return { statusCode: 1, success: false, error: `The action ${action} does not exist.` };
    case 'rejected':
      return { statusCode: 1, success: false, error: outcome.message };
    default:
      return { statusCode: 1, success: false, error: `The action ${action} was not queued (${outcome.kind}).` };
  }
}

export function triggerView(trigger: TriggerRecord, rules: readonly RuleRecord[]) {
  return {
    namespace: trigger.namespace,
    name: trigger.name,
    version: trigger.version,
    publish: false,
    parameters: trigger.parameters,
    annotations: trigger.annotations,
    limits: {},
    rules: Object.fromEntries(
      rules.map((r) => [`${r.namespace}/${r.name}`, { action: { name: r.action, path: r.namespace }, status: r.status }]),
    ),
    updated: trigger.updated,
  };
}

export function ruleView(rule: RuleRecord) {
  return {
    namespace: rule.namespace,
    name: rule.name,
    version: rule.version,
    publish: false,
    status: rule.status,
    // OpenWhisk's fully qualified names: `path` is the namespace (and package), `name` the entity.
    trigger: { path: rule.namespace, name: rule.trigger },
    action: pathAndName(qualifiedName(rule.namespace, rule.action)),
    updated: rule.updated,
  };
}
