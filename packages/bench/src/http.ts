import { Agent, request } from 'node:http';
import { createConnection, type Socket } from 'node:net';

/**
 * A lean keep-alive HTTP client for timing calls: fetch() in Node 20 adds several hundred
 * microseconds per request, which would be charged to the server under test.
 */
export class KeepAliveClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 64 });
  private readonly base: URL;

  constructor(
    baseUrl: string,
    private readonly headers: Record<string, string> = {},
  ) {
    this.base = new URL(baseUrl);
  }

  send(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        {
          agent: this.agent,
          host: this.base.hostname,
          port: this.base.port,
          method,
          path,
          headers: {
            ...this.headers,
            ...(payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.send(method, path, body);
    return JSON.parse(res.body) as T;
  }

  close(): void {
    this.agent.destroy();
  }
}

interface Pending {
  resolve: (response: { status: number; body: string }) => void;
  reject: (error: Error) => void;
}

/**
 * The smallest HTTP/1.1 keep-alive client that times one call at a time: the request written
 * whole on one socket, the response read by its content length or its chunks. Measured here
 * against a bare `node:http` server in another process, node:http's own client adds about 0.3 ms
 * to every call (0.38 against 0.10 ms back to back, 0.96 against 0.63 ms after a 60 ms pause), and
 * undici's `Client` more (0.49 and 1.1-1.4 ms): time that neither the server under test nor an
 * engine called in-process spends. For the start-up figures, where that is a fifth of a pooled
 * start. Calls made while one is in flight wait their turn.
 */
export class TimingClient {
  private socket: Socket | undefined;
  private received: Buffer = Buffer.alloc(0);
  private pending: Pending | undefined;
  private turn: Promise<unknown> = Promise.resolve();
  private readonly host: string;
  private readonly port: number;
  private readonly fixedHeaders: string;

  constructor(baseUrl: string, headers: Record<string, string> = {}) {
    const url = new URL(baseUrl);
    this.host = url.hostname;
    this.port = Number(url.port || 80);
    this.fixedHeaders = Object.entries({ host: url.host, ...headers })
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('');
  }

  send(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
    const call = this.turn.then(() => this.sendNow(method, path, body));
    this.turn = call.catch(() => undefined);
    return call;
  }

  close(): void {
    this.socket?.destroy();
    this.socket = undefined;
  }

  private async sendNow(method: string, path: string, body?: unknown): Promise<{ status: number; body: string }> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const socket = this.socket ?? (await this.connect());
    const head =
      `${method} ${path} HTTP/1.1\r\n${this.fixedHeaders}` +
      (payload ? `content-type: application/json\r\ncontent-length: ${payload.length}\r\n` : '') +
      '\r\n';
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      socket.write(payload ? Buffer.concat([Buffer.from(head), payload]) : head);
    });
  }

  private connect(): Promise<Socket> {
    return new Promise((resolve, reject) => {
      const socket = createConnection({ host: this.host, port: this.port, noDelay: true });
      socket.once('connect', () => {
        socket.off('error', reject);
        socket.on('error', (error) => this.fail(socket, error));
        this.socket = socket;
        this.received = Buffer.alloc(0);
        resolve(socket);
      });
      socket.once('error', reject);
      socket.on('data', (chunk: Buffer) => this.onData(socket, chunk));
      socket.on('close', () => this.fail(socket, new Error('the server closed the connection')));
    });
  }

  private fail(socket: Socket, error: Error): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    const pending = this.pending;
    this.pending = undefined;
    pending?.reject(error);
  }

  private onData(socket: Socket, chunk: Buffer): void {
    this.received = this.received.length === 0 ? chunk : Buffer.concat([this.received, chunk]);
    const response = readResponse(this.received);
    if (!response) return;
    if (response.kind === 'refused') {
      socket.destroy();
      this.fail(socket, new Error(response.error));
      return;
    }
    this.received = this.received.subarray(response.length);
    const pending = this.pending;
    this.pending = undefined;
    if (response.close) {
      this.socket = undefined;
      socket.destroy();
    }
    pending?.resolve({ status: response.status, body: response.body });
  }
}

/**
 * One whole response at the start of `data`, or undefined while it is still arriving. Bodies
 * with a content length or in chunks; a response with neither is refused (this client keeps its
 * connection, so it could not tell where such a body ends).
 */
export type ReadResponse =
  | { kind: 'whole'; status: number; body: string; length: number; close: boolean }
  | { kind: 'refused'; error: string };

export function readResponse(data: Buffer): ReadResponse | undefined {
  const headEnd = data.indexOf('\r\n\r\n');
  if (headEnd < 0) return undefined;
  const lines = data.toString('latin1', 0, headEnd).split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
  if (!status) return { kind: 'refused', error: `not an HTTP/1.1 response: ${(lines[0] ?? '').slice(0, 80)}` };
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  const close = headers.get('connection')?.toLowerCase() === 'close';
  const code = Number(status[1]);
  const bodyStart = headEnd + 4;
  if (code === 204 || code === 304) return { kind: 'whole', status: code, body: '', length: bodyStart, close };
  const contentLength = headers.get('content-length');
  if (contentLength !== undefined) {
    const end = bodyStart + Number(contentLength);
    if (data.length < end) return undefined;
    return { kind: 'whole', status: code, body: data.toString('utf8', bodyStart, end), length: end, close };
  }
  if (headers.get('transfer-encoding')?.toLowerCase() !== 'chunked') {
    return { kind: 'refused', error: 'a response with neither a content length nor chunks' };
  }
  const chunks: Buffer[] = [];
  let at = bodyStart;
  for (;;) {
    const sizeEnd = data.indexOf('\r\n', at);
    if (sizeEnd < 0) return undefined;
    const size = Number.parseInt(data.toString('latin1', at, sizeEnd), 16);
    if (Number.isNaN(size)) return { kind: 'refused', error: 'a malformed chunk size' };
    if (size === 0) {
      // The last chunk, then trailers (none expected) and the blank line.
      const end = data.indexOf('\r\n\r\n', sizeEnd);
      if (end < 0) return undefined;
      return { kind: 'whole', status: code, body: Buffer.concat(chunks).toString('utf8'), length: end + 4, close };
    }
    const chunkEnd = sizeEnd + 2 + size;
    if (data.length < chunkEnd + 2) return undefined;
    chunks.push(data.subarray(sizeEnd + 2, chunkEnd));
    at = chunkEnd + 2;
  }
}
