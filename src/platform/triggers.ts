import { Cron } from 'croner';
import { badRequest, notFound } from '../core/errors.js';
import { newActivationId } from '../core/ids.js';
import { assertEntityName } from '../core/names.js';
import type { ActivationRecord, KeyValue } from '../core/types.js';
import { annotationValue } from '../core/types.js';
import type { RuleRecord, Store, TriggerRecord } from '../store/store.js';

export interface TriggerHost {
  store: Store;
  getAction: (namespace: string, name: string) => Promise<import('../core/types.js').ActionVersion | undefined>;
  invokeAsync: (
    action: import('../core/types.js').ActionVersion,
    params: Record<string, unknown>,
    subject: string,
    annotations: KeyValue[],
  ) => Promise<string>;
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
      const action = await this.host.getAction(namespace, rule.action);
      if (!action) {
        logs.push(
          JSON.stringify({ statusCode: 1, success: false, error: `The action ${rule.action} does not exist.`, ...ruleLog }),
        );
        continue;
      }
      try {
        const activationId = await this.host.invokeAsync(action, params, namespace, [
          { key: 'cause', value: triggerActivationId },
        ]);
        logs.push(JSON.stringify({ statusCode: 0, success: true, activationId, ...ruleLog }));
      } catch (error) {
        logs.push(JSON.stringify({ statusCode: 1, success: false, error: (error as Error).message, ...ruleLog }));
      }
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
    trigger: { namespace: rule.namespace, name: rule.trigger },
    action: { namespace: rule.namespace, name: rule.action },
    updated: rule.updated,
  };
}
