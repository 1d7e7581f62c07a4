import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { annotationValue } from '../../core/types.js';
import { buildAgent } from '../../guest/bundle.js';
import type { Backend, Sandbox } from '../../sandbox/backend.js';
import { IsolateBackend } from '../../sandbox/isolate/isolate-backend.js';
import { ProcessBackend } from '../../sandbox/process/process-backend.js';
import { AlarmFeedEventSchema } from '../alarms.js';
import { CATALOGUE, type CatalogueAction, FEED_ANNOTATION, SYSTEM_NAMESPACE } from './catalogue.js';

// Each catalogue action runs as Isola runs it: in a real sandbox of the isolation it gets (the
// isolate, nodejs's default, or a process for the two that read the environment), with its
// package's and its own bound parameters under the caller's, as OpenWhisk merges them.

function find(path: string): { action: CatalogueAction; bound: Record<string, unknown> } {
  const [pkgName, actionName] = path.split('/');
  const pkg = CATALOGUE.find((p) => p.name === pkgName);
  const action = pkg?.actions.find((a) => a.name === actionName);
  assert.ok(pkg && action, `${path} is in the catalogue`);
  const bound = Object.fromEntries([...pkg.parameters, ...action.parameters].map((p) => [p.key, p.value]));
  return { action, bound };
}

let versions = 0;

/** Runs catalogue actions in one backend, one initialised sandbox per action, with `env` as the platform gives it. */
class Runner {
  private readonly sandboxes = new Map<string, Promise<Sandbox>>();

  constructor(
    private readonly backend: Backend,
    private readonly env: Record<string, string>,
  ) {}

  private sandbox(path: string, action: CatalogueAction): Promise<Sandbox> {
    let sandbox = this.sandboxes.get(path);
    if (!sandbox) {
      sandbox = (async () => {
        const created = await this.backend.create({ memoryMb: 128 });
        const init = await created.init(
          {
            key: `${SYSTEM_NAMESPACE}/${path}@0.0.1#r${++versions}`,
            kind: action.kind,
            code: action.code,
            binary: false,
            main: action.main,
            filename: `${action.name}.js`,
            env: this.env,
            logLimitBytes: 64 * 1024,
          },
          Date.now() + 20_000,
          () => {},
        );
        assert.deepEqual(init, { ok: true }, `${path} initialises`);
        return created;
      })();
      this.sandboxes.set(path, sandbox);
    }
    return sandbox;
  }

  /** The action's result; fails the test when it threw, crashed or timed out. */
  async run(path: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const { action, bound } = find(path);
    const sandbox = await this.sandbox(path, action);
    const outcome = await sandbox.run({
      activationId: `a${++versions}`,
      params: { ...bound, ...params },
      deadline: Date.now() + 10_000,
      env: this.env,
      onLog: () => {},
    });
    assert.equal(outcome.kind, 'result', `${path} returns a result: ${JSON.stringify(outcome)}`);
    return (outcome as { result: Record<string, unknown> }).result;
  }

  async close(): Promise<void> {
    await Promise.all([...this.sandboxes.values()].map(async (s) => (await s).destroy()));
  }
}

describe('the whisk.system catalogue', () => {
  it('has the packages and actions of OpenWhisk, each with a description', () => {
    assert.equal(SYSTEM_NAMESPACE, 'whisk.system');
    assert.deepEqual(
      CATALOGUE.map((p) => [p.name, p.actions.map((a) => a.name)]),
      [
        ['utils', ['echo', 'cat', 'sort', 'head', 'split', 'smash', 'date', 'namespace', 'hosturl']],
        ['alarms', ['alarm', 'once', 'interval']],
      ],
    );
    for (const pkg of CATALOGUE) {
      assert.equal(typeof annotationValue(pkg.annotations, 'description'), 'string', pkg.name);
      for (const action of pkg.actions) {
        assert.equal(typeof annotationValue(action.annotations, 'description'), 'string', action.name);
        assert.match(action.code, /exports\.main = main;/, `${action.name} has its source`);
      }
    }
  });

  it('marks the alarms actions as feeds, as OpenWhisk does, and as the platform recognises them', () => {
    const alarms = CATALOGUE.find((p) => p.name === 'alarms');
    for (const action of alarms?.actions ?? []) {
      assert.equal(annotationValue(action.annotations, 'feed'), true, action.name);
      assert.equal(annotationValue(action.annotations, FEED_ANNOTATION), 'alarms', action.name);
    }
    const utils = CATALOGUE.find((p) => p.name === 'utils');
    for (const action of utils?.actions ?? []) assert.equal(annotationValue(action.annotations, 'feed'), undefined);
  });

  it('is built into dist/ with the same sources', async () => {
    // run-tests.js builds dist/ first; the server runs it.
    const built = (await import(new URL('../../../dist/platform/catalogue/catalogue.js', import.meta.url).href)) as {
      CATALOGUE: typeof CATALOGUE;
    };
    assert.deepEqual(built.CATALOGUE, CATALOGUE);
  });
});

describe('the utils actions, in an isolate', () => {
  const backend = new IsolateBackend();
  const runner = new Runner(backend, { __OW_NAMESPACE: SYSTEM_NAMESPACE, __OW_ACTION_NAME: '/whisk.system/utils/x' });
  after(async () => {
    await runner.close();
    await backend.close();
  });

  it('echo returns its parameters', async () => {
    assert.deepEqual(await runner.run('utils/echo', { payload: 'Five fuzzy felines', n: [1, { a: null }] }), {
      payload: 'Five fuzzy felines',
      n: [1, { a: null }],
    });
    assert.deepEqual(await runner.run('utils/echo'), {});
  });

  it('cat joins lines with newlines', async () => {
    assert.deepEqual(await runner.run('utils/cat', { lines: [4, 2, 3], other: true }), { lines: [4, 2, 3], payload: '4\n2\n3' });
    assert.deepEqual(await runner.run('utils/cat'), { lines: [], payload: '' });
    assert.match(String((await runner.run('utils/cat', { lines: 'abc' })).error), /lines.*array/);
  });

  it('sort sorts lines and counts them', async () => {
    assert.deepEqual(await runner.run('utils/sort', { lines: ['pear', 'apple', 'fig'] }), {
      lines: ['apple', 'fig', 'pear'],
      length: 3,
    });
    assert.deepEqual(await runner.run('utils/sort', { lines: [4, 2, 3] }), { lines: [2, 3, 4], length: 3 });
    assert.match(String((await runner.run('utils/sort', { lines: { a: 1 } })).error), /lines.*array/);
  });

  it('head takes the first num lines, one by default', async () => {
    assert.deepEqual(await runner.run('utils/head', { lines: [4, 2, 3], num: 2 }), { lines: [4, 2], num: 2 });
    assert.deepEqual(await runner.run('utils/head', { lines: ['a', 'b'] }), { lines: ['a'], num: 1 });
    assert.deepEqual(await runner.run('utils/head', { lines: ['a'], num: 5 }), { lines: ['a'], num: 5 });
    assert.match(String((await runner.run('utils/head', { lines: ['a'], num: -2 })).error), /num.*positive integer/);
    assert.match(String((await runner.run('utils/head', { lines: ['a'], num: 'two' })).error), /num/);
    assert.match(String((await runner.run('utils/head', { lines: 7 })).error), /lines.*array/);
  });

  it('split splits a string at newlines, or at the separator given', async () => {
    assert.deepEqual(await runner.run('utils/split', { payload: 'a\nb\nc' }), { lines: ['a', 'b', 'c'], payload: 'a\nb\nc' });
    assert.deepEqual(await runner.run('utils/split', { payload: 'one,two,three', separator: ',' }), {
      lines: ['one', 'two', 'three'],
      payload: 'one,two,three',
    });
    assert.match(String((await runner.run('utils/split')).error), /payload.*string/);
    assert.match(String((await runner.run('utils/split', { payload: 'a', separator: 3 })).error), /separator/);
  });

  it('smash nests the parameters under $fieldName', async () => {
    assert.deepEqual(await runner.run('utils/smash', { a: 1, b: { c: 2 }, $fieldName: 'p' }), { p: { a: 1, b: { c: 2 } } });
    assert.deepEqual(await runner.run('utils/smash', { a: 1 }), { error: "Expected an argument '$fieldName' of type 'string'." });
  });

  it('date answers the current date as an ISO string', async () => {
    const before = Date.now();
    const { date } = await runner.run('utils/date');
    assert.equal(typeof date, 'string');
    assert.equal(new Date(date as string).toISOString(), date);
    assert.ok(Date.parse(date as string) >= before - 1000, 'now, not some other time');
  });

  it('namespace and hosturl answer an error where the sandbox has no environment', async () => {
    assert.match(String((await runner.run('utils/namespace')).error), /__OW_NAMESPACE/);
    assert.match(String((await runner.run('utils/hosturl', { path: 'echo' })).error), /__OW_API_HOST/);
  });
});

describe('the utils actions that read the environment, in a process sandbox', () => {
  const base = mkdtempSync(join(tmpdir(), 'isola-catalogue-test-'));
  let backend: ProcessBackend;
  let runner: Runner;
  const host = 'http://127.0.0.1:3233';
  before(() => {
    backend = new ProcessBackend({ agentPath: buildAgent(join(base, 'runtime')), sandboxRoot: join(base, 'sandboxes') });
    runner = new Runner(backend, { __OW_NAMESPACE: 'guest', __OW_API_HOST: host });
  });
  after(async () => {
    await runner.close();
    rmSync(base, { recursive: true, force: true });
  });

  it('are annotated to run where there is an environment', () => {
    for (const path of ['utils/namespace', 'utils/hosturl']) {
      assert.equal(annotationValue(find(path).action.annotations, 'isolation'), 'process', path);
    }
  });

  it('namespace answers __OW_NAMESPACE', async () => {
    assert.deepEqual(await runner.run('utils/namespace'), { namespace: 'guest' });
  });

  it('hosturl builds the URLs of actions, web actions and triggers', async () => {
    assert.deepEqual(await runner.run('utils/hosturl'), { url: `${host}/api/v1/namespaces/guest/actions` });
    assert.deepEqual(await runner.run('utils/hosturl', { path: 'utils/echo' }), {
      url: `${host}/api/v1/namespaces/guest/actions/utils/echo`,
    });
    assert.deepEqual(await runner.run('utils/hosturl', { path: 'hello', web: true, ext: '.json' }), {
      url: `${host}/api/v1/web/guest/default/hello.json`,
    });
    assert.deepEqual(await runner.run('utils/hosturl', { path: 'tick', trigger: true }), {
      url: `${host}/api/v1/namespaces/guest/triggers/tick`,
    });
  });

  it('hosturl answers the catalogue errors for bad parameters', async () => {
    assert.deepEqual(await runner.run('utils/hosturl', { path: 't', web: true, trigger: true }), {
      error: 'triggers are not allowed for web actions.',
    });
    assert.match(String((await runner.run('utils/hosturl', { path: 'a', web: true, ext: '.exe' })).error), /extension/);
    assert.deepEqual(await runner.run('utils/hosturl', { path: 'pkg/t', trigger: true }), {
      error: 'triggers are not allowed in packages.',
    });
    assert.match(String((await runner.run('utils/hosturl', { path: 42 })).error), /path.*string/);
  });
});

describe('the alarms feeds, in an isolate', () => {
  const backend = new IsolateBackend();
  const runner = new Runner(backend, { __OW_NAMESPACE: SYSTEM_NAMESPACE });
  after(async () => {
    await runner.close();
    await backend.close();
  });
  const feed = { triggerName: '/guest/tick', authKey: 'uuid:key' };
  const future = (ms: number) => new Date(Date.now() + ms).toISOString();
  const past = new Date(Date.now() - 60_000).toISOString();

  /** Runs a feed and checks its answer is a feed event the platform accepts. */
  async function event(path: string, params: Record<string, unknown>) {
    const result = await runner.run(path, { ...feed, ...params });
    assert.equal(result.error, undefined, JSON.stringify(result));
    assert.equal(JSON.stringify(result).includes('uuid:key'), false, 'the answer never repeats the key');
    return AlarmFeedEventSchema.parse(result);
  }

  async function error(path: string, params: Record<string, unknown>): Promise<string> {
    const result = await runner.run(path, { ...feed, ...params });
    assert.equal(typeof result.error, 'string', JSON.stringify(result));
    return result.error as string;
  }

  it('alarm: CREATE describes a cron alarm with its payload, start and stop dates and timezone', async () => {
    const startDate = future(3_600_000);
    const stopDate = future(7_200_000);
    assert.deepEqual(
      await event('alarms/alarm', {
        lifecycleEvent: 'CREATE',
        cron: '*/2 * * * *',
        trigger_payload: { name: 'Odin' },
        startDate,
        stopDate,
        timezone: 'Europe/Stockholm',
      }),
      {
        lifecycleEvent: 'CREATE',
        triggerName: '/guest/tick',
        alarm: {
          kind: 'cron',
          cron: '*/2 * * * *',
          payload: { name: 'Odin' },
          startDate,
          stopDate,
          timezone: 'Europe/Stockholm',
        },
      },
    );
    // The package's bound empty trigger_payload means no parameters; a string becomes {payload}; six fields have seconds.
    assert.deepEqual((await event('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '0 9 8 * *' })).alarm?.payload, {});
    assert.deepEqual(
      (await event('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '*/30 * * * * *', trigger_payload: 'hi' })).alarm,
      { kind: 'cron', cron: '*/30 * * * * *', payload: { payload: 'hi' } },
    );
    await event('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '0 0 * JAN-MAR mon-fri' });
  });

  it('alarm: refuses a missing or bad cron, a bad timezone, and dates in the past or out of order', async () => {
    assert.equal(await error('alarms/alarm', { lifecycleEvent: 'CREATE' }), 'alarms trigger feed is missing the cron parameter');
    for (const cron of [
      '* * * *',
      '61 * * * *',
      '* 24 * * *',
      '* * 0 * *',
      '* * * 13 *',
      'a b c d e',
      '5-1 * * * *',
      '*/0 * * * *',
    ]) {
      assert.equal(await error('alarms/alarm', { lifecycleEvent: 'CREATE', cron }), `cron pattern '${cron}' is not valid`, cron);
    }
    assert.equal(
      await error('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '* * * * *', timezone: 'Mars/Olympus' }),
      'Invalid timezone.',
    );
    assert.equal(
      await error('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '* * * * *', startDate: past }),
      `startDate parameter '${past}' must be in the future`,
    );
    assert.equal(
      await error('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '* * * * *', startDate: 'soon' }),
      "startDate parameter 'soon' is not a valid Date",
    );
    const startDate = future(7_200_000);
    const stopDate = future(3_600_000);
    assert.equal(
      await error('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '* * * * *', startDate, stopDate }),
      `stopDate parameter '${stopDate}' must be greater than the startDate parameter '${startDate}'`,
    );
    assert.match(
      await error('alarms/alarm', { lifecycleEvent: 'CREATE', cron: '* * * * *', trigger_payload: [1] }),
      /trigger_payload/,
    );
  });

  it('once: CREATE describes a date with deleteAfterFire; refuses a missing or past date and a bad deleteAfterFire', async () => {
    const date = future(60_000);
    assert.deepEqual(await event('alarms/once', { lifecycleEvent: 'CREATE', date, deleteAfterFire: 'Rules ' }), {
      lifecycleEvent: 'CREATE',
      triggerName: '/guest/tick',
      alarm: { kind: 'once', date, payload: {}, deleteAfterFire: 'rules' },
    });
    const epoch = Date.now() + 60_000;
    assert.deepEqual((await event('alarms/once', { lifecycleEvent: 'CREATE', date: epoch, deleteAfterFire: true })).alarm, {
      kind: 'once',
      date: epoch,
      payload: {},
      deleteAfterFire: 'true',
    });
    assert.equal(
      await error('alarms/once', { lifecycleEvent: 'CREATE' }),
      'alarms once trigger feed is missing the date parameter',
    );
    assert.equal(
      await error('alarms/once', { lifecycleEvent: 'CREATE', date: past }),
      `date parameter '${past}' must be in the future`,
    );
    assert.equal(
      await error('alarms/once', { lifecycleEvent: 'CREATE', date, deleteAfterFire: 'always' }),
      'deleteAfterFire parameter must be one of [false, true, rules].',
    );
  });

  it('interval: CREATE describes minutes from a start date (30 s from now by default); refuses minutes below 1', async () => {
    const startDate = future(60_000);
    assert.deepEqual(
      await event('alarms/interval', { lifecycleEvent: 'CREATE', minutes: '2', startDate, trigger_payload: { a: 1 } }),
      {
        lifecycleEvent: 'CREATE',
        triggerName: '/guest/tick',
        alarm: { kind: 'interval', minutes: 2, startDate, payload: { a: 1 } },
      },
    );
    const before = Date.now();
    const { alarm } = await event('alarms/interval', { lifecycleEvent: 'CREATE', minutes: 1 });
    assert.equal(typeof alarm?.startDate, 'number');
    assert.ok((alarm?.startDate as number) >= before + 30_000 && (alarm?.startDate as number) <= Date.now() + 30_000);
    assert.equal(
      await error('alarms/interval', { lifecycleEvent: 'CREATE' }),
      'interval trigger feed is missing the minutes parameter',
    );
    assert.equal(
      await error('alarms/interval', { lifecycleEvent: 'CREATE', minutes: 0 }),
      'interval trigger feed is missing the minutes parameter',
    );
    assert.equal(
      await error('alarms/interval', { lifecycleEvent: 'CREATE', minutes: -3 }),
      'the minutes parameter must be an integer greater than zero',
    );
    assert.equal(
      await error('alarms/interval', { lifecycleEvent: 'CREATE', minutes: 1.5 }),
      'the minutes parameter must be an integer',
    );
    assert.equal(
      await error('alarms/interval', { lifecycleEvent: 'CREATE', minutes: 1, stopDate: past }),
      `stopDate parameter '${past}' must be in the future`,
    );
  });

  it('UPDATE describes only what changes, checked the same way', async () => {
    assert.deepEqual((await event('alarms/alarm', { lifecycleEvent: 'UPDATE', cron: '0 * * * *' })).alarm, {
      kind: 'cron',
      cron: '0 * * * *',
    });
    assert.deepEqual((await event('alarms/interval', { lifecycleEvent: 'UPDATE', minutes: 5, trigger_payload: 'x' })).alarm, {
      kind: 'interval',
      minutes: 5,
      payload: { payload: 'x' },
    });
    assert.deepEqual((await event('alarms/once', { lifecycleEvent: 'UPDATE', deleteAfterFire: 'false' })).alarm, {
      kind: 'once',
      deleteAfterFire: 'false',
    });
    assert.equal(await error('alarms/alarm', { lifecycleEvent: 'UPDATE' }), 'no updatable parameters were specified');
    assert.equal(await error('alarms/once', { lifecycleEvent: 'UPDATE', minutes: 3 }), 'no updatable parameters were specified');
    assert.equal(await error('alarms/alarm', { lifecycleEvent: 'UPDATE', cron: 'nope' }), "cron pattern 'nope' is not valid");
    assert.equal(
      await error('alarms/interval', { lifecycleEvent: 'UPDATE', minutes: 0.5 }),
      'the minutes parameter must be an integer',
    );
  });

  it('READ, DELETE, PAUSE and UNPAUSE name the trigger only; unknown events and a missing trigger are errors', async () => {
    for (const path of ['alarms/alarm', 'alarms/once', 'alarms/interval']) {
      for (const lifecycleEvent of ['READ', 'DELETE', 'PAUSE', 'UNPAUSE']) {
        assert.deepEqual(await event(path, { lifecycleEvent }), { lifecycleEvent, triggerName: '/guest/tick' });
      }
      assert.equal(await error(path, { lifecycleEvent: 'FIRE' }), 'unsupported lifecycleEvent');
      assert.equal(
        (await runner.run(path, { lifecycleEvent: 'CREATE' })).error,
        'no trigger name parameter was provided',
        'without the feed parameters',
      );
    }
  });
});
