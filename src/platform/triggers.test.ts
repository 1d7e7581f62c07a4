import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, it, mock } from 'node:test';
import { waitFor } from '../../test/helpers/server-process.js';
import { IsolaError } from '../core/errors.js';
import type { ActionVersion } from '../core/types.js';
import { Store } from '../store/store.js';
import { type AlarmReadAnswer, alarmOf, withAlarm } from './alarms.js';
import type { InvokeCommand, InvokeOutcome } from './invoke.js';
import { Triggers } from './triggers.js';

describe('cron triggers', () => {
  let dir: string;
  let store: Store;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'isola-triggers-'));
    store = await Store.open({ dataDir: dir });
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fire on their schedule, and never again once unscheduled', async () => {
    const action = await store.putAction(
      {
        namespace: 'guest',
        name: 'on-tick',
        exec: { kind: 'nodejs:20', code: 'function main() { return {}; }', binary: false },
        limits: { memory: 128, timeout: 1000, concurrency: 1, logs: 10 },
        parameters: [],
        annotations: [],
        isolation: 'isolate',
      },
      { overwrite: false },
    );
    const trigger = await store.putTrigger(
      { namespace: 'guest', name: 'every-second', parameters: [], annotations: [{ key: 'cron', value: '* * * * * *' }] },
      { overwrite: false },
    );
    await store.putRule(
      { namespace: 'guest', name: 'tick-rule', trigger: 'every-second', action: 'on-tick', status: 'active' },
      { overwrite: false },
    );
    const fired: string[] = [];
    const triggers = new Triggers({
      store,
      invoke: async (command) => {
        assert.equal(command.mode, 'async');
        assert.equal(command.function.name, action.name);
        fired.push(command.function.name);
        return { kind: 'accepted', function: action as ActionVersion, activationId: `id-${fired.length}`, late: false };
      },
      warn: (message) => assert.fail(message),
    });
    const settle = async () => {
      for (let i = 0; i < 50; i++) await new Promise((resolve) => setImmediate(resolve));
    };
    mock.timers.enable({ apis: ['setTimeout', 'setInterval', 'Date'], now: Date.parse('2026-01-01T00:00:00.500Z') });
    try {
      triggers.schedule(trigger);
      for (let s = 0; s < 3; s++) {
        mock.timers.tick(1000);
        await settle();
      }
      assert.equal(fired.length, 3, 'once a second for three seconds');
      triggers.unschedule('guest', 'every-second');
      for (let s = 0; s < 5; s++) {
        mock.timers.tick(1000);
        await settle();
      }
      assert.equal(fired.length, 3, 'an unscheduled trigger no longer fires');
    } finally {
      triggers.stop();
      mock.timers.reset();
    }
  });
});

/** The invocations a Triggers host received, and a way to wait for the next ones without a fixed sleep. */
class InvokeRecorder {
  readonly commands: InvokeCommand[] = [];
  private waiters: Array<() => void> = [];

  readonly invoke = async (command: InvokeCommand): Promise<InvokeOutcome> => {
    this.commands.push(command);
    for (const wake of this.waiters.splice(0)) wake();
    return { kind: 'accepted', function: {} as ActionVersion, activationId: `id-${this.commands.length}`, late: false };
  };

  /** Resolves once `count` invocations have come, or fails after `ms`. */
  async waitFor(count: number, ms = 15_000): Promise<InvokeCommand[]> {
    const deadline = Date.now() + ms;
    while (this.commands.length < count) {
      const left = deadline - Date.now();
      if (left <= 0) assert.fail(`expected ${count} invocations within ${ms} ms, got ${this.commands.length}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.commands;
  }
}

describe('alarms feed events on triggers', () => {
  let dir: string;
  let store: Store;
  let recorder: InvokeRecorder;
  let triggers: Triggers;
  const warnings: string[] = [];
  let counter = 0;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'isola-alarms-'));
    store = await Store.open({ dataDir: dir });
    await store.putAction(
      {
        namespace: 'guest',
        name: 'on-alarm',
        exec: { kind: 'nodejs:20', code: 'function main(p) { return p; }', binary: false },
        limits: { memory: 128, timeout: 1000, concurrency: 1, logs: 10 },
        parameters: [],
        annotations: [],
        isolation: 'isolate',
      },
      { overwrite: false },
    );
  });
  beforeEach(() => {
    recorder = new InvokeRecorder();
    triggers = new Triggers({ store, invoke: recorder.invoke, warn: (message) => warnings.push(message) });
  });
  afterEach(() => {
    triggers.stop();
    assert.deepEqual(warnings.splice(0), []);
  });
  after(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** A new trigger (with its own parameter and annotation) and an active rule to the action. */
  async function trigger(): Promise<string> {
    const name = `t${++counter}`;
    await store.putTrigger(
      {
        namespace: 'guest',
        name,
        parameters: [
          { key: 'from', value: 'trigger' },
          { key: 'who', value: 'trigger' },
        ],
        annotations: [{ key: 'feed', value: '/whisk.system/alarms/alarm' }],
      },
      { overwrite: false },
    );
    await store.putRule(
      { namespace: 'guest', name: `${name}-rule`, trigger: name, action: 'on-alarm', status: 'active' },
      { overwrite: false },
    );
    return name;
  }

  const create = (name: string, alarm: Record<string, unknown>) =>
    triggers.applyFeed('guest', { lifecycleEvent: 'CREATE', triggerName: `/guest/${name}`, alarm: { payload: {}, ...alarm } });
  const event = (name: string, lifecycleEvent: string, alarm?: Record<string, unknown>) =>
    triggers.applyFeed('guest', { lifecycleEvent, triggerName: `/_/${name}`, ...(alarm ? { alarm } : {}) });
  const stored = async (name: string) => alarmOf((await store.getTrigger('guest', name))?.annotations ?? []);

  it('once: fires one time at its date with the payload over the trigger parameters, then ends', async () => {
    const name = await trigger();
    const date = new Date(Date.now() + 1000).toISOString();
    assert.deepEqual(await create(name, { kind: 'once', date, payload: { who: 'alarm' } }), { status: 'success' });
    assert.equal(triggers.nextAlarm('guest', name)?.toISOString(), date);
    const [command] = await recorder.waitFor(1);
    assert.deepEqual(command?.params, { from: 'trigger', who: 'alarm' });
    assert.equal(command?.function.name, 'on-alarm');
    const ended = await waitFor('the once alarm ending', async () => {
      const alarm = await stored(name);
      return alarm?.status === 'inactive' ? alarm : undefined;
    });
    assert.deepEqual(ended.reason, { kind: 'AUTO', message: 'Automatically disabled after firing once' });
    assert.equal(triggers.nextAlarm('guest', name), undefined);
    const record = await store.getTrigger('guest', name);
    assert.deepEqual(
      record?.annotations.find((a) => a.key === 'feed'),
      { key: 'feed', value: '/whisk.system/alarms/alarm' },
      "the user's annotations stay",
    );
    const activations = await store.listActivations('guest', { name, limit: 10, skip: 0 });
    assert.equal(activations.length, 1, 'one trigger activation');
    assert.equal(activations[0]?.annotations.find((a) => a.key === 'cause')?.value, 'alarm');
    assert.equal(recorder.commands.length, 1, 'fired only once');
  });

  it('once with deleteAfterFire: the trigger goes after firing, and with "rules" its rules too', async () => {
    const keepsRules = await trigger();
    const dropsRules = await trigger();
    const date = new Date(Date.now() + 1000).toISOString();
    await create(keepsRules, { kind: 'once', date, deleteAfterFire: 'true' });
    await create(dropsRules, { kind: 'once', date, deleteAfterFire: 'rules' });
    await recorder.waitFor(2);
    await waitFor('both triggers deleted', async () =>
      !(await store.getTrigger('guest', keepsRules)) && !(await store.getTrigger('guest', dropsRules)) ? true : undefined,
    );
    assert.ok(await store.getRule('guest', `${keepsRules}-rule`), 'deleteAfterFire true keeps the rules');
    assert.equal(await store.getRule('guest', `${dropsRules}-rule`), undefined, 'deleteAfterFire rules deletes them');
    assert.equal(triggers.nextAlarm('guest', keepsRules), undefined);
  });

  it('interval: fires at its start date, then every `minutes` from it', async () => {
    const name = await trigger();
    const startDate = Date.now() + 1000;
    await create(name, { kind: 'interval', minutes: 1, startDate, payload: { tick: true } });
    assert.equal(triggers.nextAlarm('guest', name)?.getTime(), startDate);
    const [command] = await recorder.waitFor(1);
    assert.deepEqual(command?.params, { from: 'trigger', who: 'trigger', tick: true });
    const next = await waitFor('the next interval scheduled', async () => {
      const at = triggers.nextAlarm('guest', name)?.getTime();
      return at !== undefined && at > startDate ? at : undefined;
    });
    assert.equal(next, startDate + 60_000);
    assert.equal((await stored(name))?.status, 'active');
  });

  it('interval: ends after its last firing before the stop date', async () => {
    const name = await trigger();
    const startDate = Date.now() + 1000;
    await create(name, { kind: 'interval', minutes: 1, startDate, stopDate: startDate + 30_000 });
    await recorder.waitFor(1);
    const ended = await waitFor('the interval alarm ending', async () => {
      const alarm = await stored(name);
      return alarm?.status === 'inactive' ? alarm : undefined;
    });
    assert.deepEqual(ended.reason, {
      kind: 'AUTO',
      message: 'Automatically disabled after firing last scheduled interval trigger',
    });
    assert.equal(triggers.nextAlarm('guest', name), undefined);
  });

  it('interval: after a restart, a start date long past keeps its phase; one whose next firing is past its stop date ends', async () => {
    const name = await trigger();
    const ending = await trigger();
    await create(name, { kind: 'interval', minutes: 5, startDate: Date.now() + 60_000 });
    await create(ending, { kind: 'interval', minutes: 5, startDate: Date.now() + 60_000 });
    triggers.stop();
    const past = Date.now() - 12 * 60_000 - 1000;
    // As if both had been created 12 minutes ago: the next firing is at 15 minutes, after `ending`'s stop date.
    for (const [trigger_, stopDate] of [
      [name, undefined],
      [ending, Date.now() + 60_000],
    ] as const) {
      const record = await store.getTrigger('guest', trigger_);
      const alarm = await stored(trigger_);
      assert.ok(record && alarm);
      const moved = { ...alarm, startDate: past, ...(stopDate ? { stopDate } : {}) };
      await store.putTrigger({ ...record, annotations: withAlarm(record.annotations, moved) }, { overwrite: true });
    }
    const restarted = new Triggers({ store, invoke: recorder.invoke, warn: (message) => warnings.push(message) });
    try {
      await restarted.start();
      assert.equal(restarted.nextAlarm('guest', name)?.getTime(), past + 15 * 60_000);
      assert.equal(restarted.nextAlarm('guest', ending), undefined);
      assert.deepEqual((await stored(ending))?.reason, {
        kind: 'AUTO',
        message: 'the next scheduled trigger fire is after the stop date',
      });
    } finally {
      restarted.stop();
    }
  });

  it('cron: fires on its pattern, honours the stop date, then ends', async () => {
    const name = await trigger();
    const stopDate = Date.now() + 2500;
    await create(name, { kind: 'cron', cron: '* * * * * *', stopDate, payload: { n: 1 } });
    await recorder.waitFor(1);
    const ended = await waitFor('the cron alarm ending at its stop date', async () => {
      const alarm = await stored(name);
      return alarm?.status === 'inactive' ? alarm : undefined;
    });
    assert.deepEqual(ended.reason, { kind: 'AUTO', message: 'Automatically disabled after firing last scheduled cron trigger' });
    assert.ok(recorder.commands.every((c) => c.params.n === 1));
    assert.equal(triggers.nextAlarm('guest', name), undefined);
  });

  it('cron: waits for its start date', async () => {
    const name = await trigger();
    const startDate = '2099-01-01T00:00:30.000Z';
    await create(name, { kind: 'cron', cron: '0 * * * *', timezone: 'UTC', startDate });
    assert.equal(triggers.nextAlarm('guest', name)?.toISOString(), '2099-01-01T01:00:00.000Z');
  });

  it('READ answers as OpenWhisk does; UPDATE changes what it names; PAUSE and UNPAUSE stop and resume firing', async () => {
    const name = await trigger();
    const startDate = '2099-01-01T00:00:00.000Z';
    await create(name, { kind: 'cron', cron: '0 9 * * *', startDate, payload: { a: 1 } });
    const read = (await event(name, 'READ')) as AlarmReadAnswer;
    assert.deepEqual(read.config, { name, namespace: 'guest', payload: { a: 1 }, cron: '0 9 * * *', startDate });
    assert.equal(read.status.active, true);
    assert.match(read.status.dateChangedISO, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(new Date(read.status.dateChangedISO).getTime(), Math.floor(read.status.dateChanged / 1000) * 1000);

    assert.deepEqual(await event(name, 'UPDATE', { kind: 'cron', cron: '30 10 * * *', payload: { a: 2 } }), {
      status: 'success',
    });
    const updated = (await event(name, 'READ')) as AlarmReadAnswer;
    assert.deepEqual(updated.config, { name, namespace: 'guest', payload: { a: 2 }, cron: '30 10 * * *', startDate });
    assert.equal(triggers.nextAlarm('guest', name)?.toISOString(), '2099-01-01T10:30:00.000Z');

    await event(name, 'PAUSE');
    assert.equal(triggers.nextAlarm('guest', name), undefined, 'a paused alarm is not scheduled');
    const paused = (await event(name, 'READ')) as AlarmReadAnswer;
    assert.equal(paused.status.active, false);
    assert.equal(paused.status.reason?.kind, 'USER');
    await event(name, 'UNPAUSE');
    assert.equal(triggers.nextAlarm('guest', name)?.toISOString(), '2099-01-01T10:30:00.000Z');
    assert.equal(((await event(name, 'READ')) as AlarmReadAnswer).status.active, true);
  });

  it('DELETE removes the alarm and its schedule, keeping the trigger and its annotations', async () => {
    const name = await trigger();
    await create(name, { kind: 'once', date: Date.now() + 3_600_000 });
    assert.ok(triggers.nextAlarm('guest', name));
    assert.deepEqual(await event(name, 'DELETE'), { status: 'success' });
    assert.equal(triggers.nextAlarm('guest', name), undefined);
    const record = await store.getTrigger('guest', name);
    assert.deepEqual(
      record?.annotations.map((a) => a.key),
      ['feed'],
    );
    assert.deepEqual(await event(name, 'DELETE'), { status: 'success' }, 'again: nothing to do');
    assert.deepEqual(await event('no-such-trigger', 'DELETE'), { status: 'success' }, 'the trigger may be gone first');
  });

  it('refuses with 4xx: another namespace, no trigger, no alarm, a second CREATE, the feed’s error, a bad schedule', async () => {
    const name = await trigger();
    const status = (expected: number, pattern: RegExp) => (error: unknown) => {
      assert.ok(error instanceof IsolaError, String(error));
      assert.equal(error.status, expected, error.message);
      assert.match(error.message, pattern);
      return true;
    };
    await assert.rejects(
      triggers.applyFeed('guest', { lifecycleEvent: 'READ', triggerName: `/other/${name}` }),
      status(403, /not in namespace "guest"/),
    );
    await assert.rejects(event('no-such-trigger', 'READ'), status(404, /does not exist/));
    await assert.rejects(event(name, 'READ'), status(404, /has no alarm/));
    await assert.rejects(event(name, 'PAUSE'), status(404, /has no alarm/));
    await assert.rejects(event(name, 'UPDATE', { kind: 'cron', cron: '* * * * *' }), status(404, /has no alarm/));
    await assert.rejects(
      triggers.applyFeed('guest', { error: 'alarms trigger feed is missing the cron parameter' }),
      status(400, /missing the cron parameter/),
    );
    await assert.rejects(create(name, { kind: 'cron', cron: 'every day' }), status(400, /cron pattern 'every day' is not valid/));
    await assert.rejects(
      create(name, { kind: 'cron', cron: '* * * * *', timezone: 'Mars/Olympus' }),
      status(400, /Invalid timezone/),
    );
    await assert.rejects(
      create(name, { kind: 'cron', cron: '0 0 1 1 *', stopDate: Date.now() + 3_600_000 }),
      status(400, /first scheduled trigger fire is not until after the stop date/),
    );
    await assert.rejects(create(name, { kind: 'once' }), status(400, /missing the date parameter/));
    await assert.rejects(create(name, { kind: 'interval', minutes: 1, startDate: 'later' }), status(400, /not a valid Date/));
    assert.equal(await stored(name), undefined, 'nothing stored');

    await create(name, { kind: 'interval', minutes: 10, startDate: '2099-01-01T00:00:00Z', stopDate: '2099-02-01T00:00:00Z' });
    await assert.rejects(create(name, { kind: 'interval', minutes: 1 }), status(409, /already has an alarm/));
    await assert.rejects(event(name, 'UPDATE', { kind: 'cron', cron: '* * * * *' }), status(400, /kind interval/));
    await assert.rejects(
      event(name, 'UPDATE', { kind: 'interval', startDate: '2099-03-01T00:00:00Z' }),
      status(400, /must be less than the stopDate/),
    );
    assert.equal((await stored(name))?.startDate, '2099-01-01T00:00:00Z', 'a refused update changes nothing');
    await assert.rejects(
      triggers.applyFeed('guest', { lifecycleEvent: 'CREATE', triggerName: `/guest/${name}`, alarm: { kind: 'hourly' } }),
      /no feed event/,
    );
  });

  it('survive a restart: start() reschedules active alarms and ends those that expired meanwhile', async () => {
    const waiting = await trigger();
    const expired = await trigger();
    const date = new Date(Date.now() + 3_600_000).toISOString();
    await create(waiting, { kind: 'once', date });
    await create(expired, { kind: 'once', date: Date.now() + 3_600_000 });
    triggers.stop();
    // As if the platform had been down when the second one was due.
    const record = await store.getTrigger('guest', expired);
    const alarm = await stored(expired);
    assert.ok(record && alarm);
    await store.putTrigger(
      { ...record, annotations: withAlarm(record.annotations, { ...alarm, date: Date.now() - 1000 }) },
      { overwrite: true },
    );
    const restarted = new Triggers({ store, invoke: recorder.invoke, warn: (message) => warnings.push(message) });
    try {
      await restarted.start();
      assert.equal(restarted.nextAlarm('guest', waiting)?.toISOString(), date);
      assert.equal(restarted.nextAlarm('guest', expired), undefined);
      assert.deepEqual((await stored(expired))?.reason, { kind: 'AUTO', message: 'the fire once date has expired' });
      await restarted.delete('guest', waiting);
      assert.equal(restarted.nextAlarm('guest', waiting), undefined, 'deleting the trigger stops its alarm');
    } finally {
      restarted.stop();
    }
    assert.equal(recorder.commands.length, 0);
  });

  it('a trigger update keeps the alarm it leaves out; an alarm annotation given is checked', async () => {
    const name = await trigger();
    await create(name, { kind: 'once', date: Date.now() + 3_600_000 });
    const updated = await triggers.put(
      { namespace: 'guest', name, parameters: [], annotations: [{ key: 'note', value: 'mine' }] },
      { overwrite: true },
    );
    assert.deepEqual(
      updated.annotations.map((a) => a.key),
      ['note', 'alarm'],
    );
    assert.ok(triggers.nextAlarm('guest', name), 'still scheduled');
    await assert.rejects(
      triggers.put(
        { namespace: 'guest', name, parameters: [], annotations: [{ key: 'alarm', value: { kind: 'cron', cron: 'x' } }] },
        { overwrite: true },
      ),
      /annotation alarm/,
    );
  });
});
