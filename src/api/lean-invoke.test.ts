import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type IncomingMessage, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { setImmediate as nextRound } from 'node:timers/promises';
import { AnswerBatch } from './lean-invoke.js';
import { RoundEnd } from './round-end.js';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/** A server that hands each request to the test, which answers it (or not) when it chooses. */
class HeldRequests {
  readonly server: Server;
  private readonly held: { request: IncomingMessage; response: ServerResponse }[] = [];
  private readonly waiters: (() => void)[] = [];

  constructor() {
    this.server = createServer((req, response) => {
      req.resume();
      req.on('end', () => {
        this.held.push({ request: req, response });
        for (const wake of this.waiters.splice(0)) wake();
      });
    });
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** The first `count` requests once they have all arrived. */
  async take(count: number) {
    while (this.held.length < count) await new Promise<void>((resolve) => this.waiters.push(resolve));
    return this.held.splice(0, count);
  }
}

function post(port: number, path: string): { answer: Promise<Answer>; abort: () => void } {
  const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-length': '2' } });
  const answer = new Promise<Answer>((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
  });
  req.end('{}');
  return { answer, abort: () => req.destroy() };
}

describe('AnswerBatch', () => {
  const held = new HeldRequests();
  before(async () => {
    held.server.listen(0, '127.0.0.1');
    await once(held.server, 'listening');
  });
  after(() => held.server.close());

  it('writes the answers made in one round of the event loop together once the round is over, each with its own bytes', async () => {
    const calls = ['/a', '/b', '/c', '/d'].map((path) => post(held.port, path));
    const requests = await held.take(4);
    const batch = new AnswerBatch(new RoundEnd((error) => assert.fail(String(error))));
    const payloads: Record<string, unknown> = { '/a': { greeting: 'Hello a' }, '/b': 'just text', '/c': undefined };
    for (const { request: req, response } of requests) {
      if (req.url === '/d') batch.send(response, 502, { error: 'broken', code: 'x' }, true);
      else batch.send(response, req.url === '/c' ? 204 : 200, payloads[req.url as string]);
    }
    // Nothing is on the wire while the round that made them goes on.
    assert.deepEqual(
      requests.map(({ response }) => response.headersSent),
      [false, false, false, false],
    );
    await nextRound();
    assert.deepEqual(
      requests.map(({ response }) => response.headersSent),
      [true, true, true, true],
    );
    const [a, b, c, d] = await Promise.all(calls.map((call) => call.answer));
    assert.equal(a?.status, 200);
    assert.equal(a?.headers['content-type'], 'application/json; charset=utf-8');
    assert.deepEqual(JSON.parse(a?.body ?? ''), { greeting: 'Hello a' });
    assert.equal(a?.headers['content-length'], String(Buffer.byteLength(a?.body ?? '')));
    assert.equal(b?.headers['content-type'], 'text/plain; charset=utf-8');
    assert.equal(b?.body, 'just text');
    assert.equal(c?.status, 204);
    assert.equal(c?.body, '');
    assert.equal(d?.status, 502);
    assert.equal(d?.headers.connection, 'close');
    assert.deepEqual(JSON.parse(d?.body ?? ''), { error: 'broken', code: 'x' });
  });

  it('skips an answer whose client left before the round ended and writes the others', async () => {
    const gone = post(held.port, '/gone');
    const staying = post(held.port, '/staying');
    const requests = await held.take(2);
    const left = requests.find(({ request: req }) => req.url === '/gone');
    assert.ok(left);
    const closed = once(left.response, 'close');
    gone.abort();
    await gone.answer.then(
      () => assert.fail('the aborted request was answered'),
      () => {},
    );
    await closed;
    const batch = new AnswerBatch(new RoundEnd((error) => assert.fail(String(error))));
    for (const { response } of requests) batch.send(response, 200, { ok: true });
    await nextRound();
    assert.equal(left.response.headersSent, false);
    const answer = await staying.answer;
    assert.equal(answer.status, 200);
    assert.deepEqual(JSON.parse(answer.body), { ok: true });
  });
});
