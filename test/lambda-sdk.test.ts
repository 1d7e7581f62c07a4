// The real AWS SDK for JavaScript (v3) against a real `isola serve`: the control plane, Invoke and
// errors raised by name, exactly as a user's code calls them with `endpoint` set to Isola.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CreateAliasCommand,
  CreateFunctionCommand,
  DeleteAliasCommand,
  DeleteFunctionCommand,
  GetAliasCommand,
  GetFunctionCommand,
  GetFunctionConfigurationCommand,
  InvalidParameterValueException,
  InvokeCommand,
  LambdaClient,
  ListAliasesCommand,
  ListFunctionsCommand,
  ListTagsCommand,
  ListVersionsByFunctionCommand,
  PreconditionFailedException,
  PublishVersionCommand,
  ResourceConflictException,
  ResourceNotFoundException,
  TagResourceCommand,
  UntagResourceCommand,
  UpdateAliasCommand,
  UpdateFunctionCodeCommand,
  UpdateFunctionConfigurationCommand,
} from '@aws-sdk/client-lambda';
import yauzl from 'yauzl';
import { TestServer } from './helpers/server.js';
import { zipOf } from './helpers/zips.js';

const zip = (source: string) => zipOf([{ name: 'app.js', data: source }]);
const decode = (payload: Uint8Array | undefined) => JSON.parse(Buffer.from(payload ?? []).toString('utf8')) as unknown;

/** Every file in a zip, with its unix mode, read with yauzl. */
function unzip(bytes: Buffer): Promise<Map<string, { data: string; mode: number }>> {
  return new Promise((resolve, reject) => {
    yauzl.fromBuffer(bytes, { lazyEntries: true }, (error, zip) => {
      if (error || !zip) return reject(error ?? new Error('no zip'));
      const files = new Map<string, { data: string; mode: number }>();
      zip.on('error', reject);
      zip.on('end', () => resolve(files));
      zip.on('entry', (entry: yauzl.Entry) => {
        zip.openReadStream(entry, (failure, stream) => {
          if (failure || !stream) return reject(failure ?? new Error('no stream'));
          const chunks: Buffer[] = [];
          stream.on('data', (chunk: Buffer) => chunks.push(chunk));
          stream.on('error', reject);
          stream.on('end', () => {
            files.set(entry.fileName, {
              data: Buffer.concat(chunks).toString('utf8'),
              mode: (entry.externalFileAttributes >>> 16) & 0o777,
            });
            zip.readEntry();
          });
        });
      });
      zip.readEntry();
    });
  });
}

/** The error's name when the promise fails, for comparing many refusals at once. */
async function refusal(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    const status = (error as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode ?? 0;
    assert.ok(status >= 400 && status < 500, `a 4xx, got ${status}: ${String(error)}`);
    return (error as Error).name;
  }
  return 'accepted';
}

describe('the AWS SDK for JavaScript against the Lambda API', () => {
  let server: TestServer;
  let client: LambdaClient;

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_BACKENDS: 'isolate,process', ISOLA_PREWARM: 'isolate:0,process:0' } });
    const [accessKeyId, secretAccessKey] = server.auth.split(':') as [string, string];
    client = new LambdaClient({
      endpoint: server.url,
      region: 'eu-west-1',
      credentials: { accessKeyId, secretAccessKey },
      // A failed call is the answer under test, not something to try again.
      maxAttempts: 1,
    });
  });
  after(async () => {
    client.destroy();
    await server.dispose();
  });

  it('creates, reads, invokes, updates, versions, lists and deletes a function', async () => {
    const created = await client.send(
      new CreateFunctionCommand({
        FunctionName: 'sdk-hello',
        Runtime: 'nodejs20.x',
        Role: 'arn:aws:iam::000000000000:role/ignored',
        Handler: 'app.handler',
        Code: { ZipFile: zip('exports.handler = async (event) => ({ hello: event.who, greeting: event.GREETING });') },
        MemorySize: 256,
        Timeout: 10,
        Environment: { Variables: { GREETING: 'hi' } },
      }),
    );
    assert.equal(created.FunctionName, 'sdk-hello');
    assert.equal(created.Runtime, 'nodejs20.x');
    assert.equal(created.MemorySize, 256);
    assert.equal(created.Timeout, 10);
    assert.deepEqual(created.Environment?.Variables, { GREETING: 'hi' });

    const got = await client.send(new GetFunctionCommand({ FunctionName: 'sdk-hello' }));
    assert.equal(got.Configuration?.Handler, 'app.handler');
    const configuration = await client.send(new GetFunctionConfigurationCommand({ FunctionName: 'sdk-hello' }));
    assert.equal(configuration.FunctionArn, created.FunctionArn);

    const invoked = await client.send(
      new InvokeCommand({ FunctionName: 'sdk-hello', Payload: Buffer.from(JSON.stringify({ who: 'Ada' })) }),
    );
    assert.equal(invoked.StatusCode, 200);
    assert.equal(invoked.FunctionError, undefined);
    assert.deepEqual(decode(invoked.Payload), { hello: 'Ada', greeting: 'hi' });

    await client.send(
      new UpdateFunctionCodeCommand({
        FunctionName: 'sdk-hello',
        ZipFile: zip('exports.handler = async (e) => ({ v: 2, who: e.who });'),
      }),
    );
    const updated = await client.send(new UpdateFunctionConfigurationCommand({ FunctionName: 'sdk-hello', Timeout: 20 }));
    assert.equal(updated.Timeout, 20);
    const published = await client.send(new PublishVersionCommand({ FunctionName: 'sdk-hello' }));
    assert.ok(published.Version && published.Version !== '$LATEST', JSON.stringify(published.Version));
    const versions = await client.send(new ListVersionsByFunctionCommand({ FunctionName: 'sdk-hello' }));
    assert.ok((versions.Versions ?? []).some((v) => v.Version === published.Version));
    const latest = await client.send(
      new InvokeCommand({ FunctionName: 'sdk-hello', Payload: Buffer.from(JSON.stringify({ who: 'Bo' })) }),
    );
    assert.deepEqual(decode(latest.Payload), { v: 2, who: 'Bo' });

    const listed = await client.send(new ListFunctionsCommand({}));
    assert.ok((listed.Functions ?? []).some((f) => f.FunctionName === 'sdk-hello'));

    await client.send(new DeleteFunctionCommand({ FunctionName: 'sdk-hello' }));
    await assert.rejects(client.send(new GetFunctionCommand({ FunctionName: 'sdk-hello' })), ResourceNotFoundException);
  });

  it('raises errors by name', async () => {
    await assert.rejects(
      client.send(new InvokeCommand({ FunctionName: 'sdk-missing' })),
      (error: Error) => error instanceof ResourceNotFoundException && error.name === 'ResourceNotFoundException',
    );
    const create = () =>
      client.send(
        new CreateFunctionCommand({
          FunctionName: 'sdk-twice',
          Runtime: 'nodejs20.x',
          Role: 'arn:aws:iam::000000000000:role/ignored',
          Handler: 'app.handler',
          Code: { ZipFile: zip('exports.handler = async () => ({});') },
        }),
      );
    await create();
    await assert.rejects(create(), ResourceConflictException);
    await assert.rejects(
      client.send(
        new CreateFunctionCommand({
          FunctionName: 'sdk-bad-runtime',
          Runtime: 'cobol85' as never,
          Role: 'arn:aws:iam::000000000000:role/ignored',
          Handler: 'app.handler',
          Code: { ZipFile: zip('exports.handler = async () => ({});') },
        }),
      ),
      (error: Error) => error.name === 'InvalidParameterValueException',
    );
    await assert.rejects(client.send(new GetFunctionCommand({ FunctionName: 'sdk-bad-runtime' })), ResourceNotFoundException);
    const forged = new LambdaClient({
      endpoint: server.url,
      region: 'eu-west-1',
      credentials: { accessKeyId: server.auth.split(':')[0] as string, secretAccessKey: 'not-the-key' },
      maxAttempts: 1,
    });
    try {
      await assert.rejects(
        forged.send(new ListFunctionsCommand({})),
        (error: Error) => error.name === 'InvalidSignatureException',
      );
    } finally {
      forged.destroy();
    }
  });

  it("returns a function's own failure as Lambda does: 200 with FunctionError", async () => {
    await client.send(
      new CreateFunctionCommand({
        FunctionName: 'sdk-throws',
        Runtime: 'nodejs20.x',
        Role: 'arn:aws:iam::000000000000:role/ignored',
        Handler: 'app.handler',
        Code: { ZipFile: zip("exports.handler = async () => { throw new Error('no luck'); };") },
      }),
    );
    const answer = await client.send(new InvokeCommand({ FunctionName: 'sdk-throws' }));
    assert.equal(answer.StatusCode, 200);
    assert.equal(answer.FunctionError, 'Unhandled');
    assert.match(String((decode(answer.Payload) as { errorMessage?: unknown }).errorMessage), /no luck/);
  });

  it('tags a function, lists and removes its tags, by its ARN', async () => {
    const created = await client.send(
      new CreateFunctionCommand({
        FunctionName: 'sdk-tagged',
        Runtime: 'nodejs20.x',
        Role: 'arn:aws:iam::000000000000:role/ignored',
        Handler: 'app.handler',
        Code: { ZipFile: zip('exports.handler = async () => ({ ok: true });') },
        Tags: { team: 'red' },
      }),
    );
    const Resource = created.FunctionArn as string;
    assert.deepEqual((await client.send(new ListTagsCommand({ Resource }))).Tags, { team: 'red' });
    await client.send(new TagResourceCommand({ Resource, Tags: { team: 'blue', cost: 'lab' } }));
    assert.deepEqual((await client.send(new ListTagsCommand({ Resource }))).Tags, { team: 'blue', cost: 'lab' });
    await client.send(new UntagResourceCommand({ Resource, TagKeys: ['team'] }));
    assert.deepEqual((await client.send(new ListTagsCommand({ Resource }))).Tags, { cost: 'lab' });
    // Still the same function, still running.
    const answer = await client.send(new InvokeCommand({ FunctionName: 'sdk-tagged' }));
    assert.deepEqual(decode(answer.Payload), { ok: true });

    const many = Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`k${i}`, 'v']));
    await assert.rejects(
      client.send(new TagResourceCommand({ Resource, Tags: many })),
      (error: Error) => error.name === 'InvalidParameterValueException',
    );
    assert.deepEqual((await client.send(new ListTagsCommand({ Resource }))).Tags, { cost: 'lab' }, 'nothing stored');
    await assert.rejects(
      client.send(new ListTagsCommand({ Resource: Resource.replace('sdk-tagged', 'sdk-nobody') })),
      ResourceNotFoundException,
    );
  });

  /** A function whose versions 1 and 2 answer their own number (Lambda's version N is Isola's 0.0.N). */
  async function twoVersions(name: string) {
    const created = await client.send(
      new CreateFunctionCommand({
        FunctionName: name,
        Runtime: 'nodejs20.x',
        Role: 'arn:aws:iam::000000000000:role/ignored',
        Handler: 'app.handler',
        Code: { ZipFile: zip('exports.handler = async () => ({ v: 1 });') },
      }),
    );
    await client.send(
      new UpdateFunctionCodeCommand({ FunctionName: name, ZipFile: zip('exports.handler = async () => ({ v: 2 });') }),
    );
    const versions = await client.send(new ListVersionsByFunctionCommand({ FunctionName: name }));
    assert.deepEqual(
      (versions.Versions ?? []).map((v) => v.Version),
      ['$LATEST', '1', '2'],
    );
    return created.FunctionArn as string;
  }

  const invokeAs = async (FunctionName: string, Qualifier?: string) => {
    const answer = await client.send(new InvokeCommand({ FunctionName, ...(Qualifier ? { Qualifier } : {}) }));
    return { v: (decode(answer.Payload) as { v: number }).v, executed: answer.ExecutedVersion };
  };

  it('creates, reads, updates, lists and deletes aliases, and invokes by alias name and by alias ARN', async () => {
    const functionArn = await twoVersions('sdk-aliased');
    const live = await client.send(
      new CreateAliasCommand({ FunctionName: 'sdk-aliased', Name: 'live', FunctionVersion: '1', Description: 'first' }),
    );
    assert.equal(live.AliasArn, `${functionArn}:live`);
    assert.deepEqual([live.Name, live.FunctionVersion, live.Description], ['live', '1', 'first']);
    assert.equal(live.RoutingConfig, undefined);
    assert.match(live.RevisionId ?? '', /./);
    const got = await client.send(new GetAliasCommand({ FunctionName: 'sdk-aliased', Name: 'live' }));
    assert.deepEqual(
      [got.AliasArn, got.FunctionVersion, got.Description, got.RevisionId],
      [live.AliasArn, '1', 'first', live.RevisionId],
    );

    assert.deepEqual(await invokeAs('sdk-aliased', 'live'), { v: 1, executed: '1' });
    assert.deepEqual(await invokeAs(live.AliasArn as string), { v: 1, executed: '1' });
    assert.deepEqual(await invokeAs('sdk-aliased'), { v: 2, executed: '$LATEST' });
    const configuration = await client.send(
      new GetFunctionConfigurationCommand({ FunctionName: 'sdk-aliased', Qualifier: 'live' }),
    );
    assert.deepEqual([configuration.Version, configuration.FunctionArn], ['1', live.AliasArn]);
    const byArn = await client.send(new GetFunctionCommand({ FunctionName: live.AliasArn }));
    assert.equal(byArn.Configuration?.Version, '1');

    await client.send(new CreateAliasCommand({ FunctionName: 'sdk-aliased', Name: 'edge', FunctionVersion: '$LATEST' }));
    assert.deepEqual(await invokeAs('sdk-aliased', 'edge'), { v: 2, executed: '$LATEST' });

    const moved = await client.send(
      new UpdateAliasCommand({ FunctionName: 'sdk-aliased', Name: 'live', FunctionVersion: '2', RevisionId: live.RevisionId }),
    );
    assert.deepEqual([moved.FunctionVersion, moved.Description], ['2', 'first'], 'what is not sent stays');
    assert.notEqual(moved.RevisionId, live.RevisionId);
    assert.deepEqual(await invokeAs('sdk-aliased', 'live'), { v: 2, executed: '2' });
    await assert.rejects(
      client.send(
        new UpdateAliasCommand({ FunctionName: 'sdk-aliased', Name: 'live', FunctionVersion: '1', RevisionId: live.RevisionId }),
      ),
      PreconditionFailedException,
    );
    assert.equal((await client.send(new GetAliasCommand({ FunctionName: 'sdk-aliased', Name: 'live' }))).FunctionVersion, '2');

    const names = async (input: { MaxItems?: number; Marker?: string; FunctionVersion?: string }) => {
      const page = await client.send(new ListAliasesCommand({ FunctionName: 'sdk-aliased', ...input }));
      return { names: (page.Aliases ?? []).map((a) => a.Name), next: page.NextMarker };
    };
    assert.deepEqual(await names({}), { names: ['edge', 'live'], next: undefined });
    const first = await names({ MaxItems: 1 });
    assert.deepEqual(first.names, ['edge']);
    assert.deepEqual(await names({ MaxItems: 1, Marker: first.next as string }), { names: ['live'], next: undefined });
    assert.deepEqual((await names({ FunctionVersion: '2' })).names, ['live']);
    assert.deepEqual((await names({ FunctionVersion: '1' })).names, []);

    await client.send(new DeleteAliasCommand({ FunctionName: 'sdk-aliased', Name: 'edge' }));
    await assert.rejects(
      client.send(new GetAliasCommand({ FunctionName: 'sdk-aliased', Name: 'edge' })),
      ResourceNotFoundException,
    );
    await assert.rejects(
      client.send(new InvokeCommand({ FunctionName: 'sdk-aliased', Qualifier: 'edge' })),
      ResourceNotFoundException,
    );
    await assert.rejects(
      client.send(new DeleteAliasCommand({ FunctionName: 'sdk-aliased', Name: 'edge' })),
      ResourceNotFoundException,
    );
  });

  it("routes an alias's invocations between two versions by weight", async () => {
    await twoVersions('sdk-canary');
    await client.send(new CreateAliasCommand({ FunctionName: 'sdk-canary', Name: 'canary', FunctionVersion: '1' }));
    const routed = await client.send(
      new UpdateAliasCommand({
        FunctionName: 'sdk-canary',
        Name: 'canary',
        RoutingConfig: { AdditionalVersionWeights: { '2': 0.5 } },
      }),
    );
    assert.deepEqual([routed.FunctionVersion, routed.RoutingConfig?.AdditionalVersionWeights], ['1', { '2': 0.5 }]);
    // Each call is drawn on its own: invoke until both versions have answered, within a deadline.
    const seen = new Set<string>();
    const deadline = Date.now() + 60_000;
    while (seen.size < 2 && Date.now() < deadline) {
      const { v, executed } = await invokeAs('sdk-canary', 'canary');
      assert.equal(String(v), executed, 'the header names the version that ran');
      seen.add(String(executed));
    }
    assert.deepEqual([...seen].sort(), ['1', '2']);
    // The whole share moved: only version 2 runs.
    await client.send(
      new UpdateAliasCommand({
        FunctionName: 'sdk-canary',
        Name: 'canary',
        RoutingConfig: { AdditionalVersionWeights: { '2': 1 } },
      }),
    );
    for (let i = 0; i < 5; i++) assert.deepEqual(await invokeAs('sdk-canary', 'canary'), { v: 2, executed: '2' });
    // An empty routing config takes the routing away.
    const plain = await client.send(
      new UpdateAliasCommand({ FunctionName: 'sdk-canary', Name: 'canary', RoutingConfig: { AdditionalVersionWeights: {} } }),
    );
    assert.equal(plain.RoutingConfig, undefined);
    assert.deepEqual(await invokeAs('sdk-canary', 'canary'), { v: 1, executed: '1' });
  });

  it('refuses a bad alias with a 4xx by name and stores nothing', async () => {
    await twoVersions('sdk-strict');
    const create = (input: Omit<ConstructorParameters<typeof CreateAliasCommand>[0], 'FunctionName'>) =>
      refusal(client.send(new CreateAliasCommand({ FunctionName: 'sdk-strict', ...input })));
    assert.equal(await create({ Name: 'ok', FunctionVersion: '1' }), 'accepted');
    const refused = {
      numeric: await create({ Name: '123', FunctionVersion: '1' }),
      latestAsName: await create({ Name: '$LATEST', FunctionVersion: '1' }),
      tooLong: await create({ Name: 'a'.repeat(129), FunctionVersion: '1' }),
      unknownVersion: await create({ Name: 'a1', FunctionVersion: '99' }),
      notAVersion: await create({ Name: 'a2', FunctionVersion: 'v1' }),
      heavy: await create({ Name: 'a3', FunctionVersion: '1', RoutingConfig: { AdditionalVersionWeights: { '2': 1.5 } } }),
      negative: await create({ Name: 'a4', FunctionVersion: '1', RoutingConfig: { AdditionalVersionWeights: { '2': -0.1 } } }),
      twoAdditional: await create({
        Name: 'a5',
        FunctionVersion: '1',
        RoutingConfig: { AdditionalVersionWeights: { '2': 0.1, '3': 0.1 } },
      }),
      toItself: await create({ Name: 'a6', FunctionVersion: '1', RoutingConfig: { AdditionalVersionWeights: { '1': 0.5 } } }),
      fromLatest: await create({
        Name: 'a7',
        FunctionVersion: '$LATEST',
        RoutingConfig: { AdditionalVersionWeights: { '2': 0.5 } },
      }),
      unknownAdditional: await create({
        Name: 'a8',
        FunctionVersion: '1',
        RoutingConfig: { AdditionalVersionWeights: { '9': 0.5 } },
      }),
      duplicate: await create({ Name: 'ok', FunctionVersion: '2' }),
      noFunction: await refusal(
        client.send(new CreateAliasCommand({ FunctionName: 'sdk-nobody', Name: 'x', FunctionVersion: '1' })),
      ),
      badUpdate: await refusal(
        client.send(
          new UpdateAliasCommand({
            FunctionName: 'sdk-strict',
            Name: 'ok',
            RoutingConfig: { AdditionalVersionWeights: { '2': 1.5 } },
          }),
        ),
      ),
      updateToUnknown: await refusal(
        client.send(new UpdateAliasCommand({ FunctionName: 'sdk-strict', Name: 'ok', FunctionVersion: '42' })),
      ),
    };
    const invalid = InvalidParameterValueException.name;
    const missing = ResourceNotFoundException.name;
    assert.deepEqual(refused, {
      numeric: invalid,
      latestAsName: invalid,
      tooLong: invalid,
      unknownVersion: missing,
      notAVersion: invalid,
      heavy: invalid,
      negative: invalid,
      twoAdditional: invalid,
      toItself: invalid,
      fromLatest: invalid,
      unknownAdditional: missing,
      duplicate: ResourceConflictException.name,
      noFunction: missing,
      badUpdate: invalid,
      updateToUnknown: missing,
    });
    const aliases = await client.send(new ListAliasesCommand({ FunctionName: 'sdk-strict' }));
    assert.deepEqual(
      (aliases.Aliases ?? []).map((a) => [a.Name, a.FunctionVersion, a.RoutingConfig]),
      [['ok', '1', undefined]],
      'nothing stored, nothing changed',
    );
  });

  it("deletes a function's aliases with it", async () => {
    await twoVersions('sdk-doomed');
    await client.send(new CreateAliasCommand({ FunctionName: 'sdk-doomed', Name: 'live', FunctionVersion: '2' }));
    await client.send(new DeleteFunctionCommand({ FunctionName: 'sdk-doomed' }));
    await assert.rejects(client.send(new ListAliasesCommand({ FunctionName: 'sdk-doomed' })), ResourceNotFoundException);
    // Made again under the same name: it starts without aliases.
    await client.send(
      new CreateFunctionCommand({
        FunctionName: 'sdk-doomed',
        Runtime: 'nodejs20.x',
        Role: 'arn:aws:iam::000000000000:role/ignored',
        Handler: 'app.handler',
        Code: { ZipFile: zip('exports.handler = async () => ({ v: 3 });') },
      }),
    );
    assert.deepEqual((await client.send(new ListAliasesCommand({ FunctionName: 'sdk-doomed' }))).Aliases, []);
    await assert.rejects(
      client.send(new GetAliasCommand({ FunctionName: 'sdk-doomed', Name: 'live' })),
      ResourceNotFoundException,
    );
    await assert.rejects(
      client.send(new InvokeCommand({ FunctionName: 'sdk-doomed', Qualifier: 'live' })),
      ResourceNotFoundException,
    );
  });

  it('hands out the code as a link that downloads the zip without credentials, and refuses a link that was changed', async () => {
    const deployed = zipOf([
      { name: 'index.js', data: 'exports.handler = async () => ({ zipped: true });' },
      { name: 'lib/util.js', data: 'module.exports = 1;' },
    ]);
    await client.send(
      new CreateFunctionCommand({
        FunctionName: 'sdk-code',
        Runtime: 'nodejs20.x',
        Role: 'arn:aws:iam::000000000000:role/ignored',
        Handler: 'index.handler',
        Code: { ZipFile: deployed },
      }),
    );
    const got = await client.send(new GetFunctionCommand({ FunctionName: 'sdk-code' }));
    assert.equal(got.Code?.RepositoryType, 'S3');
    const location = got.Code?.Location as string;
    assert.ok(location.startsWith(`${server.url}/`), location);
    const download = await fetch(location);
    assert.equal(download.status, 200);
    assert.equal(download.headers.get('content-type'), 'application/zip');
    const bytes = Buffer.from(await download.arrayBuffer());
    assert.deepEqual(bytes, deployed, 'the zip as deployed');
    const files = await unzip(bytes);
    assert.deepEqual([...files.keys()].sort(), ['index.js', 'lib/util.js']);
    assert.equal(files.get('index.js')?.data, 'exports.handler = async () => ({ zipped: true });');

    // A function of another door, one source file: zipped under the name Lambda's Handler implies.
    const source = 'function main(params) { return { single: true }; }';
    await server.deploy('sdk-single', source);
    const single = await client.send(new GetFunctionCommand({ FunctionName: 'sdk-single' }));
    const singleZip = await unzip(Buffer.from(await (await fetch(single.Code?.Location as string)).arrayBuffer()));
    assert.deepEqual([...singleZip.entries()], [['index.js', { data: source, mode: 0o644 }]]);

    // A version read through an alias: that version's code.
    await client.send(
      new UpdateFunctionCodeCommand({
        FunctionName: 'sdk-code',
        ZipFile: zipOf([{ name: 'index.js', data: 'exports.handler = async () => 2;' }]),
      }),
    );
    await client.send(new CreateAliasCommand({ FunctionName: 'sdk-code', Name: 'first', FunctionVersion: '1' }));
    const first = await client.send(new GetFunctionCommand({ FunctionName: 'sdk-code', Qualifier: 'first' }));
    assert.deepEqual(Buffer.from(await (await fetch(first.Code?.Location as string)).arrayBuffer()), deployed);

    // Any change to the link, a late link, or one for another function: 403, and no hint of why.
    const url = new URL(location);
    const changed = (change: (u: URL) => void) => {
      const copy = new URL(url);
      change(copy);
      return copy.toString();
    };
    const signature = url.searchParams.get('signature') as string;
    const secret = readFileSync(join(server.dataDir, 'links.secret'), 'utf8').trim();
    const signedAt = (expires: number) => {
      const fields = [
        'lambda-code-location',
        'guest',
        'sdk-code',
        url.searchParams.get('version'),
        url.searchParams.get('revision'),
        String(expires),
      ];
      return changed((u) => {
        u.searchParams.set('expires', String(expires));
        u.searchParams.set('signature', createHmac('sha256', secret).update(JSON.stringify(fields)).digest('base64url'));
      });
    };
    assert.equal((await fetch(signedAt(Math.floor(Date.now() / 1000) + 60))).status, 200, 'the link as the server signs it');
    const bad = [
      changed((u) => u.searchParams.set('signature', `${signature.slice(0, -2)}${signature.endsWith('AA') ? 'BB' : 'AA'}`)),
      changed((u) => u.searchParams.delete('signature')),
      changed((u) => u.searchParams.set('version', '0.0.2')),
      changed((u) => u.searchParams.set('expires', String(Number(u.searchParams.get('expires')) + 3600))),
      changed((u) => {
        u.pathname = u.pathname.replace('sdk-code', 'sdk-single');
      }),
      signedAt(Math.floor(Date.now() / 1000) - 1),
    ];
    for (const link of bad) {
      const answer = await fetch(link);
      assert.equal(answer.status, 403, link);
      const body = await answer.text();
      assert.doesNotMatch(body, /sdk-|guest|index\.js/, 'nothing about the function leaks');
    }
  });
});
