import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Agent, request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import fc from 'fast-check';
import type { ActivationRecord } from '../src/core/types.js';
import { TestServer } from './helpers/server.js';

/**
 * Thousands of generated requests against every route of every door, authenticated and not:
 * bodies of wrong types and shapes, deep and malformed JSON, invalid UTF-8, bad base64, huge and
 * negative numbers, names with `..`, `%2e`, NUL and 10,000 characters, wrong content types and
 * methods, and web action results of every shape. No answer may be a 5xx unless it names an
 * activation that is the function's doing (its failure, or the status a web action chose), none
 * may hang, and afterwards the server is healthy, the functions deployed before the storm still
 * answer, and whatever the storm managed to deploy can be invoked.
 *
 * The seed is fixed (ISOLA_FUZZ_SEED overrides it); on failure fast-check prints it with the
 * path of the smallest failing request, which replays it.
 */

const SEED = Number(process.env.ISOLA_FUZZ_SEED ?? 20_261_203);
// About a minute in all on a slow shared host: the storm itself, then the checks.
const STORM_MS = Number(process.env.ISOLA_FUZZ_MS ?? 45_000);
const REQUEST_TIMEOUT_MS = 20_000;

const ECHO = 'function main(p) { return { ok: true, keys: Object.keys(p).length }; }';
// A web action whose result is whatever shape the request asks for.
const SHAPER = `function main(p) {
  if (p.deep !== undefined) { let o = {}; for (let i = 0; i < Math.min(Number(p.deep) || 0, 100000); i++) o = { o }; return { body: o }; }
  if (typeof p.r === 'string') { try { return JSON.parse(p.r); } catch { return { body: p.r }; } }
  if (p.r !== undefined) return p.r;
  return { statusCode: 201, headers: { 'x-who': String(p.who) }, body: '<p>' + p.__ow_method + '</p>' };
}`;
const WASM_BASE64 = 'AGFzbQEAAAA=';

interface FuzzRequest {
  method: string;
  /** Sent as is: already percent-encoded where it needs to be, raw bytes 0x80-0xff allowed. */
  path: string;
  auth: 'none' | 'guest' | 'fuzz' | 'wrong' | 'garbage' | 'sigv4-garbage' | 'sigv4';
  headers: Record<string, string>;
  body?: string | Uint8Array;
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
}

/** Percent-encodes every byte that is not unreserved, so any string can be a path segment. */
function encodeSegment(text: string): string {
  return [...Buffer.from(text, 'utf8')]
    .map((byte) =>
      /[A-Za-z0-9_.~-]/.test(String.fromCharCode(byte)) ? String.fromCharCode(byte) : `%${byte.toString(16).padStart(2, '0')}`,
    )
    .join('');
}

const nameArb = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('echo', 'web', 'survivor', 'page', 'tick', 'link') },
  {
    weight: 4,
    arbitrary: fc.constantFrom(
      '..',
      '.',
      '%2e%2e',
      '%2E',
      '%2e',
      '.%2e',
      'a%00b',
      '%00',
      '%ff',
      '%c3%28',
      '%ed%a0%80',
      '%zz',
      '%',
      'a%2fb',
      'a%20',
      '__proto__',
      'constructor',
      'toString',
      'hasOwnProperty',
      '-x',
      'x'.repeat(257),
      'x'.repeat(10_000),
      'é',
      '\u00ff\u00fe',
      'arn:aws:lambda:us-east-1:1:function:echo',
      'echo:0.0.1',
      'echo.json',
      'web.http',
    ),
  },
  { weight: 3, arbitrary: fc.stringMatching(/^[A-Za-z0-9_][A-Za-z0-9_@.-]{0,12}$/) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 24 }).map(encodeSegment) },
);
const namespaceArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('_', 'fuzz') },
  { weight: 1, arbitrary: fc.constantFrom('guest', 'other', '%00', '..', '__proto__', 'x'.repeat(300), '%ff') },
);
const activationIdArb = fc.oneof(fc.stringMatching(/^[0-9a-f]{32}$/), nameArb);

const numberish = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -1, 1e308, -1e308, 2 ** 53 + 1, 8192, 8193, 16, 15, 1e9, 0.5),
  fc.string({ maxLength: 6 }),
  fc.constant(null),
  fc.boolean(),
);
const policyArb = fc.constantFrom(
  'hybrid:0ms',
  'hybrid:0',
  'fixed:0',
  'fixed:-1s',
  'fixed:0.1ms',
  'hybrid:1e9h',
  'fixed:99999h',
  'hybrid:1000h',
  'hybrid',
  'hybrid:',
  'fixed:',
  'fixed:10m',
  'hybrid:50ms',
  'lru',
  '',
  'x'.repeat(500),
);
const annotationArb = fc.record({
  key: fc.constantFrom(
    'keepAlive',
    'isolation',
    'web-export',
    'require-whisk-auth',
    'minInstances',
    'maxInstances',
    'maxQueued',
    'retries',
    'cron',
    'constructor',
    '__proto__',
  ),
  value: fc.oneof(
    policyArb,
    fc.constantFrom(
      'isolate',
      'wasm',
      'process',
      'container',
      'docker',
      'constructor',
      true,
      false,
      'true',
      '',
      0,
      1,
      2,
      101,
      -1,
      1.5,
    ),
    fc.constantFrom('* * * * *', '*/99 * * * *', 'not cron'),
    fc.jsonValue({ maxDepth: 2 }),
  ),
});
const actionBodyArb = fc.record(
  {
    exec: fc.oneof(
      fc.record(
        {
          kind: fc.oneof(
            fc.constantFrom(
              'nodejs:20',
              'nodejs',
              'nodejs:default',
              'wasm',
              'constructor',
              '__proto__',
              'toString',
              'hasOwnProperty',
              'python:3',
            ),
            fc.string({ maxLength: 70 }),
          ),
          code: fc.oneof(
            fc.constantFrom(ECHO, 'x', '', '!!!notbase64', WASM_BASE64, 'function main() {'),
            fc.string({ maxLength: 40 }),
          ),
          binary: fc.oneof(fc.boolean(), numberish),
          main: fc.oneof(
            fc.constantFrom('main', 'constructor', '__proto__', '1abc', 'a b', 'x'.repeat(200)),
            fc.string({ maxLength: 10 }),
          ),
          image: fc.string({ maxLength: 10 }),
        },
        { requiredKeys: ['kind'] },
      ),
      fc.jsonValue({ maxDepth: 2 }),
    ),
    limits: fc.oneof(
      fc.record({ memory: numberish, timeout: numberish, concurrency: numberish, logs: numberish }, { requiredKeys: [] }),
      fc.jsonValue({ maxDepth: 1 }),
    ),
    annotations: fc.oneof(fc.array(annotationArb, { maxLength: 4 }), fc.jsonValue({ maxDepth: 2 })),
    parameters: fc.oneof(
      fc.array(fc.record({ key: fc.string({ maxLength: 8 }), value: fc.jsonValue({ maxDepth: 3 }) }), { maxLength: 3 }),
      numberish,
    ),
    delAnnotations: fc.array(fc.string({ maxLength: 8 }), { maxLength: 2 }),
    name: fc.string({ maxLength: 8 }),
    colour: fc.string({ maxLength: 4 }),
  },
  { requiredKeys: [] },
);
// Valid but for what the storm varies: limits and annotations, so that deploys get far.
const nearlyValidActionArb = fc.record(
  {
    exec: fc.constantFrom({ kind: 'nodejs:20', code: ECHO }, { kind: 'wasm', code: WASM_BASE64, binary: true }),
    limits: fc.record(
      {
        memory: fc.constantFrom(16, 64, 128, 256, 1024, 4096, 8192, 8193, -1),
        timeout: fc.constantFrom(99, 100, 1000, 300_000, 300_001),
        concurrency: fc.constantFrom(0, 1, 5, 500, 501),
        logs: fc.constantFrom(0, 1, 10_240, 10_241),
      },
      { requiredKeys: [] },
    ),
    annotations: fc.array(annotationArb, { maxLength: 3 }),
  },
  { requiredKeys: ['exec'] },
);
const ruleBodyArb = fc.record(
  {
    trigger: fc.oneof(nameArb, fc.constantFrom('/guest/tick', '/other/tick', 'a/b/c', '')),
    action: nameArb,
    status: fc.string({ maxLength: 9 }),
  },
  { requiredKeys: [] },
);
const headerNameArb = fc.oneof(
  fc.constantFrom(
    'content-type',
    'Content-Type',
    'content-length',
    'transfer-encoding',
    'connection',
    'set-cookie',
    'x-ok',
    'bad name',
    '',
    'é',
    'x\u0000',
    '__proto__',
    'constructor',
  ),
  fc.string({ unit: 'binary', maxLength: 12 }),
);
const headerValueArb = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom('a\r\nb', 'é€', '\u0000', 'text/plain', 'image/png', 'application/json', '100', 'chunked', 'close'),
  fc.jsonValue({ maxDepth: 1 }),
  fc.array(fc.string({ maxLength: 5 }), { maxLength: 3 }),
);
/** The result a web action is asked to return. */
const webResultArb = fc.oneof(
  fc.jsonValue({ maxDepth: 3 }),
  fc.record(
    {
      statusCode: fc.oneof(
        fc.integer({ min: -5, max: 1000 }),
        fc.constantFrom(100, 101, 103, 199, 200, 204, 304, 599, 600, '200', '1e2', 'abc', null, 1.5),
      ),
      headers: fc.oneof(fc.dictionary(headerNameArb, headerValueArb, { maxKeys: 4 }), fc.jsonValue({ maxDepth: 1 })),
      body: fc.oneof(
        fc.string({ unit: 'binary', maxLength: 30 }),
        fc.jsonValue({ maxDepth: 3 }),
        fc.constantFrom('aGVsbG8=', '!!!', ''),
      ),
    },
    { requiredKeys: [] },
  ),
  fc.record(
    { html: fc.jsonValue({ maxDepth: 1 }), text: fc.jsonValue({ maxDepth: 1 }), svg: fc.jsonValue({ maxDepth: 1 }) },
    { requiredKeys: [] },
  ),
);

const deepJsonArb = fc
  .tuple(fc.constantFrom(100, 512, 513, 600, 5_000, 100_000), fc.constantFrom('[', '{"a":'))
  .map(([depth, open]) => `${open.repeat(depth)}1${(open === '[' ? ']' : '}').repeat(depth)}`);
const bytesArb = fc.oneof(
  fc.uint8Array({ maxLength: 64 }),
  fc.constantFrom(
    Uint8Array.from([0xff, 0xfe, 0xfd]),
    Uint8Array.from([0xc3, 0x28]),
    Uint8Array.from(Buffer.concat([Buffer.from('{"a":"'), Buffer.from([0xff, 0xc3]), Buffer.from('"}')])),
  ),
);
const bodyArb = (structured: fc.Arbitrary<unknown>) =>
  fc.oneof(
    { weight: 5, arbitrary: structured.map((value) => JSON.stringify(value) ?? '') },
    { weight: 3, arbitrary: fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value) ?? '') },
    { weight: 1, arbitrary: deepJsonArb },
    { weight: 1, arbitrary: bytesArb },
    { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
    {
      weight: 1,
      arbitrary: fc.constantFrom(
        '{"exec": {',
        '{"__proto__": {"x": 1}}',
        '{"a":1e999}',
        'null',
        '""',
        '[]',
        '{"a":-0}',
        'a=1&__proto__=2',
      ),
    },
  );
const contentTypeArb = fc.constantFrom(
  undefined,
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=utf-16',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/octet-stream',
  'image/png',
  'application/jsonx',
  'application/vnd.api+json',
  '*/*',
  'text/html; charset=latin1',
);
const queryArb = fc
  .array(
    fc.tuple(
      fc.constantFrom(
        'blocking',
        'result',
        'timeout',
        'overwrite',
        'limit',
        'skip',
        'since',
        'upto',
        'docs',
        'name',
        'code',
        'version',
        'Qualifier',
        'r',
        'deep',
        'who',
        '__proto__',
        'constructor',
      ),
      fc.oneof(
        fc.constantFrom(
          'true',
          'false',
          '',
          '-1',
          '0',
          '1',
          '1e400',
          '%zz',
          '%',
          'NaN',
          '99999999999',
          '0.0.1',
          '$LATEST',
          '%00',
          '%ff',
          '1000',
          '60001',
        ),
        fc.string({ unit: 'binary', maxLength: 12 }).map(encodeSegment),
      ),
    ),
    { maxLength: 4 },
  )
  .map((pairs) => (pairs.length === 0 ? '' : `?${pairs.map(([k, v]) => `${k}=${v}`).join('&')}`));
const methodArb = fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'HEAD', 'OPTIONS');

interface Route {
  methods: string[];
  path: fc.Arbitrary<string>;
  body: fc.Arbitrary<string | Uint8Array | undefined>;
}

const ns = namespaceArb;
const routes: Route[] = [
  ...['/', '/api/v1', '/healthz', '/metrics', '/api/v1/namespaces'].map((path) => ({
    methods: ['GET'],
    path: fc.constant(path),
    body: fc.constant(undefined),
  })),
  {
    methods: ['GET'],
    path: fc.tuple(ns, queryArb).map(([n, q]) => `/api/v1/namespaces/${n}/actions${q}`),
    body: fc.constant(undefined),
  },
  {
    methods: ['PUT', 'GET', 'DELETE'],
    path: fc.tuple(ns, nameArb, queryArb).map(([n, name, q]) => `/api/v1/namespaces/${n}/actions/${name}${q}`),
    body: bodyArb(fc.oneof(actionBodyArb, nearlyValidActionArb)),
  },
  {
    // Deploys that get far: only the limits and annotations are wrong, if anything.
    methods: ['PUT'],
    path: fc.stringMatching(/^[a-z][a-z0-9]{0,6}$/).map((name) => `/api/v1/namespaces/_/actions/${name}?overwrite=true`),
    body: nearlyValidActionArb.map((body) => JSON.stringify(body)),
  },
  {
    methods: ['POST'],
    path: fc.tuple(ns, nameArb, queryArb).map(([n, name, q]) => `/api/v1/namespaces/${n}/actions/${name}${q}`),
    body: bodyArb(fc.dictionary(fc.string({ maxLength: 6 }), fc.jsonValue({ maxDepth: 3 }))),
  },
  {
    methods: ['GET'],
    path: fc.tuple(ns, nameArb).map(([n, name]) => `/api/v1/namespaces/${n}/actions/${name}/versions`),
    body: fc.constant(undefined),
  },
  {
    methods: ['GET'],
    path: fc.tuple(ns, queryArb).map(([n, q]) => `/api/v1/namespaces/${n}/activations${q}`),
    body: fc.constant(undefined),
  },
  {
    methods: ['GET'],
    path: fc
      .tuple(ns, activationIdArb, fc.constantFrom('', '/logs', '/result', '/x'))
      .map(([n, id, tail]) => `/api/v1/namespaces/${n}/activations/${id}${tail}`),
    body: fc.constant(undefined),
  },
  ...['triggers', 'rules'].map((kind) => ({
    methods: ['GET'],
    path: fc.tuple(ns, queryArb).map(([n, q]) => `/api/v1/namespaces/${n}/${kind}${q}`),
    body: fc.constant(undefined),
  })),
  {
    methods: ['PUT', 'GET', 'DELETE', 'POST'],
    path: fc.tuple(ns, nameArb, queryArb).map(([n, name, q]) => `/api/v1/namespaces/${n}/triggers/${name}${q}`),
    body: bodyArb(
      fc.record(
        { parameters: fc.jsonValue({ maxDepth: 2 }), annotations: fc.array(annotationArb, { maxLength: 2 }) },
        { requiredKeys: [] },
      ),
    ),
  },
  {
    methods: ['PUT', 'GET', 'DELETE', 'POST'],
    path: fc.tuple(ns, nameArb, queryArb).map(([n, name, q]) => `/api/v1/namespaces/${n}/rules/${name}${q}`),
    body: bodyArb(ruleBodyArb),
  },
  {
    methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'],
    path: fc
      .tuple(
        fc.constantFrom('guest', 'fuzz', 'other', '_', '%00', '..'),
        fc.constantFrom('default', 'default', 'pkg', '%2e%2e'),
        fc.oneof({ weight: 3, arbitrary: fc.constantFrom('web', 'page') }, { weight: 1, arbitrary: nameArb }),
        fc.constantFrom('', '', '.json', '.html', '.http', '.text', '.svg', '.xml'),
        fc.constantFrom('', '', '/a/b', '/..', '/%2e%2e/x', '/%00'),
        fc.oneof(
          { weight: 2, arbitrary: queryArb },
          { weight: 3, arbitrary: webResultArb.map((result) => `?r=${encodeSegment(JSON.stringify(result) ?? '')}`) },
          { weight: 1, arbitrary: fc.constantFrom(1, 512, 4_000, 9_000).map((depth) => `?deep=${depth}`) },
        ),
      )
      .map(([n, pkg, name, ext, rest, q]) => `/api/v1/web/${n}/${pkg}/${name}${ext}${rest}${q}`),
    body: bodyArb(fc.record({ r: webResultArb, who: fc.string({ maxLength: 5 }) }, { requiredKeys: [] })),
  },
  {
    methods: ['POST'],
    path: fc.tuple(nameArb, queryArb).map(([name, q]) => `/2015-03-31/functions/${name}/invocations${q}`),
    body: bodyArb(fc.jsonValue({ maxDepth: 3 })),
  },
  ...['/function', '/async-function'].map((base) => ({
    methods: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    path: fc
      .tuple(nameArb, fc.constantFrom('', '', '/x/y', '/..', '/%00'), queryArb)
      .map(([name, rest, q]) => `${base}/${name}${rest}${q}`),
    body: bodyArb(fc.jsonValue({ maxDepth: 3 })),
  })),
  { methods: ['GET', 'POST'], path: fc.webPath(), body: fc.constant(undefined) },
];

const extraHeadersArb = fc.record(
  {
    'x-amz-invocation-type': fc.constantFrom('RequestResponse', 'Event', 'DryRun', 'Nope', ''),
    'x-amz-log-type': fc.constantFrom('Tail', 'None', 'x'),
    'x-amz-date': fc.constantFrom('20260101T000000Z', 'yesterday', ''),
    'x-amz-content-sha256': fc.constantFrom('UNSIGNED-PAYLOAD', '0'.repeat(64), 'x'),
    'x-require-whisk-auth': fc.string({ maxLength: 10 }),
  },
  { requiredKeys: [] },
);

const requestArb: fc.Arbitrary<FuzzRequest> = fc
  .integer({ min: 0, max: routes.length - 1 })
  .chain((index) => {
    const route = routes[index] as Route;
    return fc.record({
      method: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...route.methods) }, { weight: 1, arbitrary: methodArb }),
      path: route.path,
      auth: fc.constantFrom<FuzzRequest['auth']>(
        'fuzz',
        'fuzz',
        'fuzz',
        'guest',
        'none',
        'wrong',
        'garbage',
        'sigv4-garbage',
        'sigv4',
      ),
      contentType: fc.oneof({ weight: 3, arbitrary: fc.constant('application/json') }, { weight: 2, arbitrary: contentTypeArb }),
      extra: extraHeadersArb,
      body: fc.option(route.body, { nil: undefined, freq: 4 }),
    });
  })
  .map(({ method, path, auth, contentType, extra, body }) => {
    // The guest namespace holds the functions that must survive: it is only read and invoked.
    const safeAuth = auth === 'guest' && (method === 'PUT' || method === 'DELETE') ? 'fuzz' : auth;
    const headers: Record<string, string> = { ...extra };
    if (contentType !== undefined) headers['content-type'] = contentType;
    return {
      method,
      path,
      auth: safeAuth,
      headers,
      ...(body !== undefined && method !== 'GET' && method !== 'HEAD' ? { body } : {}),
    };
  });

/** The requests the issue reported, always tried first. */
function knownCases(): FuzzRequest[] {
  const json = { 'content-type': 'application/json' };
  const put = (name: string, body: unknown): FuzzRequest => ({
    method: 'PUT',
    path: `/api/v1/namespaces/_/actions/${name}?overwrite=true`,
    auth: 'fuzz',
    headers: json,
    body: JSON.stringify(body),
  });
  const web = (result: unknown): FuzzRequest => ({
    method: 'GET',
    path: `/api/v1/web/fuzz/default/web?r=${encodeSegment(JSON.stringify(result))}`,
    auth: 'none',
    headers: {},
  });
  return [
    ...['constructor', '__proto__', 'toString', 'hasOwnProperty'].map((kind) => put('kind', { exec: { kind, code: ECHO } })),
    put('ka', { exec: { kind: 'nodejs:20', code: ECHO }, annotations: [{ key: 'keepAlive', value: 'hybrid:0ms' }] }),
    { method: 'POST', path: '/api/v1/namespaces/_/actions/ka?blocking=true', auth: 'fuzz', headers: {} },
    put('huge', { exec: { kind: 'nodejs:20', code: ECHO }, limits: { memory: 8192 } }),
    {
      method: 'POST',
      path: '/2015-03-31/functions/echo/invocations?Qualifier=%zz&x=%',
      auth: 'sigv4',
      headers: json,
      body: '{}',
    },
    { method: 'POST', path: '/2015-03-31/functions/echo/invocations', auth: 'sigv4-garbage', headers: json, body: '{}' },
    web({ statusCode: 100 }),
    web({ statusCode: 101, body: 'x' }),
    web({ headers: { 'bad name': 'x' }, body: 'x' }),
    web({ headers: { 'x-a': 'a\nb' }, body: 'x' }),
    web({ headers: { 'x-a': 'é€' }, body: 'x' }),
    web({ headers: { 'content-type': 'text/plain' }, body: { a: 1 } }),
    ...[5_000, 9_000].map(
      (depth): FuzzRequest => ({ method: 'GET', path: `/api/v1/web/fuzz/default/web?deep=${depth}`, auth: 'none', headers: {} }),
    ),
    { method: 'POST', path: '/api/v1/namespaces/_/actions/echo?blocking=true&timeout=abc', auth: 'fuzz', headers: {} },
    { method: 'POST', path: '/api/v1/namespaces/_/actions/echo?blocking=true&timeout=99999999', auth: 'fuzz', headers: {} },
    {
      method: 'POST',
      path: '/api/v1/namespaces/_/actions/echo?blocking=true',
      auth: 'fuzz',
      headers: json,
      body: `${'['.repeat(100_000)}${']'.repeat(100_000)}`,
    },
    {
      method: 'POST',
      path: '/api/v1/namespaces/_/actions/echo?blocking=true',
      auth: 'fuzz',
      headers: json,
      body: `{"a":${'['.repeat(5_000)}${']'.repeat(5_000)}}`,
    },
    { method: 'GET', path: `/api/v1/namespaces/_/actions/${'x'.repeat(10_000)}`, auth: 'fuzz', headers: {} },
    { method: 'GET', path: '/api/v1/namespaces/_/actions/a%00b', auth: 'fuzz', headers: {} },
    { method: 'GET', path: '/api/v1/namespaces/_/actions/%ff%fe', auth: 'fuzz', headers: {} },
    {
      // A body declared larger than the payload limit is refused (413) as soon as its length is
      // read. Only its start is sent: the server may close the connection after answering, and a
      // client still writing the rest would meet EPIPE instead of the answer.
      method: 'POST',
      path: '/api/v1/namespaces/_/actions/echo?blocking=true',
      auth: 'fuzz',
      headers: { ...json, 'content-length': '1100000' },
      body: 'x'.repeat(1000),
    },
  ];
}

describe('API fuzzing', () => {
  let server: TestServer;
  let fuzzAuth = '';
  let agent: Agent;
  let aws4: typeof import('aws4');

  before(async () => {
    aws4 = (await import('aws4')).default;
    server = await TestServer.start({
      env: {
        ISOLA_BLOCKING_WAIT: '5s',
        ISOLA_MEMORY_BUDGET_MB: '4096',
        ISOLA_REQUEST_TIMEOUT: '10s',
        ISOLA_HEADERS_TIMEOUT: '5s',
      },
    });
    const created = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'namespace', 'create', 'fuzz', '--data-dir', server.dataDir],
      { encoding: 'utf8' },
    );
    assert.equal(created.status, 0, created.stderr);
    fuzzAuth = created.stdout.trim();
    agent = new Agent({ keepAlive: true, maxSockets: 1 });
    // The survivors in guest, and the same names in fuzz for the storm to find.
    for (const auth of [server.auth, fuzzAuth]) {
      const deploy = async (name: string, code: string, annotations: unknown[] = []) => {
        const res = await server.request(
          'PUT',
          `/api/v1/namespaces/_/actions/${name}?overwrite=true`,
          { exec: { kind: 'nodejs:20', code }, annotations },
          { auth },
        );
        assert.equal(res.status, 200, JSON.stringify(res.body));
      };
      await deploy('echo', ECHO);
      await deploy('survivor', ECHO);
      await deploy('web', SHAPER, [{ key: 'web-export', value: true }]);
      await deploy('page', SHAPER, [{ key: 'web-export', value: true }]);
      assert.equal((await server.request('PUT', '/api/v1/namespaces/_/triggers/tick', {}, { auth })).status, 200);
      assert.equal(
        (await server.request('PUT', '/api/v1/namespaces/_/rules/link', { trigger: 'tick', action: 'echo' }, { auth })).status,
        200,
      );
    }
  });

  after(async () => {
    agent?.destroy();
    await server?.dispose();
  });

  function signV4(
    request: FuzzRequest,
    headers: Record<string, string>,
    host: string,
    accessKeyId: string,
    secretAccessKey: string,
  ) {
    const body = request.body === undefined ? '' : Buffer.from(request.body);
    try {
      const signed = aws4.sign(
        {
          host,
          path: request.path,
          method: request.method,
          service: 'lambda',
          region: 'us-east-1',
          headers: { ...headers },
          body,
        },
        { accessKeyId, secretAccessKey },
      );
      return signed.headers as Record<string, string>;
    } catch {
      return undefined;
    }
  }

  async function send(request: FuzzRequest): Promise<Answer> {
    const url = new URL(server.url);
    const headers: Record<string, string> = { ...request.headers };
    const basic = (auth: string) => `Basic ${Buffer.from(auth).toString('base64')}`;
    const [fuzzUuid, fuzzKey] = fuzzAuth.split(':') as [string, string];
    switch (request.auth) {
      case 'guest':
        headers.authorization = basic(server.auth);
        break;
      case 'fuzz':
        headers.authorization = basic(fuzzAuth);
        break;
      case 'wrong':
        headers.authorization = basic(`${fuzzUuid}:not-the-key`);
        break;
      case 'garbage':
        headers.authorization = 'Basic !!!not base64';
        break;
      case 'sigv4':
      case 'sigv4-garbage': {
        // Signed now, as a client would, over whatever path, query and body the case has (aws4
        // cannot sign a path with a malformed escape: such a request goes with a bogus signature).
        const signed = request.auth === 'sigv4' ? signV4(request, headers, url.host, fuzzUuid, fuzzKey) : undefined;
        if (signed) Object.assign(headers, signed);
        else {
          headers.authorization = `AWS4-HMAC-SHA256 Credential=${fuzzUuid}/20260101/us-east-1/lambda/aws4_request, SignedHeaders=constructor;host;__proto__;toString, Signature=${'0'.repeat(64)}`;
          headers['x-amz-date'] ??= '20260101T000000Z';
        }
        break;
      }
      default:
        break;
    }
    // Node's client sends a DELETE's or OPTIONS's body with no length unless told it.
    const payload = request.body === undefined ? undefined : Buffer.from(request.body);
    if (payload !== undefined) headers['content-length'] = String(payload.length);
    return new Promise<Answer>((resolve, reject) => {
      let answered = false;
      const req = httpRequest(
        {
          host: url.hostname,
          port: url.port,
          method: request.method,
          path: request.path,
          headers,
          agent,
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        },
        (res) => {
          answered = true;
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }),
          );
          res.on('error', reject);
        },
      );
      req.on('error', (error: NodeJS.ErrnoException) => {
        if (answered) return;
        if (error.name === 'AbortError' || error.name === 'TimeoutError') {
          reject(
            new Error(`${request.method} ${request.path.slice(0, 300)}: no answer within ${REQUEST_TIMEOUT_MS} ms (a hang)`),
          );
        } else reject(error);
      });
      req.end(payload);
    });
  }

  /**
   * A 5xx is allowed only from a function: a web action may choose any status, and a function's
   * failure is a 502. Either way the answer names the activation, whose record must not be the
   * platform's own failure.
   */
  async function assertNotServerError(request: FuzzRequest, answer: Answer): Promise<void> {
    if (answer.status < 500) return;
    const fail = (why: string) =>
      assert.fail(
        `${request.method} ${request.path.slice(0, 300)} answered ${answer.status} (${why}): ${answer.text.slice(0, 500)}`,
      );
    let activationId: unknown =
      answer.headers['x-openwhisk-activation-id'] ?? answer.headers['x-call-id'] ?? answer.headers['x-isola-activation-id'];
    try {
      activationId ??= (JSON.parse(answer.text) as { activationId?: unknown }).activationId;
    } catch {
      // not JSON
    }
    if (typeof activationId !== 'string') return fail('no activation named');
    for (const auth of [fuzzAuth, server.auth]) {
      const record = await server.request<ActivationRecord>(
        'GET',
        `/api/v1/namespaces/_/activations/${activationId}`,
        undefined,
        { auth },
      );
      if (record.status !== 200) continue;
      if (record.body.response.status === 'whisk internal error') return fail('the platform failed');
      return;
    }
    fail(`activation ${activationId} has no record`);
  }

  it('answers every generated request without a 5xx or a hang, and stays healthy', async () => {
    let sent = 0;
    const statuses = new Map<number, number>();
    const check = async (request: FuzzRequest) => {
      const answer = await send(request);
      sent++;
      statuses.set(answer.status, (statuses.get(answer.status) ?? 0) + 1);
      await assertNotServerError(request, answer);
    };
    // Every failure is reported, the known cases' and the storm's, before the test fails.
    const failures: string[] = [];
    for (const request of knownCases()) {
      await check(request).catch((error: Error) => failures.push(`known case: ${error.message}`));
    }
    process.stdout.write(`# fuzz seed ${SEED} (ISOLA_FUZZ_SEED replays another)\n`);
    await fc
      .assert(fc.asyncProperty(requestArb, check), {
        seed: SEED,
        numRuns: 1_000_000,
        plugins: [fc.interruptAfterTimeLimit(STORM_MS, { failOnInterrupt: false })],
      })
      .catch((error: Error) => {
        const cause = error.cause instanceof Error ? `\n${error.cause.message}` : '';
        failures.push(`storm: ${error.message}${cause}`);
      });
    const counts = Object.fromEntries([...statuses].sort(([a], [b]) => a - b));
    process.stdout.write(`# ${sent} requests; answers by status ${JSON.stringify(counts)}\n`);
    if (failures.length === 0) assert.ok(sent >= 1000, `only ${sent} requests were sent`);

    // Healthy, and the functions deployed before the storm still answer.
    assert.equal((await server.request('GET', '/healthz', undefined, { auth: null })).status, 200);
    const echo = await server.invoke('survivor', { a: 1 }, 'blocking=true&result=true');
    assert.deepEqual([echo.status, echo.body], [200, { ok: true, keys: 1 }]);
    const page = await fetch(`${server.url}/api/v1/web/guest/default/page?who=me`);
    assert.deepEqual([page.status, page.headers.get('x-who'), await page.text()], [201, 'me', '<p>get</p>']);
    const basic = `Basic ${Buffer.from(server.auth).toString('base64')}`;
    const lambda = await fetch(`${server.url}/2015-03-31/functions/echo/invocations`, {
      method: 'POST',
      headers: { authorization: basic },
      body: '{"b":2}',
    });
    assert.deepEqual([lambda.status, await lambda.json()], [200, { ok: true, keys: 1 }]);
    const faas = await fetch(`${server.url}/function/echo`, { method: 'POST', headers: { authorization: basic } });
    assert.equal(faas.status, 200);

    // Whatever the storm managed to store can be invoked without a 5xx: bad input stored nothing.
    const listed = await server.request<{ name: string }[]>('GET', '/api/v1/namespaces/_/actions?limit=200', undefined, {
      auth: fuzzAuth,
    });
    assert.equal(listed.status, 200);
    for (const { name } of listed.body) {
      const path = `/api/v1/namespaces/_/actions/${encodeSegment(name)}?blocking=true`;
      const request: FuzzRequest = { method: 'POST', path, auth: 'fuzz', headers: {} };
      await assertNotServerError(request, await send(request)).catch((error: Error) =>
        failures.push(`stored by the storm: ${error.message}`),
      );
    }
    assert.deepEqual(failures, []);
  });
});
