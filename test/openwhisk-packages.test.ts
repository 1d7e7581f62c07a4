// OpenWhisk's packages as its npm client (`openwhisk` 3.21.9) uses them, against a real `isola
// serve`: packages and their parameters, actions in packages, bindings in the namespace and of
// another namespace's shared package, fully qualified references, web actions, sequences and
// rules through packages, and the refusals that store nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import openwhisk from 'openwhisk';
import type { ActivationRecord } from '../src/core/types.js';
import { runCliAgainst } from './helpers/cli.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

const ECHO = 'function main(params) { return params; }';
const WEB = 'function main(params) { return { greeting: params.greeting, name: params.name }; }';

type Client = ReturnType<typeof openwhisk>;

describe('OpenWhisk packages and bindings', () => {
  let server: TestServer;
  let ow: Client;
  let other: Client;
  let otherAuth: string;
  before(async () => {
    server = await TestServer.start();
    ow = openwhisk({ apihost: server.url, api_key: server.auth });
    const created = await fetch(`${server.url}/admin/v1/namespaces/other`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${server.adminToken}` },
    });
    assert.equal(created.status, 201);
    otherAuth = ((await created.json()) as { auth: string }).auth;
    other = openwhisk({ apihost: server.url, api_key: otherAuth });
  });
  after(async () => {
    await server.dispose();
  });

  const status = async (promise: Promise<unknown>) => {
    try {
      await promise;
      return 200;
    } catch (error) {
      return (error as { statusCode?: number }).statusCode;
    }
  };

  it('creates, lists and reads packages, and runs their actions with the package parameters', async () => {
    const pkg = await ow.packages.create({
      name: 'tools',
      package: {
        parameters: [
          { key: 'greeting', value: 'hi' },
          { key: 'who', value: 'package' },
        ],
      },
    });
    assert.equal(pkg.name, 'tools');
    assert.deepEqual(pkg.binding, {});
    await ow.actions.create({
      name: 'tools/echo',
      action: ECHO,
      kind: 'nodejs:20',
      params: { who: 'action', own: 1 },
    } as never);
    const shown = (await ow.actions.get({ name: 'tools/echo' })) as { namespace: string; name: string };
    assert.equal(shown.namespace, 'guest/tools');
    assert.equal(shown.name, 'echo');
    const read = (await ow.packages.get({ name: 'tools' })) as unknown as { actions: { name: string }[]; parameters: unknown[] };
    assert.deepEqual(
      read.actions.map((a) => a.name),
      ['echo'],
    );
    const listed = (await ow.packages.list()) as unknown as { name: string }[];
    assert.deepEqual(
      listed.map((p) => p.name),
      ['tools'],
    );
    const actions = (await ow.actions.list()) as unknown as { namespace: string; name: string }[];
    assert.ok(actions.some((a) => a.namespace === 'guest/tools' && a.name === 'echo'));
    // Weakest first: the action's, then the package's, then the invocation's.
    const result = await ow.actions.invoke({ name: 'tools/echo', blocking: true, result: true, params: { greeting: 'yo' } });
    assert.deepEqual(result, { who: 'package', own: 1, greeting: 'yo' });
  });

  it('refuses what OpenWhisk refuses, storing nothing', async () => {
    assert.equal(await status(ow.actions.create({ name: 'nopkg/echo', action: ECHO, kind: 'nodejs:20' })), 404);
    assert.equal(await status(ow.actions.get({ name: 'nopkg/echo' })), 404);
    assert.equal(await status(ow.packages.delete({ name: 'tools' })), 409);
    assert.equal(
      await status(ow.packages.create({ name: 'b1', package: { binding: { namespace: '_', name: 'nothing' } } })),
      400,
    );
    assert.equal(await status(ow.packages.create({ name: 'b2', package: { binding: { namespace: '_', name: 'b2' } } })), 400);
    for (const name of ['b1', 'b2']) assert.equal(await status(ow.packages.get({ name })), 404);
    const bad = await server.request('PUT', '/api/v1/namespaces/_/packages/bad', { binding: { namespace: 1 } });
    assert.equal(bad.status, 400);
    const prototypeName = await server.request('PUT', '/api/v1/namespaces/_/packages/__proto__', {});
    assert.equal(prototypeName.status, 200); // a valid entity name, stored as a name like any other
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/packages/__proto__')).status, 200);
    const nested = await server.request('PUT', '/api/v1/namespaces/_/actions/a/b/c', { exec: { kind: 'nodejs:20', code: ECHO } });
    assert.equal(nested.status, 404);
  });

  it('binds a package in the namespace, with parameters of its own; a binding holds no actions', async () => {
    await ow.packages.create({
      name: 'loud',
      package: { binding: { namespace: '_', name: 'tools' }, parameters: [{ key: 'greeting', value: 'HELLO' }] },
    });
    const binding = (await ow.packages.get({ name: 'loud' })) as unknown as {
      binding: { namespace: string; name: string };
      actions: { name: string }[];
    };
    assert.deepEqual(binding.binding, { namespace: 'guest', name: 'tools' });
    assert.deepEqual(
      binding.actions.map((a) => a.name),
      ['echo'],
    );
    const result = await ow.actions.invoke({ name: 'loud/echo', blocking: true, result: true });
    assert.deepEqual(result, { who: 'package', own: 1, greeting: 'HELLO' });
    assert.equal(await status(ow.actions.create({ name: 'loud/x', action: ECHO, kind: 'nodejs:20' })), 400);
    assert.equal(await status(ow.packages.create({ name: 'b3', package: { binding: { namespace: '_', name: 'loud' } } })), 400);
  });

  it("uses another namespace's shared package, by binding and by its full name, recording the runs in the caller's namespace", async () => {
    await other.packages.create({ name: 'shared', package: { publish: true, parameters: [{ key: 'from', value: 'other' }] } });
    await other.packages.create({ name: 'private', package: {} });
    await other.actions.create({ name: 'shared/echo', action: ECHO, kind: 'nodejs:20' });
    await other.actions.create({ name: 'private/echo', action: ECHO, kind: 'nodejs:20' });
    await other.actions.create({ name: 'loose', action: ECHO, kind: 'nodejs:20' });

    const visible = (await ow.packages.list({ namespace: 'other' })) as unknown as { name: string }[];
    assert.deepEqual(
      visible.map((p) => p.name),
      ['shared'],
    );
    assert.equal(await status(ow.packages.get({ name: '/other/private' })), 404);

    const direct = await server.request<ActivationRecord>('POST', '/api/v1/namespaces/other/actions/shared/echo?blocking=true', {
      x: 1,
    });
    assert.equal(direct.status, 200);
    assert.deepEqual(direct.body.response.result, { from: 'other', x: 1 });
    assert.equal(annotation(direct.body, 'path'), 'other/shared/echo');
    // Recorded where the caller can read it, not in the owner's namespace.
    const record = await waitFor(
      'the activation record in the caller namespace',
      async () => {
        const got = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${direct.body.activationId}`);
        return got.status === 200 ? got.body : undefined;
      },
      30_000,
    );
    assert.equal(record.namespace, 'guest');
    const owners = await server.request('GET', `/api/v1/namespaces/other/activations/${direct.body.activationId}`, undefined, {
      auth: otherAuth,
    });
    assert.equal(owners.status, 404);

    assert.equal((await server.request('POST', '/api/v1/namespaces/other/actions/private/echo?blocking=true', {})).status, 404);
    assert.equal((await server.request('POST', '/api/v1/namespaces/other/actions/loose?blocking=true', {})).status, 403);
    assert.equal(
      (await server.request('PUT', '/api/v1/namespaces/other/actions/shared/mine', { exec: { kind: 'nodejs:20', code: ECHO } }))
        .status,
      403,
    );
    assert.equal(
      await status(ow.packages.create({ name: 'bp', package: { binding: { namespace: 'other', name: 'private' } } })),
      400,
    );

    await ow.packages.create({
      name: 'mine',
      package: { binding: { namespace: 'other', name: 'shared' }, parameters: [{ key: 'tenant', value: 'guest' }] },
    });
    const bound = await ow.actions.invoke({ name: 'mine/echo', blocking: true, result: true, params: { y: 2 } });
    assert.deepEqual(bound, { from: 'other', tenant: 'guest', y: 2 });
    const viaClient = await ow.actions.invoke({ name: '/other/shared/echo', blocking: true, result: true });
    assert.deepEqual(viaClient, { from: 'other' });
  });

  it('serves web actions in packages, and runs packages in sequences and rules', async () => {
    await ow.actions.create({
      name: 'tools/web',
      action: WEB,
      kind: 'nodejs:20',
      annotations: { 'web-export': true },
    } as never);
    const web = await fetch(`${server.url}/api/v1/web/guest/tools/web.json?name=ann`);
    assert.equal(web.status, 200);
    assert.deepEqual(await web.json(), { greeting: 'hi', name: 'ann' });
    const viaBinding = await fetch(`${server.url}/api/v1/web/guest/loud/web.json`);
    assert.deepEqual(await viaBinding.json(), { greeting: 'HELLO' });
    // An API route reaches a web action in a package too.
    // The client sends `responsetype`, which its typings leave out.
    const routes = ow.routes as unknown as { create(options: Record<string, string>): Promise<{ gwApiUrl: string }> };
    const route = await routes.create({
      basepath: '/pkg',
      relpath: '/greet',
      operation: 'GET',
      action: 'tools/web',
      responsetype: 'json',
    });
    const routed = await fetch(`${route.gwApiUrl}/greet?name=bo`);
    assert.equal(routed.status, 200);
    assert.deepEqual(await routed.json(), { greeting: 'hi', name: 'bo' });

    const sequence = await server.request<{ exec: { components: string[] } }>('PUT', '/api/v1/namespaces/_/actions/chain', {
      exec: { kind: 'sequence', components: ['tools/echo', '/other/shared/echo', '/_/loud/echo'] },
    });
    assert.equal(sequence.status, 200);
    assert.deepEqual(sequence.body.exec.components, ['/guest/tools/echo', '/other/shared/echo', '/guest/loud/echo']);
    const chained = await ow.actions.invoke({ name: 'chain', blocking: true, result: true, params: { z: 3 } });
    // Each result is the next one's parameters, which override the binding's own.
    assert.deepEqual(chained, { who: 'package', own: 1, greeting: 'hi', from: 'other', z: 3 });

    await ow.triggers.create({ name: 'ping' });
    const rule = (await ow.rules.create({ name: 'pinger', trigger: 'ping', action: '/other/shared/echo' })) as unknown as {
      action: { path: string; name: string };
    };
    assert.deepEqual(rule.action, { path: 'other/shared', name: 'echo' });
    await ow.triggers.invoke({ name: 'ping', params: { fired: true } });
    const fired = await waitFor(
      'the rule to run the shared action',
      async () => {
        const list = await server.request<ActivationRecord[]>('GET', '/api/v1/namespaces/_/activations?docs=true&limit=50');
        return list.body.find((a) => a.name === 'other/shared/echo' && (a.response.result as { fired?: boolean }).fired);
      },
      30_000,
    );
    assert.deepEqual(fired.response.result, { from: 'other', fired: true });
  });

  it('manages packages from the command line, as wsk package does', async () => {
    const created = await runCliAgainst(server, ['package', 'create', 'clip', '-p', 'greeting', 'cli', '--shared', 'no']);
    assert.equal(created.code, 0, created.stderr);
    const bound = await runCliAgainst(server, ['package', 'bind', '/other/shared', 'clibind', '-p', 'tenant', 'cli']);
    assert.equal(bound.code, 0, bound.stderr);
    const shown = await runCliAgainst(server, ['--json', 'package', 'get', 'clibind']);
    assert.deepEqual(JSON.parse(shown.stdout).binding, { namespace: 'other', name: 'shared' });
    const summary = await runCliAgainst(server, ['package', 'get', '-s', '/other/shared']);
    assert.match(summary.stdout, /action \/other\/shared\/echo/);
    const listed = await runCliAgainst(server, ['package', 'list', '/other']);
    assert.match(listed.stdout, /\/other\/shared/);
    const invoked = await runCliAgainst(server, ['action', 'invoke', 'clibind/echo', '-r', '-p', 'x', '1']);
    assert.equal(invoked.code, 0, invoked.stderr);
    assert.deepEqual(JSON.parse(invoked.stdout), { from: 'other', tenant: 'cli', x: 1 });
    const qualified = await runCliAgainst(server, ['action', 'invoke', '/other/shared/echo', '-r']);
    assert.deepEqual(JSON.parse(qualified.stdout), { from: 'other' });
    const refused = await runCliAgainst(server, ['package', 'create', 'bad', '--shared', 'maybe']);
    assert.notEqual(refused.code, 0);
    assert.equal((await runCliAgainst(server, ['package', 'delete', 'clip'])).code, 0);
    assert.equal((await runCliAgainst(server, ['package', 'delete', 'clibind'])).code, 0);
    assert.equal(await status(ow.packages.get({ name: 'bad' })), 404);
  });

  it('deletes a package once it is empty; bindings of a deleted package offer nothing', async () => {
    await ow.actions.delete({ name: 'tools/echo' });
    await ow.actions.delete({ name: 'tools/web' });
    await ow.packages.delete({ name: 'tools' });
    assert.equal(await status(ow.packages.get({ name: 'tools' })), 404);
    const binding = (await ow.packages.get({ name: 'loud' })) as unknown as { actions: unknown[] };
    assert.deepEqual(binding.actions, []);
    assert.equal(await status(ow.actions.invoke({ name: 'loud/echo', blocking: true })), 404);
  });
});
