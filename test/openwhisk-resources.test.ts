// OpenWhisk's resource model as its own npm client (`openwhisk` 3.21.9) uses it, against a real
// `isola serve`: rules' shape, namespaces and limits, zips sent without `binary`, empty actions,
// and sequences.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import openwhisk from 'openwhisk';
import type { ActivationRecord } from '../src/core/types.js';
import { runCliAgainst } from './helpers/cli.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';
import { zipOf } from './helpers/zips.js';

const ECHO = 'function main(params) { return params; }';
const INC = 'function main(params) { return { x: params.x + 1 }; }';
const DOUBLE = 'function main(params) { return { x: params.x * 2 }; }';
const FAIL = 'function main() { return { error: "boom" }; }';
const ACTIVATION_ID = /^[0-9a-f]{32}$/;

type Client = ReturnType<typeof openwhisk>;
type ActionBody = { exec: { kind: string; binary?: boolean; components?: string[] }; version: string };

describe('OpenWhisk resources through the openwhisk client', () => {
  let server: TestServer;
  let ow: Client;
  before(async () => {
    server = await TestServer.start();
    ow = openwhisk({ apihost: server.url, api_key: server.auth });
    for (const [name, code] of [
      ['echo', ECHO],
      ['inc', INC],
      ['double', DOUBLE],
      ['fail', FAIL],
    ] as const) {
      await ow.actions.create({ name, action: code, kind: 'nodejs:20' });
    }
  });
  after(async () => {
    await server.dispose();
  });

  const action = (name: string) => server.request<ActionBody>('GET', `/api/v1/namespaces/_/actions/${name}`);
  const putAction = (name: string, exec: Record<string, unknown>, query = '') =>
    server.request<{ error?: string } & ActionBody>('PUT', `/api/v1/namespaces/_/actions/${name}${query}`, { exec });
  const sequence = (name: string, components: unknown, query = '') => putAction(name, { kind: 'sequence', components }, query);

  it('lists the caller namespace and the limits deploys are held to', async () => {
    assert.deepEqual(await ow.namespaces.list(), ['guest']);
    const limits = await server.request<Record<string, number>>('GET', '/api/v1/namespaces/_/limits');
    assert.equal(limits.status, 200);
    assert.deepEqual(limits.body, {
      actionMemoryMax: limits.body.actionMemoryMax,
      actionMemoryMin: 16,
      actionDurationMax: 300_000,
      actionDurationMin: 100,
      actionConcurrencyMax: 500,
      actionConcurrencyMin: 1,
      actionLogsMax: 10_240,
      actionLogsMin: 0,
      actionSequenceMaxLimit: 50,
    });
    assert.ok(limits.body.actionMemoryMax && limits.body.actionMemoryMax <= 8192);
    // The limit really is enforced: one MB over is refused.
    const over = await server.request('PUT', '/api/v1/namespaces/_/actions/big', {
      exec: { kind: 'nodejs:20', code: ECHO },
      limits: { memory: limits.body.actionMemoryMax + 1 },
    });
    assert.equal(over.status, 400);
    assert.equal((await server.request('GET', '/api/v1/namespaces/other/limits')).status, 403);
  });

  it('answers rules with action and trigger as { path, name }', async () => {
    await ow.triggers.create({ name: 'tick' });
    const created = await ow.rules.create({ name: 'tick-echo', action: 'echo', trigger: 'tick' });
    const expected = { path: 'guest', name: 'echo' };
    assert.deepEqual(created.action, expected);
    assert.deepEqual(created.trigger, { path: 'guest', name: 'tick' });
    assert.deepEqual((await ow.rules.get({ name: 'tick-echo' })).action, expected);
    const listed = (await ow.rules.list()) as unknown as { name: string; action: unknown }[];
    assert.deepEqual(listed.find((r) => r.name === 'tick-echo')?.action, expected);
    await ow.rules.delete({ name: 'tick-echo' });
    await ow.triggers.delete({ name: 'tick' });
  });

  it('recognises a zip the client sends without binary, and runs it', async () => {
    const zip = zipOf([
      { name: 'package.json', data: '{"main":"index.js"}' },
      { name: 'index.js', data: 'exports.main = (params) => ({ zipped: true, got: params.n });' },
    ]);
    await ow.actions.create({ name: 'zipped', action: zip, kind: 'nodejs:default' });
    const stored = await action('zipped');
    assert.equal(stored.body.exec.binary, true);
    const result = await ow.actions.invoke({ name: 'zipped', blocking: true, result: true, params: { n: 7 } });
    assert.deepEqual(result, { zipped: true, got: 7 });
  });

  it('takes an action with empty code, which fails at initialisation as the developer error it is', async () => {
    const created = await putAction('blank', { kind: 'nodejs:20', code: '' });
    assert.equal(created.status, 200);
    const run = await server.invoke<ActivationRecord>('blank');
    assert.equal(run.status, 502);
    assert.equal(run.body.response.status, 'action developer error');
    assert.match(String((run.body.response.result as { error: string }).error), /^Initialization has failed due to: .*no code/);
    // Given its code, it runs.
    assert.equal((await putAction('blank', { kind: 'nodejs:20', code: ECHO }, '?overwrite=true')).status, 200);
    assert.equal((await server.invoke('blank', { a: 1 })).status, 200);
  });

  it('runs a sequence blocking: each result is the next params, its logs name the components', async () => {
    await ow.actions.create({ name: 'inc-double', sequence: ['/_/inc', '/guest/double'] } as never);
    const stored = await action('inc-double');
    assert.deepEqual(stored.body.exec, { kind: 'sequence', components: ['/guest/inc', '/guest/double'] });
    // The other doors say it is a sequence, not the placeholder it is stored with.
    const faas = await server.request<{ image: string }>('GET', '/system/function/inc-double');
    assert.equal(faas.body.image, 'sequence');

    const record = (await ow.actions.invoke({
      name: 'inc-double',
      blocking: true,
      params: { x: 3 },
    })) as unknown as ActivationRecord;
    assert.deepEqual(record.response, { status: 'success', success: true, result: { x: 8 } });
    assert.equal(annotation(record, 'topmost'), true);
    assert.equal(annotation(record, 'kind'), 'sequence');
    assert.equal(annotation(record, 'path'), 'guest/inc-double');
    assert.deepEqual(annotation(record, 'limits'), { memory: 256, timeout: 60_000, concurrency: 1, logs: 10_240 });
    assert.equal(record.logs.length, 2);
    const [first, second] = await Promise.all(
      record.logs.map((id) => {
        assert.match(id, ACTIVATION_ID);
        return ow.activations.get({ name: id }) as unknown as Promise<ActivationRecord>;
      }),
    );
    assert.equal(first?.name, 'inc');
    assert.deepEqual(first?.response.result, { x: 4 });
    assert.equal(second?.name, 'double');
    assert.equal(annotation(second ?? { annotations: [] }, 'cause'), record.activationId);
    assert.equal(annotation(second ?? { annotations: [] }, 'causedBy'), 'sequence');

    // A sequence inside a sequence runs as a component with its own activation.
    assert.equal((await sequence('nested', ['/_/inc-double', '/_/inc'])).status, 200);
    const nested = await server.invoke<ActivationRecord>('nested', { x: 1 });
    assert.deepEqual(nested.body.response.result, { x: 5 });
    assert.equal(nested.body.logs.length, 2);
    const inner = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${nested.body.logs[0]}`);
    assert.equal(inner.body.name, 'inc-double');
    assert.equal(annotation(inner.body, 'topmost'), undefined);
    assert.equal(inner.body.logs.length, 2);
  });

  it('runs a sequence non-blocking, and stops it at the first failure, which is its result', async () => {
    const queued = await ow.actions.invoke({ name: 'inc-double', params: { x: 10 } });
    assert.match(queued.activationId, ACTIVATION_ID);
    const done = await waitFor('the queued sequence to finish', async () => {
      const got = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${queued.activationId}`);
      return got.status === 200 ? got.body : undefined;
    });
    assert.deepEqual(done.response.result, { x: 22 });
    assert.equal(done.logs.length, 2);

    assert.equal((await sequence('breaks', ['/_/inc', '/_/fail', '/_/double'])).status, 200);
    const failed = await server.invoke<ActivationRecord>('breaks', { x: 1 });
    assert.equal(failed.status, 502);
    assert.deepEqual(failed.body.response, { status: 'application error', success: false, result: { error: 'boom' } });
    assert.equal(failed.body.logs.length, 2, 'double never ran');
  });

  it('refuses bad sequences with a 400 and stores nothing', async () => {
    const refused = async (name: string, components: unknown, why: RegExp) => {
      const put = await sequence(name, components);
      assert.equal(put.status, 400, `${name}: ${JSON.stringify(put.body)}`);
      assert.match(put.body.error ?? '', why);
      assert.equal((await action(name)).status, 404, `${name} was stored`);
    };
    await refused('itself', ['/_/inc', '/_/itself'], /may not include itself/);
    await refused('missing', ['/_/inc', '/_/nope'], /\/guest\/nope does not exist/);
    await refused('elsewhere', ['/other/inc'], /not in a package/);
    await refused('none', [], /at least one/);
    await refused('unqualified', ['/a/b/c/d'], /not valid/);
    await refused(
      'too-long',
      Array.from({ length: 51 }, () => '/_/inc'),
      /at most 50 actions/,
    );
    assert.equal(
      (
        await sequence(
          'fifty',
          Array.from({ length: 50 }, () => '/_/inc'),
        )
      ).status,
      200,
    );
    // Nested sequences count with what they run.
    await refused('fifty-one', ['/_/fifty', '/_/inc'], /at most 50 actions/);
    const withCode = await putAction('coded', { kind: 'sequence', components: ['/_/inc'], code: ECHO });
    assert.equal(withCode.status, 400);

    // A cycle through another sequence, made by updating: refused, the stored version kept.
    assert.equal((await sequence('a', ['/_/inc'])).status, 200);
    assert.equal((await sequence('b', ['/_/a'])).status, 200);
    const cycle = await sequence('a', ['/_/b'], '?overwrite=true');
    assert.equal(cycle.status, 400);
    assert.match(cycle.body.error ?? '', /may not include itself/);
    const kept = await action('a');
    assert.equal(kept.body.version, '0.0.1');
    assert.deepEqual(kept.body.exec.components, ['/guest/inc']);

    // A component deleted after the sequence was made: the run fails, the caller's own doing.
    assert.equal((await sequence('dangling', ['/_/echo', '/_/gone-soon'])).status, 400);
    await ow.actions.create({ name: 'gone-soon', action: ECHO, kind: 'nodejs:20' });
    assert.equal((await sequence('dangling', ['/_/echo', '/_/gone-soon'])).status, 200);
    await ow.actions.delete({ name: 'gone-soon' });
    const dangling = await server.invoke<ActivationRecord>('dangling', { y: 1 });
    assert.equal(dangling.status, 502);
    assert.equal(dangling.body.response.status, 'application error');
    assert.match(String((dangling.body.response.result as { error: string }).error), /does not exist/);
    assert.equal(dangling.body.logs.length, 1);
  });

  it('drives triggers, rules and activation polling from the CLI, as wsk does', async () => {
    const ok = async (args: string[]) => {
      const run = await runCliAgainst(server, args);
      assert.equal(run.code, 0, `isola ${args.join(' ')}: ${run.stderr}`);
      return run.stdout;
    };
    assert.match(await ok(['trigger', 'create', 'ping', '-p', 'from', 'cli']), /ok: created trigger ping/);
    assert.match(await ok(['rule', 'create', 'ping-echo', 'ping', 'echo']), /ok: created rule ping-echo/);
    const rules = JSON.parse(await ok(['--json', 'rule', 'list'])) as { name: string; action: unknown; status: string }[];
    assert.deepEqual(
      rules.map((r) => [r.name, r.action, r.status]),
      [['ping-echo', { path: 'guest', name: 'echo' }, 'active']],
    );
    const fired = await ok(['trigger', 'fire', 'ping', '-p', 'n', '5']);
    assert.match(fired, /ok: triggered \/_\/ping with id [0-9a-f]{32}/);
    const echoed = await waitFor('the rule to run echo', async () => {
      const list = await server.request<ActivationRecord[]>('GET', '/api/v1/namespaces/_/activations?name=echo&docs=true');
      return list.body.find((a) => (a.response.result as { n?: number }).n === 5);
    });
    assert.deepEqual(echoed.response.result, { from: 'cli', n: 5 });
    const polled = await ok(['--json', 'activation', 'poll', 'echo', '--since-seconds', '600', '--exit', '1']);
    const ids = polled
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as ActivationRecord).activationId);
    assert.ok(ids.includes(echoed.activationId), polled);
    assert.match(await ok(['rule', 'disable', 'ping-echo']), /ok: disabled rule ping-echo/);
    assert.match(await ok(['action', 'create', 'cli-seq', '--sequence', 'inc,/guest/double']), /version 0\.0\.1, sequence\)/);
    const ran = JSON.parse(await ok(['action', 'invoke', 'cli-seq', '-r', '-p', 'x', '4'])) as unknown;
    assert.deepEqual(ran, { x: 10 });
    assert.match(await ok(['trigger', 'fire', 'ping']), /no active rule/);
    const bad = await runCliAgainst(server, ['rule', 'create', 'dangling', 'ping', 'no-such-action']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /does not exist/);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/rules/dangling')).status, 404);
    await ok(['rule', 'delete', 'ping-echo']);
    await ok(['trigger', 'delete', 'ping']);
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/triggers/ping')).status, 404);
  });
});
