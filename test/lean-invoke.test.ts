import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { ServerProcess } from './helpers/server-process.js';

/**
 * The lean invoke path (src/api/lean-invoke.ts) against Fastify's route: the same requests to a
 * server that takes them on the lean path (log level warn) and to one where every request goes
 * through Fastify (log level info, where the lean path is off), and the answers compared byte for
 * byte, ids and times aside: status, headers in order, body.
 */

interface RawAnswer {
  status: number;
  /** Header names and values in the order sent, the date aside. */
  headers: string[];
  body: string;
}

const FUNCTIONS: Record<string, string> = {
  hello: 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }',
  refuses: 'function main() { return { error: "no" }; }',
  throws: 'function main() { throw new Error("broken"); }',
  text: 'function main() { return "just text"; }',
};

function send(
  server: ServerProcess,
  agent: Agent,
  path: string,
  body: string,
  headers: Record<string, string>,
): Promise<RawAnswer> {
  const target = new URL(server.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        method: 'POST',
        path,
        agent,
        headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => {
          const headerList: string[] = [];
          for (let i = 0; i < res.rawHeaders.length; i += 2) {
            const name = (res.rawHeaders[i] as string).toLowerCase();
            if (name !== 'date') headerList.push(`${name}: ${res.rawHeaders[i + 1]}`);
          }
          resolve({ status: res.statusCode ?? 0, headers: headerList, body: Buffer.concat(chunks).toString('utf8') });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

/** Ids and times differ from call to call: both become placeholders of the same length. */
function normalised(answer: RawAnswer): RawAnswer {
  const length = answer.headers.find((h) => h.startsWith('content-length: '));
  assert.equal(length, `content-length: ${Buffer.byteLength(answer.body)}`, 'the content length is the body length');
  return {
    status: answer.status,
    headers: answer.headers.map((h) => (h.startsWith('content-length: ') ? 'content-length: N' : h)),
    body: answer.body.replace(/[0-9a-f]{32}/g, 'ID').replace(/\d+/g, '0'),
  };
}

async function leanCount(server: ServerProcess): Promise<number> {
  const match = /^isola_api_lean_invokes_total (\d+)$/m.exec(await server.metrics());
  return match ? Number(match[1]) : 0;
}

describe('the lean invoke path', () => {
  let lean: ServerProcess;
  let plain: ServerProcess;
  const agents = new Map<ServerProcess, Agent>();

  before(async () => {
    [lean, plain] = await Promise.all([
      ServerProcess.start({ env: { ISOLA_LOG_LEVEL: 'warn' } }),
      ServerProcess.start({ env: { ISOLA_LOG_LEVEL: 'info' } }),
    ]);
    for (const server of [lean, plain]) {
      agents.set(server, new Agent({ keepAlive: true, maxSockets: 1 }));
      for (const [name, code] of Object.entries(FUNCTIONS)) assert.equal((await server.deploy(name, code)).status, 200);
    }
  });

  after(async () => {
    for (const agent of agents.values()) agent.destroy();
    await Promise.all([lean?.dispose(), plain?.dispose()]);
  });

  const basic = (auth: string) => `Basic ${Buffer.from(auth).toString('base64')}`;
  const json = { 'content-type': 'application/json' };

  /** The same request to both servers: their answers, normalised, must be equal. */
  async function compare(
    what: string,
    path: string,
    body: string,
    headers: (server: ServerProcess) => Record<string, string> = (server) => ({ ...json, authorization: basic(server.auth) }),
  ): Promise<RawAnswer> {
    const [fromLean, fromPlain] = [
      await send(lean, agents.get(lean) as Agent, path, body, headers(lean)),
      await send(plain, agents.get(plain) as Agent, path, body, headers(plain)),
    ];
    assert.deepEqual(normalised(fromLean), normalised(fromPlain), what);
    return fromLean;
  }

  it('answers the plain invokes as Fastify does: results, records, errors, bad credentials, bad bodies, missing actions', async () => {
    const before = await leanCount(lean);
    const invoke = '/api/v1/namespaces/_/actions';
    const taken: [string, string, string, number][] = [
      ['result', `${invoke}/hello?blocking=true&result=true`, '{"name":"load"}', 200],
      ['result of an empty body', `${invoke}/hello?blocking=true&result=true`, '', 200],
      ['record', `${invoke}/hello?blocking=true`, '{"name":"load"}', 200],
      ['not blocking', `${invoke}/hello`, '{"name":"load"}', 202],
      ['application error', `${invoke}/refuses?blocking=true&result=true`, '{}', 502],
      ['application error record', `${invoke}/refuses?blocking=true`, '{}', 502],
      ['thrown error', `${invoke}/throws?blocking=true&result=true`, '{}', 502],
      ['a result not a dictionary', `${invoke}/text?blocking=true&result=true`, '{}', 502],
      ['missing action', `${invoke}/nothing?blocking=true&result=true`, '{}', 404],
      ['missing action, not blocking', `${invoke}/nothing`, '{}', 404],
      ['malformed body', `${invoke}/hello?blocking=true&result=true`, '{"name":', 400],
      ['body not an object', `${invoke}/hello?blocking=true&result=true`, '[1]', 400],
      ['body nested too deep', `${invoke}/hello?blocking=true&result=true`, `${'['.repeat(200)}${']'.repeat(200)}`, 400],
      ['__proto__ key', `${invoke}/hello?blocking=true&result=true`, '{"__proto__":{"a":1}}', 400],
    ];
    for (const [what, path, body, status] of taken) {
      const answer = await compare(what, path, body);
      assert.equal(answer.status, status, `${what}: ${answer.body}`);
    }
    const path = `${invoke}/hello?blocking=true&result=true`;
    const credentials: [string, (server: ServerProcess) => Record<string, string>][] = [
      ['no credentials', () => json],
      ['a wrong key', (server) => ({ ...json, authorization: basic(`${server.auth.split(':')[0]}:wrong`) })],
      ['not Basic', () => ({ ...json, authorization: 'Bearer token' })],
      ['bad credentials and a malformed body', (server) => ({ ...json, authorization: basic(`${server.auth}x`) })],
    ];
    for (const [what, headers] of credentials) {
      const answer = await compare(what, path, what.includes('malformed') ? '{' : '{}', headers);
      assert.equal(answer.status, what.includes('malformed') ? 400 : 401, `${what}: ${answer.body}`);
    }
    const lengthOf = (answer: RawAnswer) => answer.headers.find((h) => h.startsWith('content-type'));
    const result = await compare('result again', path, '{"name":"load"}');
    assert.deepEqual(JSON.parse(result.body), { greeting: 'Hello load' });
    assert.equal(lengthOf(result), 'content-type: application/json; charset=utf-8');
    assert.equal(await leanCount(lean), before + taken.length + credentials.length + 1, 'all of them took the lean path');
    assert.equal(await leanCount(plain), 0, 'none took it on the server logging every request');
  });

  it('leaves every other request to Fastify, which answers it as before', async () => {
    const before = await leanCount(lean);
    const invoke = '/api/v1/namespaces/_/actions';
    const auth = (server: ServerProcess) => ({ ...json, authorization: basic(server.auth) });
    const cases: [string, string, string, (server: ServerProcess) => Record<string, string>, number][] = [
      ['another query order', `${invoke}/hello?result=true&blocking=true`, '{}', auth, 200],
      ['a timeout', `${invoke}/hello?blocking=true&result=true&timeout=5000`, '{}', auth, 200],
      ['a bad query', `${invoke}/hello?blocking=maybe`, '{}', auth, 400],
      ['the namespace by name', `${invoke.replace('/_/', '/guest/')}/hello?blocking=true&result=true`, '{}', auth, 200],
      ['an encoded name', `${invoke}/hel%6Co?blocking=true&result=true`, '{}', auth, 200],
      ['a package', `${invoke}/pkg/hello?blocking=true&result=true`, '{}', auth, 404],
      [
        'a charset',
        `${invoke}/hello?blocking=true&result=true`,
        '{}',
        (s) => ({ ...auth(s), 'content-type': 'application/json; charset=utf-8' }),
        200,
      ],
      [
        'another content type',
        `${invoke}/hello?blocking=true&result=true`,
        'x',
        (s) => ({ ...auth(s), 'content-type': 'text/plain' }),
        400,
      ],
      ['a name too long', `${invoke}/${'a'.repeat(300)}?blocking=true&result=true`, '{}', auth, 400],
    ];
    for (const [what, path, body, headers, status] of cases) {
      const answer = await compare(what, path, body, headers);
      assert.equal(answer.status, status, `${what}: ${answer.body}`);
    }
    assert.equal(await leanCount(lean), before, 'none took the lean path');
  });

  it('goes on serving after a client left in the middle of its body', async () => {
    const before = await leanCount(lean);
    const target = new URL(lean.url);
    const socket = connect(Number(target.port), target.hostname);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    const closed = new Promise((resolve) => socket.once('close', resolve));
    socket.write(
      'POST /api/v1/namespaces/_/actions/hello?blocking=true&result=true HTTP/1.1\r\nHost: x\r\n' +
        `Authorization: ${basic(lean.auth)}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":`,
    );
    const deadline = Date.now() + 10_000;
    while ((await leanCount(lean)) === before) {
      assert.ok(Date.now() < deadline, 'the request reached the lean path');
      await new Promise((resolve) => setImmediate(resolve));
    }
    socket.destroy();
    await closed;
    const answer = await send(
      lean,
      agents.get(lean) as Agent,
      '/api/v1/namespaces/_/actions/hello?blocking=true&result=true',
      '{}',
      {
        ...json,
        authorization: basic(lean.auth),
      },
    );
    assert.equal(answer.status, 200);
    assert.deepEqual(JSON.parse(answer.body), { greeting: 'Hello world' });
  });
});
