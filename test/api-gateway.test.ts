// OpenWhisk's API gateway served by Isola itself: routes made, read and deleted through the
// `openwhisk` npm client's `routes` (the API management web actions it calls), and called over
// plain HTTP at `/api/{namespace uuid}/{base path}/{path}` as any client would. `isola api` too.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import openwhisk from 'openwhisk';
import { runCliAgainst } from './helpers/cli.js';
import { TestServer } from './helpers/server.js';

const HELLO = "function main({ name = 'Serverless API' }) { return { payload: 'Hello world ' + name }; }";
const BOOK = `function main(params) {
  return {
    statusCode: 201,
    headers: { 'x-book': params.isbn },
    body: { isbn: params.isbn, shelf: params.shelf, path: params.__ow_path, method: params.__ow_method, q: params.q, title: params.title },
  };
}`;
const PARAMS = 'function main(params) { return params; }';
const WEB = { annotations: [{ key: 'web-export', value: true }] };

interface SwaggerOperation {
  operationId: string;
  parameters?: { name: string; in: string; required: boolean; type: string }[];
  'x-openwhisk': { namespace: string; package: string; action: string; url: string };
  responses: unknown;
}
interface ApiValue {
  namespace: string;
  gwApiActivated: boolean;
  tenantId: string;
  gwApiUrl: string;
  apidoc: {
    swagger: string;
    info: { title: string; version: string };
    basePath: string;
    paths: Record<string, Record<string, SwaggerOperation>>;
  };
}
interface ApiList {
  apis: { id: string; key: string; value: ApiValue }[];
}

/**
 * The client's `routes` as its code (lib/routes.js) has them: its bundled type definitions lag
 * behind (no `get`, no `responsetype`, other shapes), so the calls are typed here.
 */
interface Routes {
  create(options: Record<string, unknown>): Promise<unknown>;
  list(options?: Record<string, unknown>): Promise<unknown>;
  get(options: Record<string, unknown>): Promise<unknown>;
  delete(options: Record<string, unknown>): Promise<unknown>;
}

/** The error an `openwhisk` client call was refused with: its status and the server's message. */
async function refusal(call: Promise<unknown>): Promise<{ statusCode: number; message: string }> {
  try {
    await call;
  } catch (error) {
    const { statusCode, message } = error as { statusCode: number; message: string };
    return { statusCode, message };
  }
  assert.fail('the call was expected to fail');
}

describe('API gateway routes through the openwhisk client', () => {
  let server: TestServer;
  let routes: Routes;
  let uuid: string;
  before(async () => {
    server = await TestServer.start();
    routes = openwhisk({ apihost: server.url, api_key: server.auth }).routes as unknown as Routes;
    uuid = server.auth.split(':')[0] as string;
    for (const [name, code] of [
      ['hello', HELLO],
      ['book', BOOK],
      ['params', PARAMS],
    ] as const) {
      assert.equal((await server.deploy(name, code, WEB)).status, 200);
    }
    assert.equal((await server.deploy('private', HELLO)).status, 200);
  });
  after(async () => {
    await server.dispose();
  });

  const apis = async () => (await server.request<ApiList>('GET', '/api/v1/web/whisk.system/apimgmt/getApi.http')).body.apis;

  it('creates a route to a web action and serves it at the gateway URL (response type json)', async () => {
    const created = (await routes.create({
      basepath: '/hello',
      relpath: '/world',
      operation: 'GET',
      action: 'hello',
      responsetype: 'json',
    })) as ApiValue;
    assert.equal(created.gwApiActivated, true);
    assert.equal(created.namespace, 'guest');
    assert.equal(created.tenantId, uuid);
    assert.equal(created.gwApiUrl, `${server.url}/api/${uuid}/hello`);
    assert.equal(created.apidoc.swagger, '2.0');
    assert.equal(created.apidoc.basePath, '/hello');
    assert.deepEqual(created.apidoc.info, { title: '/hello', version: '1.0.0' });
    const get = created.apidoc.paths['/world']?.get;
    assert.ok(get, JSON.stringify(created.apidoc));
    assert.equal(get.operationId, 'getWorld');
    assert.deepEqual(get['x-openwhisk'], {
      namespace: 'guest',
      package: '',
      action: 'hello',
      url: `${server.url}/api/v1/web/guest/default/hello.json`,
    });

    const response = await fetch(`${created.gwApiUrl}/world?name=OpenWhisk`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await response.json(), { payload: 'Hello world OpenWhisk' });
    assert.match(response.headers.get('x-openwhisk-activation-id') ?? '', /^[0-9a-f]{32}$/);
    // The trailing slash changes nothing; a JSON body is merged into the parameters as for web actions.
    const slash = await fetch(`${created.gwApiUrl}/world/`);
    assert.deepEqual(await slash.json(), { payload: 'Hello world Serverless API' });
  });

  it('passes path parameters (and, for an http route, __ow_path) and answers what the action says', async () => {
    const created = (await routes.create({
      basepath: '/club',
      relpath: '/shelves/{shelf}/books/{isbn}',
      operation: 'get',
      action: 'book',
      responsetype: 'http',
      name: 'Book Club',
    })) as ApiValue;
    const get = created.apidoc.paths['/shelves/{shelf}/books/{isbn}']?.get;
    assert.ok(get);
    assert.deepEqual(
      get.parameters?.map((p) => [p.name, p.in, p.required, p.type]),
      [
        ['shelf', 'path', true, 'string'],
        ['isbn', 'path', true, 'string'],
      ],
    );
    assert.equal(get['x-openwhisk'].url, `${server.url}/api/v1/web/guest/default/book.http`);
    assert.equal(created.apidoc.info.title, 'Book Club');

    const response = await fetch(`${server.url}/api/${uuid}/club/shelves/top/books/978-0596517748?q=x`);
    assert.equal(response.status, 201);
    assert.equal(response.headers.get('x-book'), '978-0596517748');
    assert.deepEqual(await response.json(), {
      isbn: '978-0596517748',
      shelf: 'top',
      path: '/shelves/top/books/978-0596517748',
      method: 'get',
      q: 'x',
    });
    // Another verb on the same path: OpenWhisk's gateway answers 404, and so does this one.
    const post = await fetch(`${server.url}/api/${uuid}/club/shelves/top/books/1`, { method: 'POST' });
    assert.equal(post.status, 404);
    assert.match(((await post.json()) as { error: string }).error, /Verb not supported/);

    // A second operation on the path, with a JSON body; the API keeps its first name.
    const withPost = (await routes.create({
      basepath: '/club',
      relpath: '/shelves/{shelf}/books/{isbn}',
      operation: 'POST',
      action: 'book',
      responsetype: 'http',
      name: 'Another name',
    })) as ApiValue;
    assert.equal(withPost.apidoc.info.title, 'Book Club');
    assert.deepEqual(Object.keys(withPost.apidoc.paths['/shelves/{shelf}/books/{isbn}'] ?? {}).sort(), ['get', 'post']);
    const posted = await fetch(`${server.url}/api/${uuid}/club/shelves/low/books/42`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ title: 'JavaScript: The Good Parts', isbn: 'from the body' }),
    });
    assert.equal(posted.status, 201);
    assert.deepEqual(await posted.json(), {
      // The path parameter wins over the body's field of the same name.
      isbn: '42',
      shelf: 'low',
      path: '/shelves/low/books/42',
      method: 'post',
      title: 'JavaScript: The Good Parts',
    });
  });

  it('gives a json route the parameters without __ow_path, as OpenWhisk does', async () => {
    await routes.create({ basepath: '/p', relpath: '/items/{id}', operation: 'PUT', action: 'params' });
    const response = await fetch(`${server.url}/api/${uuid}/p/items/7?a=1`, {
      method: 'PUT',
      body: 'raw',
      headers: { 'content-type': 'text/plain' },
    });
    assert.equal(response.status, 200);
    const params = (await response.json()) as Record<string, unknown>;
    assert.equal(params.id, '7');
    assert.equal(params.a, '1');
    assert.equal(params.__ow_body, 'raw');
    assert.equal(params.__ow_method, 'put');
    assert.equal(params.__ow_path, '');
    assert.equal(params.__ow_query, 'a=1');
    assert.equal((params.__ow_headers as Record<string, string>)['content-type'], 'text/plain');
  });

  it('lists and gets APIs by base path or name, narrowed to a path and verb', async () => {
    const listed = (await routes.list()) as ApiList;
    const basePaths = listed.apis.map((a) => a.value.apidoc.basePath);
    for (const basePath of ['/hello', '/club', '/p']) assert.ok(basePaths.includes(basePath), basePaths.join(' '));
    const club = listed.apis.find((a) => a.value.apidoc.basePath === '/club');
    assert.equal(club?.id, 'API:guest:/club');
    assert.equal(club?.value.gwApiUrl, `${server.url}/api/${uuid}/club`);

    const byPath = (await routes.get({ basepath: '/hello' })) as ApiList;
    assert.equal(byPath.apis.length, 1);
    assert.deepEqual(Object.keys(byPath.apis[0]?.value.apidoc.paths ?? {}), ['/world']);
    const byName = (await routes.get({ name: 'Book Club' })) as ApiList;
    assert.deepEqual(
      byName.apis.map((a) => a.value.apidoc.basePath),
      ['/club'],
    );
    const narrowed = (await routes.list({
      basepath: '/club',
      relpath: '/shelves/{shelf}/books/{isbn}',
      operation: 'post',
    })) as ApiList;
    assert.deepEqual(Object.keys(narrowed.apis[0]?.value.apidoc.paths['/shelves/{shelf}/books/{isbn}'] ?? {}), ['post']);
    assert.deepEqual(((await routes.get({ basepath: '/nothing' })) as ApiList).apis, []);
  });

  it('replaces a route created again with the same path and verb', async () => {
    await routes.create({ basepath: '/dup', relpath: '/x', operation: 'GET', action: 'hello' });
    const again = (await routes.create({ basepath: '/dup', relpath: '/x', operation: 'GET', action: 'params' })) as ApiValue;
    assert.deepEqual(Object.keys(again.apidoc.paths), ['/x']);
    assert.equal(again.apidoc.paths['/x']?.get?.['x-openwhisk'].action, 'params');
    const response = await fetch(`${server.url}/api/${uuid}/dup/x?who=me`);
    assert.equal(((await response.json()) as Record<string, unknown>).who, 'me');
  });

  it('refuses bad input with a clear 4xx, and stores nothing', async () => {
    const before = JSON.stringify(await apis());
    const create = (body: unknown, query = '') =>
      server.request<{ error: string }>('POST', `/api/v1/web/whisk.system/apimgmt/createApi.http${query}`, body);
    const route = (fields: Record<string, unknown> = {}) => ({
      apidoc: {
        namespace: '_',
        gatewayBasePath: '/bad',
        gatewayPath: '/x',
        gatewayMethod: 'get',
        action: {
          name: 'hello',
          namespace: '_',
          backendMethod: 'GET',
          backendUrl: 'http://h/api/v1/web/_/default/hello.http',
          authkey: 'k',
        },
        ...fields,
      },
    });
    const withAction = (action: Record<string, unknown>) => ({
      apidoc: { ...route().apidoc, action: { ...route().apidoc.action, ...action } },
    });
    const cases: [string, Promise<{ status: number; body: { error: string } }>, number, RegExp][] = [
      ['no body', create(undefined), 400, /apidoc/],
      ['no apidoc', create({}), 400, /apidoc is required/],
      ['apidoc not JSON', create({ apidoc: '{nope' }), 400, /cannot be parsed/],
      ['no namespace', create(route({ namespace: undefined })), 400, /namespace/],
      ['no base path', create(route({ gatewayBasePath: undefined })), 400, /gatewayBasePath/],
      ['no path', create(route({ gatewayPath: undefined })), 400, /gatewayPath/],
      ['no verb', create(route({ gatewayMethod: undefined })), 400, /gatewayMethod/],
      ['no action', create(route({ action: undefined })), 400, /action/],
      ['no action name', create(withAction({ name: undefined })), 400, /name/],
      ['bad verb', create(route({ gatewayMethod: 'FETCH' })), 400, /operation "FETCH" is not one of GET, POST/],
      ['base path without /', create(route({ gatewayBasePath: 'bad' })), 400, /must start with '\/'/],
      ['path without /', create(route({ gatewayPath: 'x' })), 400, /must start with '\/'/],
      ['path with a space', create(route({ gatewayPath: '/a b' })), 400, /not a valid URL path/],
      ['broken parameter', create(route({ gatewayPath: '/a/{id' })), 400, /malformed path parameter/],
      ['parameter twice', create(route({ gatewayPath: '/{id}/{id}' })), 400, /twice/],
      ['parameter in the base path', create(route({ gatewayBasePath: '/{id}' })), 400, /base path/],
      ['bad response type', create(route(), '?responsetype=xml'), 400, /response type "xml"/],
      ['missing action', create(withAction({ name: 'nothing' })), 400, /"nothing" does not exist/],
      ['non-web action', create(withAction({ name: 'private' })), 400, /"private" is not a web action/],
      ['another namespace', create(route({ namespace: 'other' })), 403, /./],
      ['action of another namespace', create(withAction({ namespace: 'other' })), 400, /namespace "other"/],
    ];
    for (const [what, call, status, message] of cases) {
      const response = await call;
      assert.equal(response.status, status, `${what}: ${JSON.stringify(response.body)}`);
      assert.match(response.body.error, message, what);
    }
    // The client says the same for a non-web action.
    const refused = await refusal(routes.create({ basepath: '/bad', relpath: '/x', operation: 'GET', action: 'private' }));
    assert.equal(refused.statusCode, 400);
    assert.match(refused.message, /not a web action/);
    // Without the namespace's key nothing is managed.
    const anonymous = await server.request('GET', '/api/v1/web/whisk.system/apimgmt/getApi.http', undefined, { auth: '' });
    assert.equal(anonymous.status, 401);
    const wrongMethod = await server.request('GET', '/api/v1/web/whisk.system/apimgmt/createApi.http');
    assert.equal(wrongMethod.status, 405);
    assert.equal((await server.request('GET', '/api/v1/web/whisk.system/apimgmt/nothing')).status, 404);
    assert.equal(JSON.stringify(await apis()), before);
    const bad = await fetch(`${server.url}/api/${uuid}/bad/x`);
    assert.equal(bad.status, 404);
  });

  it('creates a whole API from a swagger document', async () => {
    const swagger = {
      swagger: '2.0',
      info: { title: 'From swagger', version: '1.0.0' },
      basePath: '/sw',
      paths: {
        '/greet': {
          get: {
            operationId: 'getGreet',
            'x-openwhisk': { namespace: '_', package: '', action: 'hello', url: 'http://h/api/v1/web/_/default/hello.json' },
            responses: { default: { description: 'Default response' } },
          },
        },
        '/items/{id}': {
          delete: {
            operationId: 'deleteItemsId',
            'x-openwhisk': { namespace: '_', package: '', action: 'book', url: 'http://h/api/v1/web/_/default/book.http' },
            responses: { default: { description: 'Default response' } },
          },
        },
      },
    };
    const created = (await routes.create({ swagger: JSON.stringify(swagger) })) as ApiValue;
    assert.equal(created.apidoc.info.title, 'From swagger');
    assert.deepEqual(Object.keys(created.apidoc.paths).sort(), ['/greet', '/items/{id}']);
    const greet = await fetch(`${server.url}/api/${uuid}/sw/greet?name=swagger`);
    assert.deepEqual(await greet.json(), { payload: 'Hello world swagger' });
    const removed = await fetch(`${server.url}/api/${uuid}/sw/items/9`, { method: 'DELETE' });
    assert.equal(removed.status, 201);
    assert.equal(((await removed.json()) as { isbn?: string; path: string }).path, '/items/9');
  });

  it('deletes an operation, a path or an API; a deleted route is a 404', async () => {
    await routes.create({ basepath: '/gone', relpath: '/a', operation: 'GET', action: 'hello' });
    await routes.create({ basepath: '/gone', relpath: '/a', operation: 'POST', action: 'hello' });
    await routes.create({ basepath: '/gone', relpath: '/b', operation: 'GET', action: 'hello' });
    assert.deepEqual(await routes.delete({ basepath: '/gone', relpath: '/a', operation: 'post' }), {});
    assert.equal((await fetch(`${server.url}/api/${uuid}/gone/a`, { method: 'POST' })).status, 404);
    assert.equal((await fetch(`${server.url}/api/${uuid}/gone/a`)).status, 200);
    await routes.delete({ basepath: '/gone', relpath: '/a' });
    assert.equal((await fetch(`${server.url}/api/${uuid}/gone/a`)).status, 404);
    assert.equal((await fetch(`${server.url}/api/${uuid}/gone/b`)).status, 200);
    await routes.delete({ basepath: '/gone' });
    const gone = await fetch(`${server.url}/api/${uuid}/gone/b`);
    assert.equal(gone.status, 404);
    assert.match(((await gone.json()) as { error: string }).error, /Not found/);
    const missing = await refusal(routes.delete({ basepath: '/gone' }));
    assert.equal(missing.statusCode, 404);
    assert.match(missing.message, /API '\/gone' does not exist/);
    // By name, as wsk allows.
    await routes.create({ basepath: '/named', relpath: '/n', operation: 'GET', action: 'hello', name: 'Named API' });
    await routes.delete({ name: 'Named API' });
    assert.deepEqual(((await routes.get({ basepath: '/named' })) as ApiList).apis, []);
  });

  it('answers 404 for an unknown namespace id or path, and leaves /api/v1 as it was', async () => {
    assert.equal((await fetch(`${server.url}/api/not-a-namespace/hello/world`)).status, 404);
    assert.equal((await fetch(`${server.url}/api/${uuid}/hello/nothing`)).status, 404);
    assert.equal((await fetch(`${server.url}/api/${uuid}`)).status, 404);
    const v1 = await server.request<{ error: string; code: string }>('GET', '/api/v1/nothing/here');
    assert.equal(v1.status, 404);
    assert.equal(v1.body.error, 'The requested resource does not exist.');
    assert.equal((await server.request('GET', '/api/v1/namespaces/_/actions')).status, 200);
  });

  it('answers 404 once the action behind a route is no web action any more', async () => {
    await server.deploy('fleeting', HELLO, WEB);
    await routes.create({ basepath: '/fleeting', relpath: '/f', operation: 'GET', action: 'fleeting' });
    assert.equal((await fetch(`${server.url}/api/${uuid}/fleeting/f`)).status, 200);
    await server.deploy('fleeting', HELLO, { annotations: [{ key: 'web-export', value: false }] });
    assert.equal((await fetch(`${server.url}/api/${uuid}/fleeting/f`)).status, 404);
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/actions/fleeting')).status, 200);
    assert.equal((await fetch(`${server.url}/api/${uuid}/fleeting/f`)).status, 404);
  });

  it('isola api: create, get, list and delete as wsk api does', async () => {
    const created = await runCliAgainst(server, [
      'api',
      'create',
      '/cli',
      '/hi',
      'get',
      'hello',
      '--response-type',
      'json',
      '-n',
      'CLI API',
    ]);
    assert.equal(created.code, 0, created.stderr);
    const url = `${server.url}/api/${uuid}/cli/hi`;
    assert.equal(created.stdout, `ok: created API /cli/hi GET for action /_/hello\n${url}\n`);
    assert.deepEqual(await (await fetch(`${url}?name=cli`)).json(), { payload: 'Hello world cli' });

    const list = await runCliAgainst(server, ['api', 'list', '/cli']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /Action\s+.*Verb\s+.*API Name\s+.*URL/);
    assert.match(
      list.stdout,
      new RegExp(`/guest/hello\\s+.*get\\s+.*CLI API\\s+.*${url.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`),
    );

    const get = await runCliAgainst(server, ['api', 'get', 'CLI API']);
    assert.equal(get.code, 0, get.stderr);
    const swagger = JSON.parse(get.stdout) as ApiValue['apidoc'];
    assert.equal(swagger.basePath, '/cli');
    assert.equal(swagger.paths['/hi']?.get?.['x-openwhisk'].action, 'hello');

    const dir = mkdtempSync(join(tmpdir(), 'isola-api-'));
    try {
      const file = join(dir, 'api.json');
      writeFileSync(file, JSON.stringify({ ...swagger, basePath: '/cli2', info: { title: 'From file', version: '1.0.0' } }));
      const fromFile = await runCliAgainst(server, ['api', 'create', '--config-file', file]);
      assert.equal(fromFile.code, 0, fromFile.stderr);
      assert.match(fromFile.stdout, new RegExp(`/api/${uuid}/cli2/hi`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }

    const refused = await runCliAgainst(server, ['api', 'create', '/cli', '/x', 'get', 'private']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /not a web action/);
    const badType = await runCliAgainst(server, ['api', 'create', '/cli', '/x', 'get', 'hello', '--response-type', 'xml']);
    assert.notEqual(badType.code, 0);

    const deleted = await runCliAgainst(server, ['api', 'delete', '/cli']);
    assert.equal(deleted.code, 0, deleted.stderr);
    assert.equal(deleted.stdout, 'ok: deleted API /cli\n');
    assert.equal((await fetch(url)).status, 404);
    const again = await runCliAgainst(server, ['api', 'delete', '/cli']);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /does not exist/);
    assert.equal((await runCliAgainst(server, ['api', 'delete', '/cli2'])).code, 0);
  });
});
