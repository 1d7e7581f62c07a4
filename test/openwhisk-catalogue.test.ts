// The `whisk.system` catalogue through the `openwhisk` npm client and the CLI, against a real
// `isola serve`: its packages seen from every namespace, the utils actions by their full names
// and in sequences, and the alarms feeds' lifecycle on a trigger (CREATE, READ, PAUSE, UNPAUSE,
// DELETE) with a real firing; and that nobody writes into the catalogue.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import openwhisk from 'openwhisk';
import type { ActivationRecord } from '../src/core/types.js';
import { runCliAgainst } from './helpers/cli.js';
import { TestServer, waitFor } from './helpers/server.js';

type Client = ReturnType<typeof openwhisk>;

const failure = async (promise: Promise<unknown>): Promise<{ statusCode?: number; message: string }> => {
  try {
    await promise;
  } catch (error) {
    return error as { statusCode?: number; message: string };
  }
  return assert.fail('expected a refusal');
};

describe('the whisk.system catalogue', () => {
  let server: TestServer;
  let ow: Client;
  before(async () => {
    server = await TestServer.start();
    ow = openwhisk({ apihost: server.url, api_key: server.auth });
  });
  after(async () => {
    await server.dispose();
  });
  // The client has `feeds.get` (READ); its typings do not.
  const feeds = () => ow.feeds as unknown as { get(options: { name: string; trigger: string }): Promise<unknown> };
  /** The feed's READ answer: the client gives the whole (blocking) activation. */
  const readFeed = async (trigger: string) =>
    ((await feeds().get({ name: '/whisk.system/alarms/alarm', trigger })) as { response: { result: unknown } }).response.result;
  /** The trigger fires an echo action through a rule: its runs show the firings. */
  const withEcho = async (trigger: string) => {
    await ow.actions.create({ name: `${trigger}-echo`, action: 'function main(p) { return p; }', kind: 'nodejs:20' });
    await ow.rules.create({ name: `${trigger}-rule`, trigger, action: `${trigger}-echo` });
  };

  const triggerFirings = (trigger: string) =>
    server
      .request<ActivationRecord[]>('GET', `/api/v1/namespaces/_/activations?docs=true&limit=200&name=${trigger}-echo`)
      .then((r) => r.body.filter((a) => a.name === `${trigger}-echo`));

  it('is shared with every namespace: utils and alarms, their actions and feeds', async () => {
    const packages = (await ow.packages.list({ namespace: 'whisk.system' })) as unknown as { name: string; publish: boolean }[];
    assert.deepEqual(packages.map((p) => p.name).sort(), ['alarms', 'utils']);
    assert.ok(packages.every((p) => p.publish));
    const utils = (await ow.packages.get({ name: '/whisk.system/utils' })) as unknown as { actions: { name: string }[] };
    for (const name of ['echo', 'cat', 'sort', 'head', 'split', 'date', 'hosturl', 'namespace'])
      assert.ok(
        utils.actions.some((a) => a.name === name),
        name,
      );
    const alarms = (await ow.packages.get({ name: '/whisk.system/alarms' })) as unknown as { feeds: { name: string }[] };
    assert.deepEqual(alarms.feeds.map((f) => f.name).sort(), ['alarm', 'interval', 'once']);
    const echo = (await ow.actions.get({ name: '/whisk.system/utils/echo' })) as { namespace: string; name: string };
    assert.deepEqual([echo.namespace, echo.name], ['whisk.system/utils', 'echo']);
  });

  it('runs the utils actions by their full names, as the caller, and in sequences', async () => {
    const run = (name: string, params: Record<string, unknown> = {}) =>
      ow.actions.invoke({ name: `/whisk.system/utils/${name}`, blocking: true, result: true, params });
    assert.deepEqual(await run('echo', { a: 1 }), { a: 1 });
    assert.deepEqual(await run('cat', { lines: ['b', 'a'] }), { lines: ['b', 'a'], payload: 'b\na' });
    assert.deepEqual(await run('sort', { lines: ['b', 'c', 'a'] }), { lines: ['a', 'b', 'c'], length: 3 });
    assert.deepEqual(((await run('head', { lines: ['x', 'y', 'z'], num: 2 })) as { lines: string[] }).lines, ['x', 'y']);
    assert.deepEqual(await run('split', { payload: 'p,q', separator: ',' }), { lines: ['p', 'q'], payload: 'p,q' });
    const date = (await run('date')) as { date: string };
    assert.ok(!Number.isNaN(Date.parse(date.date)));
    assert.deepEqual(await run('namespace'), { namespace: 'guest' });
    const url = (await run('hosturl', { path: 'tools/echo' })) as { url: string };
    assert.equal(url.url, `${server.url}/api/v1/namespaces/guest/actions/tools/echo`);
    const sorted = await server.request('PUT', '/api/v1/namespaces/_/actions/sortlines', {
      exec: { kind: 'sequence', components: ['/whisk.system/utils/split', '/whisk.system/utils/sort'] },
    });
    assert.equal(sorted.status, 200);
    assert.deepEqual(
      await ow.actions.invoke({ name: 'sortlines', blocking: true, result: true, params: { payload: 'b\nc\na' } }),
      {
        lines: ['a', 'b', 'c'],
        length: 3,
      },
    );
    // A bad input is the action's own error, as in OpenWhisk's catalogue.
    const bad = await failure(run('sort', { lines: 'not a list' }));
    assert.equal(bad.statusCode, 502);
  });

  it('cannot be written: not its actions, not its packages, not its namespace', async () => {
    const code = { exec: { kind: 'nodejs:20', code: 'function main() { return {}; }' } };
    assert.equal((await server.request('PUT', '/api/v1/namespaces/whisk.system/actions/utils/mine', code)).status, 403);
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/whisk.system/actions/utils/echo')).status, 403);
    assert.equal((await server.request('PUT', '/api/v1/namespaces/whisk.system/packages/utils?overwrite=true', {})).status, 403);
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/whisk.system/packages/utils')).status, 403);
    const made = await fetch(`${server.url}/admin/v1/namespaces/whisk.system`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    assert.equal(made.status, 409);
    // Binding it is the way to give its actions parameters of one's own.
    await ow.packages.create({
      name: 'myutils',
      package: { binding: { namespace: 'whisk.system', name: 'utils' }, parameters: [{ key: 'num', value: 1 }] },
    });
    const head = await ow.actions.invoke({ name: 'myutils/head', blocking: true, result: true, params: { lines: ['1', '2'] } });
    assert.deepEqual((head as { lines: string[] }).lines, ['1']);
  });

  it('drives an alarm feed through its lifecycle with the client, and the alarm fires the trigger', async () => {
    await ow.triggers.create({
      name: 'ticker',
      trigger: { annotations: [{ key: 'feed', value: '/whisk.system/alarms/alarm' }] },
    });
    await withEcho('ticker');
    // Every second (six fields: seconds first).
    await ow.feeds.create({
      name: '/whisk.system/alarms/alarm',
      trigger: 'ticker',
      params: { cron: '* * * * * *', trigger_payload: { tick: true } },
    });
    const fired = await waitFor(
      'the alarm to fire the trigger',
      async () => {
        const firings = await triggerFirings('ticker');
        return firings.length > 0 ? firings : undefined;
      },
      30_000,
    );
    assert.deepEqual(fired[0]?.response.result, { tick: true });
    const read = (await readFeed('ticker')) as {
      config: { cron: string; payload: unknown };
      status: { active: boolean };
    };
    assert.equal(read.config.cron, '* * * * * *');
    assert.deepEqual(read.config.payload, { tick: true });
    assert.equal(read.status.active, true);

    await ow.actions.invoke({
      name: '/whisk.system/alarms/alarm',
      blocking: true,
      params: { lifecycleEvent: 'PAUSE', triggerName: '/_/ticker' },
    });
    const paused = (await readFeed('ticker')) as {
      status: { active: boolean };
    };
    assert.equal(paused.status.active, false);
    await ow.actions.invoke({
      name: '/whisk.system/alarms/alarm',
      blocking: true,
      params: { lifecycleEvent: 'UNPAUSE', triggerName: '/_/ticker' },
    });
    await ow.feeds.delete({ name: '/whisk.system/alarms/alarm', trigger: 'ticker' });
    assert.equal((await failure(feeds().get({ name: '/whisk.system/alarms/alarm', trigger: 'ticker' }))).statusCode, 502);
    await ow.rules.delete({ name: 'ticker-rule' });
    await ow.triggers.delete({ name: 'ticker' });
  });

  it("refuses bad feed parameters and other namespaces' triggers as the feed action's error", async () => {
    await ow.triggers.create({ name: 'badfeed' });
    const badCron = await failure(
      ow.feeds.create({ name: '/whisk.system/alarms/alarm', trigger: 'badfeed', params: { cron: 'every minute' } }),
    );
    assert.equal(badCron.statusCode, 502);
    assert.match(badCron.message, /cron/);
    const past = await failure(
      ow.feeds.create({ name: '/whisk.system/alarms/once', trigger: 'badfeed', params: { date: '2001-01-01T00:00:00Z' } }),
    );
    assert.equal(past.statusCode, 502);
    const missing = await failure(
      ow.feeds.create({ name: '/whisk.system/alarms/alarm', trigger: 'nosuch', params: { cron: '* * * * *' } }),
    );
    assert.equal(missing.statusCode, 502);
    const foreign = await failure(
      ow.actions.invoke({
        name: '/whisk.system/alarms/alarm',
        blocking: true,
        params: { lifecycleEvent: 'CREATE', triggerName: '/other/t', cron: '* * * * *' },
      }),
    );
    assert.equal(foreign.statusCode, 502);
    // Nothing was scheduled on the trigger.
    const trigger = await server.request<{ annotations: { key: string }[] }>('GET', '/api/v1/namespaces/_/triggers/badfeed');
    assert.ok(!trigger.body.annotations.some((a) => a.key === 'alarm'));
  });

  it('creates and deletes a feed trigger from the command line, as wsk trigger --feed does', async () => {
    // Far enough ahead that the CLI, started as a process of its own on a busy host, still finds
    // it in the future when the feed checks it.
    const date = new Date(Date.now() + 8000).toISOString();
    const created = await runCliAgainst(server, [
      'trigger',
      'create',
      'soon',
      '--feed',
      '/whisk.system/alarms/once',
      '-p',
      'date',
      date,
    ]);
    assert.equal(created.code, 0, created.stderr);
    await withEcho('soon');
    const shown = await runCliAgainst(server, ['trigger', 'get', 'soon']);
    assert.equal(shown.code, 0, shown.stderr);
    assert.equal(JSON.parse(shown.stdout).feed.config.date, date);
    await waitFor('the once alarm to fire', async () => ((await triggerFirings('soon')).length > 0 ? true : undefined), 60_000);
    const refused = await runCliAgainst(server, [
      'trigger',
      'create',
      'never',
      '--feed',
      '/whisk.system/alarms/once',
      '-p',
      'date',
      'tomorrow',
    ]);
    assert.notEqual(refused.code, 0);
    // A trigger whose feed refused is not left behind.
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/triggers/never')).status, 404);
    const deleted = await runCliAgainst(server, ['trigger', 'delete', 'soon']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/triggers/soon')).status, 404);
  });
});
