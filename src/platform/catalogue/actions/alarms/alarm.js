// The alarms feeds, /whisk.system/alarms/alarm (cron), once and interval: OpenWhisk's feed
// protocol (lifecycleEvent, triggerName, authKey and the alarm's own parameters), checked as
// OpenWhisk's alarms package checks them. A sandbox has no network, so instead of registering
// the alarm with a provider the action answers with a normalised description of it, which the
// platform then applies to the trigger (and checks the cron pattern again with the scheduler it
// uses). The three actions share this file: the bound parameter `fireOnce` (once) or
// `isInterval` (interval) picks the kind, as in OpenWhisk's catalogue; neither means cron.
// The answer never repeats authKey: it is stored in the activation record.

const LIFECYCLE_EVENTS = ['CREATE', 'READ', 'UPDATE', 'DELETE', 'PAUSE', 'UNPAUSE'];
const DELETE_AFTER_FIRE = ['false', 'true', 'rules'];

function main(params) {
  if (!params.triggerName) return failure('no trigger name parameter was provided');
  if (typeof params.triggerName !== 'string')
    return failure('the triggerName parameter must be a string such as /namespace/trigger');
  const lifecycleEvent = params.lifecycleEvent;
  if (!LIFECYCLE_EVENTS.includes(lifecycleEvent)) return failure('unsupported lifecycleEvent');
  const kind = params.fireOnce ? 'once' : params.isInterval ? 'interval' : 'cron';
  const event = { lifecycleEvent, triggerName: params.triggerName };
  if (lifecycleEvent !== 'CREATE' && lifecycleEvent !== 'UPDATE') return event;
  const alarm = lifecycleEvent === 'CREATE' ? created(kind, params) : updated(kind, params);
  return typeof alarm === 'string' ? failure(alarm) : { ...event, alarm };
}

function failure(message) {
  return { error: message };
}

/** A new alarm from the parameters, or what is wrong with them. */
function created(kind, params) {
  const payload = payloadOf(params.trigger_payload);
  if (typeof payload === 'string') return payload;
  const alarm = { kind, payload };
  if (kind === 'once') {
    if (!params.date) return 'alarms once trigger feed is missing the date parameter';
    const problem = dateProblem(params.date, 'date');
    if (problem) return problem;
    alarm.date = params.date;
    if (params.deleteAfterFire) {
      const deleteAfterFire = deleteAfterFireOf(params.deleteAfterFire);
      if (deleteAfterFire === undefined) return 'deleteAfterFire parameter must be one of [false, true, rules].';
      alarm.deleteAfterFire = deleteAfterFire;
    }
    return alarm;
  }
  if (kind === 'interval') {
    if (!params.minutes) return 'interval trigger feed is missing the minutes parameter';
    const minutes = minutesOf(params.minutes);
    if (typeof minutes === 'string') return minutes;
    alarm.minutes = minutes;
  } else {
    if (!params.cron) return 'alarms trigger feed is missing the cron parameter';
    const problem = cronProblem(params.cron, params.timezone);
    if (problem) return problem;
    alarm.cron = params.cron;
    if (params.timezone) alarm.timezone = params.timezone;
  }
  if (params.startDate) {
    const problem = dateProblem(params.startDate, 'startDate');
    if (problem) return problem;
    alarm.startDate = params.startDate;
  } else if (kind === 'interval') {
    // As OpenWhisk's: with no start date an interval starts 30 seconds from now.
    alarm.startDate = Date.now() + 30_000;
  }
  if (params.stopDate) {
    const problem = dateProblem(params.stopDate, 'stopDate', alarm.startDate);
    if (problem) return problem;
    alarm.stopDate = params.stopDate;
  }
  return alarm;
}

/**
 * The parameters an UPDATE changes, or what is wrong with them. Only what was given is checked
 * here; the platform checks the result against the alarm it has (a stop date after its start).
 */
function updated(kind, params) {
  const alarm = { kind };
  if (params.trigger_payload) {
    const payload = payloadOf(params.trigger_payload);
    if (typeof payload === 'string') return payload;
    alarm.payload = payload;
  }
  if (kind === 'once') {
    if (params.date) {
      const problem = dateProblem(params.date, 'date');
      if (problem) return problem;
      alarm.date = params.date;
    }
    if (params.deleteAfterFire) {
      const deleteAfterFire = deleteAfterFireOf(params.deleteAfterFire);
      if (deleteAfterFire === undefined) return 'deleteAfterFire parameter must be one of [false, true, rules].';
      alarm.deleteAfterFire = deleteAfterFire;
    }
  } else {
    if (kind === 'interval' && params.minutes) {
      const minutes = minutesOf(params.minutes);
      if (typeof minutes === 'string') return minutes;
      alarm.minutes = minutes;
    }
    if (kind === 'cron' && (params.cron || params.timezone)) {
      const problem = cronProblem(params.cron || '* * * * *', params.timezone);
      if (problem) return problem;
      if (params.cron) alarm.cron = params.cron;
      if (params.timezone) alarm.timezone = params.timezone;
    }
    if (params.startDate) {
      const problem = dateProblem(params.startDate, 'startDate');
      if (problem) return problem;
      alarm.startDate = params.startDate;
    }
    if (params.stopDate) {
      const problem = dateProblem(params.stopDate, 'stopDate', params.startDate || undefined);
      if (problem) return problem;
      alarm.stopDate = params.stopDate;
    }
  }
  if (Object.keys(alarm).length === 1) return 'no updatable parameters were specified';
  return alarm;
}

/** trigger_payload as the trigger's parameters: an object as it is, a string as `{payload}`, nothing as `{}`. */
function payloadOf(value) {
  if (value === undefined || value === null || value === '') return {};
  if (typeof value === 'string') return { payload: value };
  if (typeof value === 'object' && !Array.isArray(value)) return value;
  return 'the trigger_payload parameter must be an object or a string';
}

function deleteAfterFireOf(value) {
  const normalised = String(value).trim().toLowerCase();
  return DELETE_AFTER_FIRE.includes(normalised) ? normalised : undefined;
}

function minutesOf(value) {
  if (+value !== Number.parseInt(value, 10)) return 'the minutes parameter must be an integer';
  const minutes = Number.parseInt(value, 10);
  if (minutes <= 0) return 'the minutes parameter must be an integer greater than zero';
  return minutes;
}

/** A date is milliseconds since the epoch or an ISO 8601 string, and in the future (after startDate, when given). */
function dateProblem(value, name, startDate) {
  const time = new Date(value).getTime();
  if (Number.isNaN(time)) return `${name} parameter '${value}' is not a valid Date`;
  if (Date.now() >= time) return `${name} parameter '${value}' must be in the future`;
  if (startDate !== undefined && time <= new Date(startDate).getTime()) {
    return `${name} parameter '${value}' must be greater than the startDate parameter '${startDate}'`;
  }
  return undefined;
}

// Cron fields, with seconds first when there are six: [lowest, highest, names].
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
const SECOND = [0, 59];
const FIELDS = [
  [0, 59],
  [0, 23],
  [1, 31],
  [1, 12, MONTHS],
  [0, 7, DAYS],
];

/** A syntax check of a cron pattern (five fields, or six with seconds) and its timezone. */
function cronProblem(cron, timezone) {
  if (timezone !== undefined && timezone !== '' && !validTimezone(timezone)) return 'Invalid timezone.';
  const fields = typeof cron === 'string' ? cron.trim().split(/\s+/) : [];
  const bounds = fields.length === 6 ? [SECOND, ...FIELDS] : FIELDS;
  const valid =
    (fields.length === 5 || fields.length === 6) &&
    fields.every((field, i) =>
      field.split(',').every((part) => validPart(part, bounds[i], i === bounds.length - 3, i === bounds.length - 1)),
    );
  return valid ? undefined : `cron pattern '${cron}' is not valid`;
}

function validTimezone(timezone) {
  if (typeof timezone !== 'string') return false;
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
    return true;
  } catch {
    return false;
  }
}

/** One comma-separated part of a field: `*`, `?`, a value or a range, with an optional `/step`. */
function validPart(part, [lowest, highest, names], dayOfMonth, dayOfWeek) {
  // The last day of the month (L, LW), the nearest weekday (15W), the nth weekday (5#3) and the
  // last such weekday (5L): the scheduler's own check judges these.
  if (dayOfMonth && /^(L|LW|\d{1,2}W)$/i.test(part)) return true;
  if (dayOfWeek && /^([0-7]#[1-5]|[0-7]L|L)$/i.test(part)) return true;
  const pieces = part.split('/');
  if (pieces.length > 2) return false;
  const [range, step] = pieces;
  if (step !== undefined && !/^[1-9]\d*$/.test(step)) return false;
  if (range === '*' || range === '?') return true;
  const ends = range.split('-').map((end) => fieldValue(end, names));
  if (ends.length > 2 || ends.some((v) => v === undefined || v < lowest || v > highest)) return false;
  return ends.length === 1 || ends[0] <= ends[1];
}

function fieldValue(text, names) {
  if (/^\d+$/.test(text)) return Number(text);
  const index = names ? names.indexOf(text.toLowerCase()) : -1;
  if (index < 0) return undefined;
  return names === MONTHS ? index + 1 : index;
}

exports.main = main;
