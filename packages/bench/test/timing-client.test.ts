import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { readResponse, TimingClient } from '../src/http.js';

/** Echoes what it got, in the shape the path asks for. */
function answer(req: IncomingMessage, res: ServerResponse): void {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => {
    const got = JSON.stringify({
      method: req.method,
      url: req.url,
      authorization: req.headers.authorization ?? null,
      body: Buffer.concat(chunks).toString('utf8'),
    });
    if (req.url === '/chunked') {
      res.writeHead(201, { 'content-type': 'application/json' });
      // Two writes without a length: node:http sends them as chunks.
      res.write(got.slice(0, 10));
      res.end(got.slice(10));
    } else if (req.url === '/close') {
      res.writeHead(200, { connection: 'close', 'content-length': Buffer.byteLength(got) });
      res.end(got);
    } else if (req.url === '/empty') {
      res.writeHead(204);
      res.end();
    } else if (req.url === '/big') {
      res.end('é'.repeat(300_000));
    } else {
      res.writeHead(req.url === '/missing' ? 404 : 200, { 'content-length': Buffer.byteLength(got) });
      res.end(got);
    }
  });
}

describe('the timing client of the start-up benchmarks', () => {
  let server: Server;
  let url: string;
  const connections: number[] = [];

  before(async () => {
    server = createServer(answer);
    server.on('connection', (socket) => connections.push(socket.remotePort ?? 0));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });

  it('sends the method, path, headers and JSON body, and keeps its connection between calls', async () => {
    const client = new TimingClient(url, { authorization: 'Basic abc' });
    const before = connections.length;
    try {
      for (const name of ['Ada', 'Grace', 'Ünïcode']) {
        const response = await client.send('POST', '/actions/x?blocking=true', { name });
        assert.equal(response.status, 200);
        assert.deepEqual(JSON.parse(response.body), {
          method: 'POST',
          url: '/actions/x?blocking=true',
          authorization: 'Basic abc',
          body: JSON.stringify({ name }),
        });
      }
      assert.equal((await client.send('GET', '/missing')).status, 404);
      assert.equal(connections.length - before, 1);
    } finally {
      client.close();
    }
  });

  it('reads chunked bodies, empty ones and large multibyte ones', async () => {
    const client = new TimingClient(url);
    try {
      const chunked = await client.send('PUT', '/chunked', { a: 1 });
      assert.equal(chunked.status, 201);
      assert.equal(JSON.parse(chunked.body).body, '{"a":1}');
      assert.deepEqual(await client.send('DELETE', '/empty'), { status: 204, body: '' });
      const big = await client.send('GET', '/big');
      assert.equal(big.body, 'é'.repeat(300_000));
      assert.equal((await client.send('GET', '/after')).status, 200);
    } finally {
      client.close();
    }
  });

  it('opens a new connection after the server closed one, and takes calls made together in turn', async () => {
    const client = new TimingClient(url);
    const before = connections.length;
    try {
      assert.equal((await client.send('GET', '/close')).status, 200);
      const together = await Promise.all([1, 2, 3].map((n) => client.send('GET', `/n/${n}`)));
      assert.deepEqual(
        together.map((r) => (JSON.parse(r.body) as { url: string }).url),
        ['/n/1', '/n/2', '/n/3'],
      );
      assert.equal(connections.length - before, 2);
    } finally {
      client.close();
    }
  });

  it('fails a call whose server is gone instead of waiting for ever', async () => {
    const gone = createServer((req) => req.socket.destroy());
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const client = new TimingClient(`http://127.0.0.1:${(gone.address() as AddressInfo).port}`);
    try {
      // A close, or a reset if the request's bytes were still unread when the server let go.
      await assert.rejects(client.send('GET', '/'), /closed the connection|ECONNRESET/);
    } finally {
      client.close();
      await new Promise((resolve) => gone.close(resolve));
    }
  });

  it('waits for a whole response, and refuses one whose end it cannot find', () => {
    const whole = Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello');
    assert.equal(readResponse(whole.subarray(0, 20)), undefined);
    assert.equal(readResponse(whole.subarray(0, whole.length - 1)), undefined);
    assert.deepEqual(readResponse(whole), { kind: 'whole', status: 200, body: 'hello', length: whole.length, close: false });
    assert.deepEqual(readResponse(Buffer.from('HTTP/1.1 200 OK\r\n\r\nbody')), {
      kind: 'refused',
      error: 'a response with neither a content length nor chunks',
    });
    assert.match((readResponse(Buffer.from('SSH-2.0\r\n\r\n')) as { error: string }).error, /not an HTTP\/1.1 response/);
  });
});
