// The real AWS SDK for JavaScript (v3) against a real `isola serve`: the control plane, Invoke and
// errors raised by name, exactly as a user's code calls them with `endpoint` set to Isola.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  CreateFunctionCommand,
  DeleteFunctionCommand,
  GetFunctionCommand,
  GetFunctionConfigurationCommand,
  InvokeCommand,
  LambdaClient,
  ListFunctionsCommand,
  ListTagsCommand,
  ListVersionsByFunctionCommand,
  PublishVersionCommand,
  ResourceConflictException,
  ResourceNotFoundException,
  TagResourceCommand,
  UntagResourceCommand,
  UpdateFunctionCodeCommand,
  UpdateFunctionConfigurationCommand,
} from '@aws-sdk/client-lambda';
import { TestServer } from './helpers/server.js';
import { zipOf } from './helpers/zips.js';

const zip = (source: string) => zipOf([{ name: 'app.js', data: source }]);
const decode = (payload: Uint8Array | undefined) => JSON.parse(Buffer.from(payload ?? []).toString('utf8')) as unknown;

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
});
