import { Cron } from 'croner';
import { badRequest, conflict, forbidden, notFound } from '../core/errors.js';
import { newActivationId } from '../core/ids.js';
import { assertEntityName, pathAndName, qualifiedName } from '../core/names.js';
import type { ActivationRecord, KeyValue } from '../core/types.js';
import { annotationValue } from '../core/types.js';
import type { ListPage, RuleRecord, Store, TriggerRecord } from '../store/store.js';
import {
  ALARM_ANNOTATION,
  type Alarm,
  type AlarmFeedAnswer,
  AlarmFeedEventSchema,
  AlarmSchema,
  alarmOf,
  checkAlarm,
  createdAlarm,
  cronJob,
  endAfterFiring,
  endedAlarm,
  pausedAlarm,
  planAlarm,
  readAnswer,
  updatedAlarm,
  withAlarm,
} from './alarms.js';
import type { InvokeCommand, InvokeOutcome } from './invoke.js';

export interface TriggerHost {
  store: Store;
  /** The platform's one invoke: each rule's action is invoked through it, asynchronously. */
  invoke: (command: InvokeCommand) => Promise<InvokeOutcome>;
  warn: (message: string) => void;
  /**
   * In a cluster, every controller runs every schedule: one firing per tick is taken by whoever
   * claims the tick first (`key` names the trigger and the tick's planned time). Alone, all fire.
   */
  claimTick?: (key: string) => Promise<boolean>;
  /** Told of every trigger stored or deleted here (a cluster's other controllers reschedule it). */
  changed?: (namespace: string, name: string) => void;
}

/** `/ns/name`, `ns/name` or `name`: the name, checked to be in this namespace. */
export function localName(reference: string, namespace: string, what: string): string {
  const parts = reference.replace(/^\//, '').split('/');
  const name = parts.pop() ?? '';
  const ns = parts.join('/');
  if (ns && ns !== '_' && ns !== namespace) throw badRequest(`The ${what} "${reference}" is not in namespace "${namespace}".`);
  return assertEntityName(what, name);
}

/** `/ns/name`, `ns/name` or `name` as a feed names a trigger: `_` or no namespace is the subject's. */
function feedTrigger(reference: string, subject: string): { namespace: string; name: string } {
  const parts = reference.replace(/^\//, '').split('/');
  const name = assertEntityName('trigger', parts.pop() ?? '');
  const namespace = parts.join('/');
  if (namespace && namespace !== '_' && namespace !== subject) {
    throw forbidden(`The trigger "${reference}" is not in namespace "${subject}".`);
  }
  return { namespace: subject, name };
}

/**
 * OpenWhisk's triggers and rules: firing a trigger invokes, asynchronously, every action an
 * active rule binds to it, and records a trigger activation listing them. A trigger annotated
 * `cron` (five fields, or six with seconds) fires itself on that schedule, with its parameters
 * as the payload. A trigger the alarms feeds (/whisk.system/alarms/...) set up carries its
 * alarm in the annotation `alarm` (see alarms.ts) and fires with the alarm's payload.
 */
export class Triggers {
  private readonly schedules = new Map<string, Cron>();
  /** Each trigger's alarm job: a cron job, or its one next firing (once, interval). */
  private readonly alarms = new Map<string, Cron>();

  constructor(private readonly host: TriggerHost) {}

  /** Schedules every trigger that has a cron annotation or an active alarm; ends alarms that expired meanwhile. */
  async start(): Promise<void> {
    await Promise.all((await this.host.store.listTriggers()).map((trigger) => this.schedule(trigger)));
  }

  stop(): void {
    for (const job of [...this.schedules.values(), ...this.alarms.values()]) job.stop();
    this.schedules.clear();
    this.alarms.clear();
  }

  get(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    return this.host.store.getTrigger(namespace, name);
  }

  async list(namespace: string, page: ListPage): Promise<TriggerRecord[]> {
    return (await this.host.store.listTriggers(namespace)).slice(page.skip, page.skip + page.limit);
  }

  /**
   * Stores a trigger (its cron and alarm annotations checked first) and (re)schedules it. An
   * update that leaves out the alarm keeps it: the alarm belongs to the feed, which removes it
   * with its DELETE event.
   */
  async put(input: Omit<TriggerRecord, 'version' | 'updated'>, options: { overwrite: boolean }): Promise<TriggerRecord> {
    Triggers.validate(input.annotations);
    const current = options.overwrite ? await this.host.store.getTrigger(input.namespace, input.name) : undefined;
    const alarm =
      current && annotationValue(input.annotations, ALARM_ANNOTATION) === undefined ? alarmOf(current.annotations) : undefined;
    const stored = await this.host.store.putTrigger(
      alarm ? { ...input, annotations: withAlarm(input.annotations, alarm) } : input,
      options,
    );
    await this.schedule(stored);
    this.host.changed?.(stored.namespace, stored.name);
    // Scheduling stores an alarm found expired as ended: answer what is stored now.
    return alarmOf(stored.annotations) ? ((await this.host.store.getTrigger(stored.namespace, stored.name)) ?? stored) : stored;
  }

  /** Deletes a trigger and stops its schedule; undefined when there is none. */
  async delete(namespace: string, name: string): Promise<TriggerRecord | undefined> {
    const trigger = await this.host.store.deleteTrigger(namespace, name);
    if (trigger) {
      this.unschedule(namespace, trigger.name);
      this.host.changed?.(namespace, trigger.name);
    }
    return trigger;
  }

  /** Checks the cron and alarm annotations before they are stored; throws a 400 naming the problem. */
  static validate(annotations: readonly KeyValue[]): void {
    const alarm = annotationValue(annotations, ALARM_ANNOTATION);
    if (alarm !== undefined) {
      const parsed = AlarmSchema.safeParse(alarm);
      if (!parsed.success)
        throw badRequest(`The annotation alarm is not an alarm: ${parsed.error.issues[0]?.message ?? 'invalid'}.`);
      checkAlarm(parsed.data);
    }
    const cron = annotationValue(annotations, 'cron');
    if (cron === undefined) return;
    if (typeof cron !== 'string') throw badRequest('The annotation cron must be a cron expression such as "*/5 * * * *".');
    try {
      new Cron(cron, { paused: true }).stop();
    } catch (error) {
      throw badRequest(`The annotation cron is not a valid cron expression: ${(error as Error).message}`);
    }
  }

  /**
   * (Re)schedules a trigger's cron annotation and its alarm. Resolves once an alarm found expired
   * is stored as ended.
   */
  async schedule(trigger: TriggerRecord): Promise<void> {
    const key = `${trigger.namespace}/${trigger.name}`;
    this.schedules.get(key)?.stop();
    this.schedules.delete(key);
    const cron = annotationValue(trigger.annotations, 'cron');
    if (typeof cron === 'string') {
      const job: Cron = new Cron(cron, { protect: true, unref: true }, () => {
        this.claimed(`cron/${key}`, job)
          .then((mine) => (mine ? this.fire(trigger.namespace, trigger.name, {}, 'cron') : undefined))
          .catch((error: unknown) =>
            this.host.warn(`cron trigger ${key} failed: ${error instanceof Error ? error.message : String(error)}`),
          );
      });
      this.schedules.set(key, job);
    }
    await this.scheduleAlarm(trigger);
  }

  /** Whether this server fires this tick of a job (always, unless the platform is one of a cluster's controllers). */
  private claimed(what: string, job: Cron): Promise<boolean> {
    if (!this.host.claimTick) return Promise.resolve(true);
    // The tick's planned second, the same on every controller whose clock is within a second.
    const planned = Math.round((job.currentRun()?.getTime() ?? Date.now()) / 1000);
    return this.host.claimTick(`${what}@${planned}`);
  }

  /** The names of a namespace's triggers that have a schedule here. */
  scheduled(namespace: string): string[] {
    const prefix = `${namespace}/`;
    return [...new Set([...this.schedules.keys(), ...this.alarms.keys()])]
      .filter((key) => key.startsWith(prefix))
      .map((key) => key.slice(prefix.length));
  }

  /** A trigger changed on another server of the cluster: its schedule follows what is stored now. */
  async reload(namespace: string, name: string): Promise<void> {
    const trigger = await this.host.store.getTrigger(namespace, name);
    if (trigger) await this.schedule(trigger);
    else this.unschedule(namespace, name);
  }

  unschedule(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    this.schedules.get(key)?.stop();
    this.schedules.delete(key);
    this.alarms.get(key)?.stop();
    this.alarms.delete(key);
  }

  /** When a trigger's alarm fires next: undefined when none is scheduled (no alarm, paused, ended). */
  nextAlarm(namespace: string, name: string): Date | undefined {
    return this.alarms.get(`${namespace}/${name}`)?.nextRun() ?? undefined;
  }

  /**
   * Applies an alarms feed action's answer (a feed event, see AlarmFeedEventSchema) for the
   * subject namespace `subject`, whose trigger it must name: CREATE stores and schedules the
   * alarm, UPDATE changes it, READ answers OpenWhisk's description, DELETE removes it, PAUSE and
   * UNPAUSE stop and resume its firing. An answer `{error}` (the action refused the parameters)
   * is a 400 with that message; other mistakes are 4xx too (403 another namespace's trigger,
   * 404 no such trigger or alarm, 409 CREATE over an alarm).
   */
  async applyFeed(subject: string, result: unknown): Promise<AlarmFeedAnswer> {
    if (result !== null && typeof result === 'object' && 'error' in result) {
      const error = (result as { error: unknown }).error;
      throw badRequest(typeof error === 'string' ? error : JSON.stringify(error));
    }
    const parsed = AlarmFeedEventSchema.safeParse(result);
    // The catalogue's own action answered something else: the platform's fault, not the caller's.
    if (!parsed.success)
      throw new Error(`The alarms feed answered no feed event: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    const event = parsed.data;
    const { namespace, name } = feedTrigger(event.triggerName, subject);
    const trigger = await this.host.store.getTrigger(namespace, name);
    const success = { status: 'success' } as const;
    if (!trigger) {
      // The trigger may be gone first (wsk deletes it after the feed; either order works).
      if (event.lifecycleEvent === 'DELETE') return success;
      throw notFound(`The trigger "${name}" does not exist.`);
    }
    const current = alarmOf(trigger.annotations);
    const now = Date.now();
    if (event.lifecycleEvent === 'CREATE') {
      if (current) throw conflict(`The trigger "${name}" already has an alarm; update (UPDATE) or delete (DELETE) it first.`);
      await this.storeAlarm(trigger, createdAlarm(event.alarm, now));
      return success;
    }
    if (event.lifecycleEvent === 'DELETE') {
      if (current) await this.storeAlarm(trigger, undefined);
      return success;
    }
    if (!current) throw notFound(`The trigger "${name}" has no alarm.`);
    switch (event.lifecycleEvent) {
      case 'READ':
        return readAnswer(namespace, name, current);
      case 'UPDATE':
        await this.storeAlarm(trigger, updatedAlarm(current, event.alarm, now));
        return success;
      case 'PAUSE':
      case 'UNPAUSE':
        await this.storeAlarm(trigger, pausedAlarm(current, event.lifecycleEvent === 'PAUSE', now));
        return success;
    }
  }

  /** Stores a trigger's alarm (or its removal), keeping its other annotations, and reschedules it. */
  private async storeAlarm(trigger: TriggerRecord, alarm: Alarm | undefined): Promise<TriggerRecord> {
    const stored = await this.host.store.putTrigger(
      {
        namespace: trigger.namespace,
        name: trigger.name,
        parameters: trigger.parameters,
        annotations: withAlarm(trigger.annotations, alarm),
      },
      { overwrite: true },
    );
    await this.scheduleAlarm(stored);
    this.host.changed?.(stored.namespace, stored.name);
    return stored;
  }

  /** Schedules an active alarm's next firing (or its cron job); stores it as ended when it has no firing left. */
  private async scheduleAlarm(trigger: TriggerRecord): Promise<void> {
    const key = `${trigger.namespace}/${trigger.name}`;
    this.alarms.get(key)?.stop();
    this.alarms.delete(key);
    const alarm = alarmOf(trigger.annotations);
    if (alarm?.status !== 'active') return;
    const plan = planAlarm(alarm, Date.now());
    if (plan.kind === 'ended') {
      await this.storeAlarm(trigger, endedAlarm(alarm, plan.message, Date.now()));
      return;
    }
    const ring = () => {
      this.alarmFired(trigger.namespace, trigger.name, job).catch((error: unknown) =>
        this.host.warn(`alarm of trigger ${key} failed: ${error instanceof Error ? error.message : String(error)}`),
      );
    };
    const job = plan.kind === 'cron' ? cronJob(alarm, ring) : new Cron(plan.at, { protect: true, unref: true }, ring);
    this.alarms.set(key, job);
  }

  /** An alarm's firing: the trigger fires with the alarm's payload, then the alarm goes on, ends, or (deleteAfterFire) takes the trigger with it. */
  private async alarmFired(namespace: string, name: string, job: Cron): Promise<void> {
    const key = `${namespace}/${name}`;
    // A job replaced or stopped meanwhile (paused, updated, deleted) has nothing more to do.
    if (this.alarms.get(key) !== job) return;
    const trigger = await this.host.store.getTrigger(namespace, name);
    const alarm = trigger && alarmOf(trigger.annotations);
    if (!trigger || alarm?.status !== 'active') {
      // Only the alarm: a cron annotation on the same trigger keeps its own schedule.
      this.alarms.delete(key);
      job.stop();
      return;
    }
    try {
      if (await this.claimed(`alarm/${key}`, job)) await this.fire(namespace, name, alarm.payload, 'alarm');
    } catch (error) {
      this.host.warn(`alarm of trigger ${key} did not fire: ${error instanceof Error ? error.message : String(error)}`);
    }
    if (this.alarms.get(key) !== job) return;
    if (alarm.kind === 'once' && (alarm.deleteAfterFire === 'true' || alarm.deleteAfterFire === 'rules')) {
      if (alarm.deleteAfterFire === 'rules') {
        for (const rule of await this.host.store.rulesFor(namespace, name))
          await this.host.store.deleteRule(namespace, rule.name);
      }
      await this.delete(namespace, name);
      return;
    }
    const now = Date.now();
    const ended = endAfterFiring(alarm, job, now);
    if (ended) {
      this.alarms.delete(key);
      job.stop();
      await this.storeAlarm(trigger, endedAlarm(alarm, ended, now));
    } else if (alarm.kind === 'interval') {
      await this.scheduleAlarm(trigger);
    }
  }

  /**
   * Fires a trigger: the payload over the trigger's parameters goes to each action of an active
   * rule. Returns the trigger activation's id, or undefined when no rule is active.
   */
  async fire(
    namespace: string,
    name: string,
    payload: Record<string, unknown>,
    cause: 'api' | 'cron' | 'alarm',
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
