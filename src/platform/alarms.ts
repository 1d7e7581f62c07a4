import { Cron } from 'croner';
import { z } from 'zod';
import { badRequest } from '../core/errors.js';
import type { KeyValue } from '../core/types.js';
import { annotationValue } from '../core/types.js';

// The rules of the alarms feeds (/whisk.system/alarms/alarm, once, interval), with no I/O: what a
// feed action's answer may be, how an answer changes a trigger's alarm, when an alarm fires next
// and when it has ended. Triggers applies them (stores, schedules, fires).

/** The trigger annotation that holds an alarm: `Alarm`, as the feed left it. */
export const ALARM_ANNOTATION = 'alarm';

export const FEED_LIFECYCLE_EVENTS = ['CREATE', 'READ', 'UPDATE', 'DELETE', 'PAUSE', 'UNPAUSE'] as const;
export const ALARM_KINDS = ['cron', 'once', 'interval'] as const;

/** ms since the epoch, or an ISO 8601 string: kept as the caller gave it, as OpenWhisk shows it back. */
const DateValue = z.union([z.string().min(1), z.number().finite()]);

const AlarmFields = {
  kind: z.enum(ALARM_KINDS),
  cron: z.string().min(1).optional(),
  timezone: z.string().min(1).optional(),
  date: DateValue.optional(),
  minutes: z.number().int().positive().optional(),
  startDate: DateValue.optional(),
  stopDate: DateValue.optional(),
  deleteAfterFire: z.enum(['false', 'true', 'rules']).optional(),
};

/** What an alarms feed action answers: the feed event, and for CREATE and UPDATE the alarm's parameters. */
export const AlarmFeedEventSchema = z.object({
  lifecycleEvent: z.enum(FEED_LIFECYCLE_EVENTS),
  /** `/namespace/name`; `_` (or no namespace) is the caller's. */
  triggerName: z.string().min(1),
  /** CREATE: the whole alarm; UPDATE: only what changes. */
  alarm: z
    .object({ ...AlarmFields, payload: z.record(z.string(), z.unknown()).optional() })
    .strict()
    .optional(),
});
export type AlarmFeedEvent = z.infer<typeof AlarmFeedEventSchema>;
export type AlarmParameters = NonNullable<AlarmFeedEvent['alarm']>;

const AlarmReason = z.object({
  /** AUTO: the schedule ended by itself (fired once, past its stop date); USER: paused. */
  kind: z.enum(['AUTO', 'USER']),
  message: z.string(),
});

/** A trigger's alarm as stored in its `alarm` annotation. */
export const AlarmSchema = z
  .object({
    ...AlarmFields,
    /** The trigger's parameters on each firing (over the trigger's own). */
    payload: z.record(z.string(), z.unknown()),
    /** An inactive alarm does not fire: paused, or its schedule has ended. */
    status: z.enum(['active', 'inactive']),
    /** When the status last changed, ms since the epoch. */
    dateChanged: z.number(),
    reason: AlarmReason.optional(),
  })
  .strict();
export type Alarm = z.infer<typeof AlarmSchema>;

/** OpenWhisk's answer to a feed's READ. */
export interface AlarmReadAnswer {
  config: {
    name: string;
    namespace: string;
    payload: Record<string, unknown>;
    cron?: string;
    timezone?: string;
    date?: string | number;
    deleteAfterFire?: string;
    minutes?: number;
    startDate?: string | number;
    stopDate?: string | number;
  };
  status: {
    active: boolean;
    dateChanged: number;
    dateChangedISO: string;
    reason?: { kind: 'AUTO' | 'USER'; message: string };
  };
}

/** What a feed event other than READ answers, as OpenWhisk's alarms feed does. */
export type AlarmFeedAnswer = { status: 'success' } | AlarmReadAnswer;

/** A trigger's alarm, if it has a well-formed one. */
export function alarmOf(annotations: readonly KeyValue[]): Alarm | undefined {
  const parsed = AlarmSchema.safeParse(annotationValue(annotations, ALARM_ANNOTATION));
  return parsed.success ? parsed.data : undefined;
}

/** The annotations with `alarm` set to `alarm` (or removed), the others kept in their order. */
export function withAlarm(annotations: readonly KeyValue[], alarm: Alarm | undefined): KeyValue[] {
  const others = annotations.filter((a) => a.key !== ALARM_ANNOTATION);
  return alarm ? [...others, { key: ALARM_ANNOTATION, value: alarm }] : others;
}

const time = (value: string | number): number => new Date(value).getTime();

type CronFields = Pick<Alarm, 'cron' | 'timezone' | 'startDate' | 'stopDate'>;

/**
 * A cron alarm's job, between its start and stop dates: running `run` when given, else paused
 * (to ask it when it runs). Throws a 400 naming the problem as OpenWhisk's feed does.
 */
export function cronJob(alarm: CronFields, run?: () => void): Cron {
  // croner only finds a bad timezone once it computes a run.
  if (alarm.timezone !== undefined && !validTimezone(alarm.timezone)) throw badRequest('Invalid timezone.');
  try {
    const options = {
      ...(run ? { protect: true, unref: true } : { paused: true }),
      ...(alarm.timezone ? { timezone: alarm.timezone } : {}),
      ...(alarm.startDate !== undefined ? { startAt: new Date(alarm.startDate) } : {}),
      ...(alarm.stopDate !== undefined ? { stopAt: new Date(alarm.stopDate) } : {}),
    };
    return run ? new Cron(alarm.cron ?? '', options, run) : new Cron(alarm.cron ?? '', options);
  } catch (error) {
    const message = (error as Error).message;
    throw badRequest(/time ?zone/i.test(message) ? 'Invalid timezone.' : `cron pattern '${alarm.cron}' is not valid`);
  }
}

function validTimezone(timezone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
    return true;
  } catch {
    return false;
  }
}

function checkDate(value: string | number | undefined, name: string): void {
  if (value !== undefined && Number.isNaN(time(value))) throw badRequest(`${name} parameter '${value}' is not a valid Date`);
}

/**
 * Checks an alarm's shape, whatever its status: the fields its kind needs, a cron pattern and
 * timezone the scheduler accepts, valid dates, and a stop date after the start date. Also how a
 * trigger's `alarm` annotation is checked when a caller stores one directly.
 */
export function checkAlarm(alarm: Alarm): void {
  if (alarm.kind === 'once' && alarm.date === undefined)
    throw badRequest('alarms once trigger feed is missing the date parameter');
  if (alarm.kind === 'interval' && alarm.minutes === undefined) {
    throw badRequest('interval trigger feed is missing the minutes parameter');
  }
  if (alarm.kind === 'cron' && alarm.cron === undefined) throw badRequest('alarms trigger feed is missing the cron parameter');
  checkDate(alarm.date, 'date');
  checkDate(alarm.startDate, 'startDate');
  checkDate(alarm.stopDate, 'stopDate');
  if (alarm.startDate !== undefined && alarm.stopDate !== undefined && time(alarm.stopDate) <= time(alarm.startDate)) {
    throw badRequest(`stopDate parameter '${alarm.stopDate}' must be greater than the startDate parameter '${alarm.startDate}'`);
  }
  if (alarm.kind === 'cron') cronJob(alarm).stop();
}

/** Checks a new (or updated) alarm: `checkAlarm`, and a first firing that comes before its stop date. */
function checkSchedule(alarm: Alarm, now: number): void {
  checkAlarm(alarm);
  if (alarm.kind !== 'cron' || alarm.stopDate === undefined) return;
  const job = cronJob({ ...alarm, stopDate: undefined });
  const first = job.nextRun(new Date(now));
  job.stop();
  if (!first || first.getTime() >= time(alarm.stopDate))
    throw badRequest('the first scheduled trigger fire is not until after the stop date');
}

/** The alarm a CREATE makes, active from `now`. The feed action checked the dates are in the future. */
export function createdAlarm(parameters: AlarmParameters | undefined, now: number): Alarm {
  if (!parameters) throw badRequest('The feed event CREATE carries no alarm.');
  const alarm: Alarm = { ...parameters, payload: parameters.payload ?? {}, status: 'active', dateChanged: now };
  checkSchedule(alarm, now);
  return alarm;
}

/**
 * The alarm an UPDATE makes of `current`: the changed parameters over it, active again unless it
 * was paused (an update revives an alarm whose schedule had ended, as OpenWhisk's does).
 */
export function updatedAlarm(current: Alarm, change: AlarmParameters | undefined, now: number): Alarm {
  if (!change) throw badRequest('The feed event UPDATE carries no alarm parameters.');
  if (change.kind !== current.kind) {
    throw badRequest(`The trigger's alarm is of the kind ${current.kind}; the ${change.kind} feed cannot update it.`);
  }
  const { reason: _reason, ...rest } = current;
  const paused = current.status === 'inactive' && current.reason?.kind === 'USER';
  const alarm: Alarm = {
    ...rest,
    ...change,
    payload: change.payload ?? current.payload,
    status: paused ? 'inactive' : 'active',
    dateChanged: now,
    ...(paused && current.reason ? { reason: current.reason } : {}),
  };
  if (change.startDate !== undefined && change.stopDate === undefined && current.stopDate !== undefined) {
    if (time(change.startDate) >= time(current.stopDate)) {
      throw badRequest(
        `startDate parameter '${change.startDate}' must be less than the stopDate parameter '${current.stopDate}'`,
      );
    }
  }
  checkSchedule(alarm, now);
  return alarm;
}

/** The alarm paused (PAUSE) or resumed (UNPAUSE). */
export function pausedAlarm(current: Alarm, paused: boolean, now: number): Alarm {
  const { reason: _reason, ...rest } = current;
  if (paused)
    return {
      ...rest,
      status: 'inactive',
      dateChanged: now,
      reason: { kind: 'USER', message: 'Paused by the PAUSE lifecycle event' },
    };
  if (current.status === 'inactive' && current.reason?.kind === 'AUTO') {
    throw badRequest(`The alarm cannot be resumed: ${current.reason.message}. Update it (UPDATE) with new dates instead.`);
  }
  return { ...rest, status: 'active', dateChanged: now };
}

/** The alarm with its schedule ended: inactive, with OpenWhisk's reason. */
export function endedAlarm(current: Alarm, message: string, now: number): Alarm {
  return { ...current, status: 'inactive', dateChanged: now, reason: { kind: 'AUTO', message } };
}

/** OpenWhisk's READ answer for a trigger's alarm. */
export function readAnswer(namespace: string, name: string, alarm: Alarm): AlarmReadAnswer {
  const config: AlarmReadAnswer['config'] = { name, namespace, payload: alarm.payload };
  if (alarm.kind === 'once') {
    if (alarm.date !== undefined) config.date = alarm.date;
    if (alarm.deleteAfterFire !== undefined) config.deleteAfterFire = alarm.deleteAfterFire;
  } else {
    if (alarm.startDate !== undefined) config.startDate = alarm.startDate;
    if (alarm.stopDate !== undefined) config.stopDate = alarm.stopDate;
    if (alarm.kind === 'interval' && alarm.minutes !== undefined) config.minutes = alarm.minutes;
    if (alarm.kind === 'cron' && alarm.cron !== undefined) config.cron = alarm.cron;
    if (alarm.kind === 'cron' && alarm.timezone !== undefined) config.timezone = alarm.timezone;
  }
  return {
    config,
    status: {
      active: alarm.status === 'active',
      dateChanged: alarm.dateChanged,
      // As OpenWhisk's: UTC, to the second.
      dateChangedISO: new Date(alarm.dateChanged).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      ...(alarm.reason ? { reason: alarm.reason } : {}),
    },
  };
}

/**
 * How an active alarm is scheduled from `now`: as a cron job (`cronJob`); one firing at a time
 * (a once alarm's date, an interval's next firing: `startDate + k * minutes`, k >= 0, the first
 * after now); or not at all, its schedule having ended, with OpenWhisk's reason.
 */
export type AlarmPlan = { kind: 'cron' } | { kind: 'at'; at: Date } | { kind: 'ended'; message: string };

export function planAlarm(alarm: Alarm, now: number): AlarmPlan {
  const ended = (message: string): AlarmPlan => ({ kind: 'ended', message });
  if (alarm.kind === 'once') {
    const at = time(alarm.date ?? Number.NaN);
    return at > now ? { kind: 'at', at: new Date(at) } : ended('the fire once date has expired');
  }
  if (alarm.stopDate !== undefined && time(alarm.stopDate) <= now) return ended('the stop date has expired');
  if (alarm.kind === 'interval') {
    const next = nextInterval(alarm, now);
    if (alarm.stopDate !== undefined && next > time(alarm.stopDate))
      return ended('the next scheduled trigger fire is after the stop date');
    return { kind: 'at', at: new Date(next) };
  }
  const job = cronJob(alarm);
  const next = job.nextRun(new Date(now));
  job.stop();
  return next ? { kind: 'cron' } : ended('the next scheduled trigger fire is after the stop date');
}

/** An interval alarm's first firing after `now`: its start date, then every `minutes` from it. */
export function nextInterval(alarm: Alarm, now: number): number {
  const start = time(alarm.startDate ?? alarm.dateChanged);
  const period = (alarm.minutes ?? 1) * 60_000;
  if (start > now) return start;
  return start + (Math.floor((now - start) / period) + 1) * period;
}

/** Why an alarm has no firing left after one at `now` (undefined while it has). */
export function endAfterFiring(alarm: Alarm, job: Cron | undefined, now: number): string | undefined {
  if (alarm.kind === 'once') return 'Automatically disabled after firing once';
  if (alarm.stopDate === undefined) return undefined;
  if (alarm.kind === 'interval') {
    return nextInterval(alarm, now) > time(alarm.stopDate)
      ? 'Automatically disabled after firing last scheduled interval trigger'
      : undefined;
  }
  return job?.nextRun() ? undefined : 'Automatically disabled after firing last scheduled cron trigger';
}
