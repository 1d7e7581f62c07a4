// Lambda's control plane and error shapes, end to end against a real `isola serve`, with requests
// signed by aws4 (Signature V4) as the AWS SDK and CLI sign them.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import aws4 from 'aws4';
import { annotation, TestServer } from './helpers/server.js';
import { zipOf } from './helpers/zips.js';

interface Answer<T = Record<string, unknown>> {
  status: number;
  headers: Headers;
  body: T;
}

interface FunctionConfiguration {
  FunctionName: string;
  FunctionArn: string;
  Runtime: string;
  Handler: string;
  MemorySize: number;
  Timeout: number;
  Version: string;
  CodeSha256: string;
  Environment?: { Variables: Record<string, string> };
  IsolaIsolation: string;
}

interface LambdaErrorBody {
  __type: string;
  message: string;
  Message: string;
}

const zip64 = (entries: { name: string; data: string }[]) => zipOf(entries).toString('base64');

const NODE_ZIP = zip64([
  { name: 'app.js', data: 'exports.handler = async (event) => ({ hello: event.who, greeting: event.GREETING });' },
]);
const NODE_ZIP_V2 = zip64([{ name: 'app.js', data: 'exports.handler = async (event) => ({ v: 2, who: event.who });' }]);
const PYTHON_ZIP = zip64([
  {
    name: 'lambda_function.py',
    data: [
      'def lambda_handler(event, context):',
      '    return {"got": event.get("x"), "remaining": context.get_remaining_time_in_millis() >= 0}',
      '',
    ].join('\n'),
  },
]);

describe('the Lambda API', () => {
  let server: TestServer;
  let accessKeyId: string;
  let secretAccessKey: string;

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_BACKENDS: 'isolate,process', ISOLA_PREWARM: 'isolate:0,process:0' } });
    [accessKeyId, secretAccessKey] = server.auth.split(':') as [string, string];
  });
  after(async () => {
    await server.dispose();
  });

  /** A request signed as the AWS SDK signs it; `raw` sends a body that is not JSON. */
  async function lambda<T = Record<string, unknown>>(
    method: string,
    path: string,
    body?: unknown,
    options: { raw?: string; keyId?: string; secret?: string; headers?: Record<string, string> } = {},
  ): Promise<Answer<T>> {
    const url = new URL(server.url);
    const text = options.raw ?? (body === undefined ? undefined : JSON.stringify(body));
    const signed = aws4.sign(
      {
        host: url.host,
        path,
        method,
        service: 'lambda',
        region: 'eu-west-1',
        ...(text !== undefined ? { body: text } : {}),
        headers: { 'content-type': 'application/json', ...(options.headers ?? {}) },
      },
      { accessKeyId: options.keyId ?? accessKeyId, secretAccessKey: options.secret ?? secretAccessKey },
    );
    const response = await fetch(`${server.url}${signed.path}`, {
      method,
      headers: signed.headers as Record<string, string>,
      ...(text !== undefined ? { body: text } : {}),
    });
    const answer = await response.text();
    return { status: response.status, headers: response.headers, body: (answer ? JSON.parse(answer) : undefined) as T };
  }

  const invoke = (name: string, event: unknown, query = '') =>
    lambda('POST', `/2015-03-31/functions/${name}/invocations${query}`, event);

  /** An error as the AWS SDK reads it: the status, the X-Amzn-ErrorType header and the body's __type. */
  function assertLambdaError(answer: Answer<unknown>, status: number, type: string, message?: RegExp) {
    const body = answer.body as LambdaErrorBody;
    assert.equal(answer.status, status, JSON.stringify(body));
    assert.equal(answer.headers.get('x-amzn-errortype'), type);
    assert.equal(body.__type, type);
    assert.equal(body.Message, body.message);
    if (message) assert.match(body.message, message);
  }

  async function owAction(name: string) {
    return server.request<{ annotations: { key: string; value: unknown }[]; limits: Record<string, number> }>(
      'GET',
      `/api/v1/namespaces/_/actions/${name}`,
    );
  }

  it('names every error as Lambda does, and answers failed authentication 403', async () => {
    assertLambdaError(await lambda('GET', '/2015-03-31/functions/nothing'), 404, 'ResourceNotFoundException', /nothing/);
    assertLambdaError(await invoke('nothing', {}), 404, 'ResourceNotFoundException');
    assertLambdaError(
      await lambda('GET', '/2015-03-31/functions', undefined, { secret: 'wrong' }),
      403,
      'InvalidSignatureException',
    );
    assertLambdaError(
      await lambda('GET', '/2015-03-31/functions', undefined, { keyId: 'AKIAUNKNOWN' }),
      403,
      'UnrecognizedClientException',
    );
    const anonymous = await fetch(`${server.url}/2015-03-31/functions`);
    assert.equal(anonymous.status, 403);
    assert.equal(anonymous.headers.get('x-amzn-errortype'), 'MissingAuthenticationTokenException');
    assertLambdaError(
      await lambda('POST', '/2015-03-31/functions', undefined, { raw: '{"FunctionName":' }),
      400,
      'InvalidRequestContentException',
    );
    await server.deploy('plain', 'function main(p) { return p; }');
    assertLambdaError(
      await lambda('POST', '/2015-03-31/functions/plain/invocations', undefined, { raw: '{' }),
      400,
      'InvalidRequestContentException',
    );
    assertLambdaError(
      await lambda('POST', '/2015-03-31/functions/plain/invocations', {}, { headers: { 'x-amz-invocation-type': 'Never' } }),
      400,
      'InvalidParameterValueException',
    );
    assertLambdaError(await invoke('plain', {}, '?Qualifier=9'), 404, 'ResourceNotFoundException', /plain:9/);
    assertLambdaError(
      await lambda('POST', '/2015-03-31/functions/plain/policy', { StatementId: 's', Action: 'lambda:InvokeFunction' }),
      404,
      'UnknownOperationException',
      /policy/,
    );
    assertLambdaError(await invoke('plain', {}, '?Qualifier=nope'), 404, 'ResourceNotFoundException', /plain:nope/);
  });

  it('creates a Node.js function from a zip and Handler, runs it, and shows it through the OpenWhisk API', async () => {
    const created = await lambda<FunctionConfiguration>('POST', '/2015-03-31/functions', {
      FunctionName: 'greeter',
      Runtime: 'nodejs20.x',
      Role: 'arn:aws:iam::123456789012:role/any',
      Handler: 'app.handler',
      Code: { ZipFile: NODE_ZIP },
      MemorySize: 128,
      Timeout: 3,
      Environment: { Variables: { GREETING: 'hi', ISOLA_ISOLATION: 'process' } },
      Tags: { team: 'a' },
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.FunctionName, 'greeter');
    assert.equal(created.body.Runtime, 'nodejs20.x');
    assert.equal(created.body.Handler, 'app.handler');
    assert.equal(created.body.MemorySize, 128);
    assert.equal(created.body.Timeout, 3);
    assert.equal(created.body.Version, '$LATEST');
    assert.equal(created.body.FunctionArn, 'arn:aws:lambda:eu-west-1:guest:function:greeter');
    assert.deepEqual(created.body.Environment, { Variables: { GREETING: 'hi' } });
    assert.equal(created.body.IsolaIsolation, 'process');

    const ran = await invoke('greeter', { who: 'Ada' });
    assert.equal(ran.status, 200, JSON.stringify(ran.body));
    assert.deepEqual(ran.body, { hello: 'Ada', greeting: 'hi' });

    const action = await owAction('greeter');
    assert.equal(action.status, 200);
    assert.equal(annotation(action.body, 'isolation'), 'process');
    assert.equal(action.body.limits.memory, 128);
    assert.equal(action.body.limits.timeout, 3000);

    const got = await lambda<{ Configuration: FunctionConfiguration; Tags: Record<string, string> }>(
      'GET',
      '/2015-03-31/functions/greeter',
    );
    assert.equal(got.status, 200);
    assert.equal(got.body.Configuration.Handler, 'app.handler');
    assert.deepEqual(got.body.Tags, { team: 'a' });
    const byArn = await lambda<FunctionConfiguration>(
      'GET',
      `/2015-03-31/functions/${encodeURIComponent('arn:aws:lambda:eu-west-1:guest:function:greeter')}/configuration`,
    );
    assert.equal(byArn.status, 200, JSON.stringify(byArn.body));
    assert.equal(byArn.body.CodeSha256, created.body.CodeSha256);

    assertLambdaError(
      await lambda('POST', '/2015-03-31/functions', {
        FunctionName: 'greeter',
        Runtime: 'nodejs20.x',
        Handler: 'app.handler',
        Code: { ZipFile: NODE_ZIP },
      }),
      409,
      'ResourceConflictException',
    );
  });

  it('creates a Python function whose handler takes (event, context), the isolation chosen by a tag', async () => {
    const created = await lambda<FunctionConfiguration>('POST', '/2015-03-31/functions', {
      FunctionName: 'py',
      Runtime: 'python3.12',
      Handler: 'lambda_function.lambda_handler',
      Code: { ZipFile: PYTHON_ZIP },
      Tags: { ISOLA_ISOLATION: 'process' },
      Publish: true,
    });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    assert.equal(created.body.Version, '1');
    assert.equal(created.body.IsolaIsolation, 'process');
    const ran = await invoke('py', { x: 7 });
    assert.equal(ran.status, 200, JSON.stringify(ran.body));
    assert.deepEqual(ran.body, { got: 7, remaining: true });
  });

  it('refuses bad input with a 4xx by name and stores nothing', async () => {
    const base = { Runtime: 'nodejs20.x', Handler: 'app.handler', Code: { ZipFile: NODE_ZIP } };
    const cases: [string, Record<string, unknown>, RegExp][] = [
      ['bad-runtime', { ...base, Runtime: 'nodejs4.3' }, /runtime/],
      ['bad-zip', { ...base, Code: { ZipFile: Buffer.from('not a zip at all').toString('base64') } }, /unzip/],
      ['bad-base64', { ...base, Code: { ZipFile: '%%%' } }, /unzip/],
      ['no-module', { ...base, Handler: 'missing.handler' }, /missing\.js/],
      ['bad-handler', { ...base, Handler: 'app' }, /file\.function/],
      ['bad-memory', { ...base, MemorySize: 'big' }, /MemorySize/],
      ['bad-timeout', { ...base, Timeout: 901 }, /Timeout/],
      ['too-long', { ...base, Timeout: 600 }, /timeout/],
      ['bad-env', { ...base, Environment: { Variables: { A: 1 } } }, /Environment/],
      ['bad-isolation', { ...base, Tags: { ISOLA_ISOLATION: 'wasm' } }, /isolation/],
      ['from-s3', { ...base, Code: { S3Bucket: 'b', S3Key: 'k' } }, /ZipFile/],
      ['no-exec', { ...base, Runtime: 'provided.al2023', Handler: 'bootstrap.x' }, /exec/],
      ['bad name!', base, /name/],
    ];
    for (const [name, body, message] of cases) {
      const answer = await lambda('POST', '/2015-03-31/functions', { FunctionName: name, ...body });
      assertLambdaError(answer, 400, 'InvalidParameterValueException', message);
      if (name !== 'bad name!') assert.equal((await owAction(name)).status, 404, `${name} was stored`);
    }
    assertLambdaError(
      await lambda('POST', '/2015-03-31/functions', { Runtime: 'nodejs20.x' }),
      400,
      'InvalidParameterValueException',
    );
    assertLambdaError(
      await lambda('PUT', '/2015-03-31/functions/nothing/code', { ZipFile: NODE_ZIP }),
      404,
      'ResourceNotFoundException',
    );
    assertLambdaError(await lambda('DELETE', '/2015-03-31/functions/nothing'), 404, 'ResourceNotFoundException');
    assertLambdaError(await lambda('GET', '/2015-03-31/functions?MaxItems=0'), 400, 'InvalidParameterValueException');
  });

  it('updates code and configuration as new versions, publishes and lists them, and invokes one by Qualifier', async () => {
    const created = await lambda<FunctionConfiguration>('POST', '/2015-03-31/functions', {
      FunctionName: 'versioned',
      Runtime: 'nodejs20.x',
      Handler: 'app.handler',
      Code: { ZipFile: NODE_ZIP },
      Publish: true,
    });
    assert.equal(created.body.Version, '1');
    const code = await lambda<FunctionConfiguration>('PUT', '/2015-03-31/functions/versioned/code', {
      ZipFile: NODE_ZIP_V2,
      Publish: true,
    });
    assert.equal(code.status, 200, JSON.stringify(code.body));
    assert.equal(code.body.Version, '2');
    assert.notEqual(code.body.CodeSha256, created.body.CodeSha256);
    assertLambdaError(
      await lambda('PUT', '/2015-03-31/functions/versioned/code', { ZipFile: 'UEsDBAo=' }),
      400,
      'InvalidParameterValueException',
    );
    const configured = await lambda<FunctionConfiguration>('PUT', '/2015-03-31/functions/versioned/configuration', {
      MemorySize: 192,
      Timeout: 10,
      Environment: { Variables: { GREETING: 'yo' } },
    });
    assert.equal(configured.status, 200, JSON.stringify(configured.body));
    assert.equal(configured.body.MemorySize, 192);
    assert.equal(configured.body.Timeout, 10);
    assertLambdaError(
      await lambda('PUT', '/2015-03-31/functions/versioned/configuration', { MemorySize: 100_000 }),
      400,
      'InvalidParameterValueException',
    );
    assertLambdaError(
      await lambda('PUT', '/2015-03-31/functions/versioned/configuration', { Timeout: 5, RevisionId: 'stale' }),
      412,
      'PreconditionFailedException',
    );

    const published = await lambda<FunctionConfiguration>('POST', '/2015-03-31/functions/versioned/versions', {});
    assert.equal(published.status, 201);
    assert.equal(published.body.Version, '3');
    assert.equal(published.body.FunctionArn, 'arn:aws:lambda:eu-west-1:guest:function:versioned:3');

    const listed = await lambda<{ Versions: FunctionConfiguration[]; NextMarker?: string }>(
      'GET',
      '/2015-03-31/functions/versioned/versions',
    );
    assert.deepEqual(
      listed.body.Versions.map((v) => v.Version),
      ['$LATEST', '1', '2', '3'],
    );
    const paged = await lambda<{ Versions: FunctionConfiguration[]; NextMarker?: string }>(
      'GET',
      '/2015-03-31/functions/versioned/versions?MaxItems=3',
    );
    assert.equal(paged.body.Versions.length, 3);
    assert.equal(typeof paged.body.NextMarker, 'string');

    const first = await invoke('versioned', { who: 'Ada' }, '?Qualifier=1');
    assert.deepEqual(first.body, { hello: 'Ada' });
    const latest = await invoke('versioned', { who: 'Ada' });
    assert.deepEqual(latest.body, { v: 2, who: 'Ada' });
    const old = await lambda<FunctionConfiguration>('GET', '/2015-03-31/functions/versioned/configuration?Qualifier=1');
    assert.equal(old.body.Version, '1');
    assert.equal(old.body.MemorySize, 256);

    const deleted = await lambda('DELETE', '/2015-03-31/functions/versioned');
    assert.equal(deleted.status, 204);
    assertLambdaError(await lambda('GET', '/2015-03-31/functions/versioned'), 404, 'ResourceNotFoundException');
    assert.equal((await owAction('versioned')).status, 404);
  });

  it('lists every action of the namespace as a function, page by page', async () => {
    for (const name of ['ow-a', 'ow-b', 'ow-c']) await server.deploy(name, 'function main(p) { return p; }');
    const names: string[] = [];
    let marker: string | undefined;
    let pages = 0;
    do {
      const page = await lambda<{ Functions: FunctionConfiguration[]; NextMarker?: string }>(
        'GET',
        `/2015-03-31/functions/?MaxItems=2${marker ? `&Marker=${marker}` : ''}`,
      );
      assert.equal(page.status, 200, JSON.stringify(page.body));
      assert.ok(page.body.Functions.length <= 2);
      names.push(...page.body.Functions.map((f) => f.FunctionName));
      marker = page.body.NextMarker;
      pages++;
    } while (marker !== undefined && pages < 20);
    const everything = await server.request<{ name: string }[]>('GET', '/api/v1/namespaces/_/actions?limit=200');
    assert.deepEqual([...names].sort(), everything.body.map((a) => a.name).sort());
    assert.ok(names.includes('ow-a') && names.includes('greeter'));
    const ow = (await lambda<FunctionConfiguration>('GET', '/2015-03-31/functions/ow-a/configuration')).body;
    assert.equal(ow.Runtime, 'nodejs20.x');
    assert.equal(ow.IsolaIsolation, 'isolate');
  });
});
