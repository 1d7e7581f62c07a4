import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** The built platform, as users run it (`npm test` builds it first): no TypeScript loader. */
const MAIN = join(ROOT, 'dist/cli/main.js');

export interface Response<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
}

export interface RequestOptions {
  auth?: string | null;
  headers?: Record<string, string>;
  /** Sent as is instead of JSON. */
  raw?: string | Buffer;
}

/**
 * A real `isola serve` in a child process on a free port, with its own data dir: what the
 * end-to-end tests and the benchmarks drive over HTTP.
 */
export class ServerProcess {
  url = '';
  auth = '';
  output = '';
  private constructor(
    readonly dataDir: string,
    private readonly ownsDataDir: boolean,
    private readonly env: Record<string, string>,
    private readonly args: string[],
    private readonly wrap: string[],
    private proc?: ChildProcess,
  ) {}

  /**
   * `wrap`: a command the server runs under, given the node command line as its arguments; it
   * must exec node in its own place, so that the pid is the server's (e.g. `['ip', 'netns',
   * 'exec', name]`). The server is reached at the address it prints (ISOLA_HOST's).
   */
  static async start(
    options: { dataDir?: string; env?: Record<string, string>; args?: string[]; wrap?: string[] } = {},
  ): Promise<ServerProcess> {
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'isola-server-'));
    const server = new ServerProcess(dataDir, !options.dataDir, options.env ?? {}, options.args ?? [], options.wrap ?? []);
    await server.launch();
    return server;
  }

  /** Starts the server again on the same data dir (after stop or kill). */
  async restart(): Promise<void> {
    await this.launch();
  }

  private async launch(): Promise<void> {
    const [command, ...commandArgs] = [
      ...this.wrap,
      process.execPath,
      '--no-node-snapshot',
      MAIN,
      'serve',
      '--port',
      '0',
      '--data-dir',
      this.dataDir,
      ...this.args,
    ] as [string, ...string[]];
    const proc = spawn(command, commandArgs, {
      cwd: ROOT,
      // Only the in-process backends unless a suite asks for more: probing containers and
      // microVMs at every start would slow every suite down.
      env: {
        ...process.env,
        ISOLA_LOG_LEVEL: 'error',
        ISOLA_PREWARM: 'isolate:1',
        ISOLA_BACKENDS: 'isolate,wasm,process',
        ...this.env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    this.output = '';
    proc.stderr?.on('data', (chunk: Buffer) => {
      this.output += chunk.toString();
    });
    this.url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not start:\n${this.output}`)), 60_000);
      proc.stdout?.on('data', (chunk: Buffer) => {
        this.output += chunk.toString();
        const match = /listening on (http:\/\/\S+)/.exec(this.output);
        if (match) {
          clearTimeout(timer);
          resolve(match[1] as string);
        }
      });
      proc.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`server exited with ${code}:\n${this.output}`));
      });
    });
    this.auth = this.env.ISOLA_GUEST_AUTH ?? readFileSync(join(this.dataDir, 'guest.auth'), 'utf8').trim();
    // The server listens before its backends' probes end; suites and benchmarks start once they
    // have, so that no first call's time includes a probe (building the microVM guest image, say).
    await waitFor(
      "the backends' probes to end",
      async () => {
        const health = await this.request<{ probing?: string[] }>('GET', '/healthz', undefined, { auth: null });
        return health.status === 200 && (health.body.probing ?? []).length === 0 ? true : undefined;
      },
      300_000,
    );
  }

  async request<T = unknown>(method: string, path: string, body?: unknown, options: RequestOptions = {}): Promise<Response<T>> {
    const auth = options.auth === undefined ? this.auth : options.auth;
    const headers: Record<string, string> = { ...(options.headers ?? {}) };
    if (auth) headers.authorization = `Basic ${Buffer.from(auth).toString('base64')}`;
    let payload: string | Buffer | undefined;
    if (options.raw !== undefined) payload = options.raw;
    else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['content-type'] ??= 'application/json';
    }
    const response = await fetch(`${this.url}${path}`, { method, headers, ...(payload !== undefined ? { body: payload } : {}) });
    const text = await response.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // keep text
    }
    return { status: response.status, headers: response.headers, body: parsed as T };
  }

  /** The operator token (ISOLA_ADMIN_TOKEN, or admin.token in the data dir) that /metrics and the admin API need. */
  get adminToken(): string {
    return this.env.ISOLA_ADMIN_TOKEN ?? readFileSync(join(this.dataDir, 'admin.token'), 'utf8').trim();
  }

  /** The Prometheus text of /metrics, read with the operator token. */
  async metrics(): Promise<string> {
    const response = await fetch(`${this.url}/metrics`, { headers: { authorization: `Bearer ${this.adminToken}` } });
    if (response.status !== 200) throw new Error(`/metrics answered ${response.status}: ${await response.text()}`);
    return response.text();
  }

  /** Deploys a Node.js action and returns the stored action. */
  async deploy(name: string, code: string, extra: Record<string, unknown> = {}): Promise<Response<Record<string, unknown>>> {
    const { exec, ...rest } = extra as { exec?: Record<string, unknown> };
    return this.request('PUT', `/api/v1/namespaces/_/actions/${encodeURIComponent(name)}?overwrite=true`, {
      exec: { kind: 'nodejs:20', code, ...(exec ?? {}) },
      ...rest,
    });
  }

  async invoke<T = Record<string, unknown>>(name: string, params: unknown = {}, query = 'blocking=true'): Promise<Response<T>> {
    return this.request<T>('POST', `/api/v1/namespaces/_/actions/${encodeURIComponent(name)}?${query}`, params);
  }

  /**
   * A blocking invocation that ends in the activation record even when the run outlasts the
   * blocking wait (202 with an activation id): then the record is polled for, as `wsk` does.
   */
  async invokeToEnd<T = Record<string, unknown>>(name: string, params: unknown = {}, timeoutMs = 300_000): Promise<Response<T>> {
    const first = await this.invoke<T | { activationId: string }>(name, params);
    if (first.status !== 202) return first as Response<T>;
    const { activationId } = first.body as { activationId: string };
    return waitFor(
      `activation ${activationId} of ${name}`,
      async () => {
        const record = await this.request<T>('GET', `/api/v1/namespaces/_/activations/${activationId}`);
        return record.status === 404 ? undefined : record;
      },
      timeoutMs,
    );
  }

  /** SIGKILL: no cleanup, as after a crash. */
  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGKILL');
    await exited;
  }

  /** SIGTERM, then waits until the server exited and everything it printed has been read. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      // 'close' comes once the process exited and its output pipes are drained; a process the
      // server left holding them open must not hold this up for long.
      const closed = new Promise<void>((resolve) => {
        proc.once('close', () => resolve());
        proc.once('exit', () => setTimeout(resolve, 5000).unref());
      });
      proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
      await closed;
      clearTimeout(timer);
    }
  }

  /** The server's process id, while it runs. */
  get pid(): number | undefined {
    return this.proc?.exitCode === null ? this.proc.pid : undefined;
  }

  async dispose(): Promise<void> {
    await this.stop();
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }
}

export function annotation(record: { annotations: { key: string; value: unknown }[] }, key: string): unknown {
  return record.annotations.find((a) => a.key === key)?.value;
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** A TCP port on `host` (127.0.0.1 by default) that nothing listens on now. */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * POSTs a body declared `declaredBytes` long but sends only its first KB, and answers the status:
 * how a test checks that an oversized body is refused (413) without racing the server, which may
 * close the connection once it has answered, while a client writing the whole body would still be
 * writing (EPIPE instead of the answer).
 */
export function postDeclaredBody(
  url: string,
  path: string,
  headers: Record<string, string>,
  declaredBytes: number,
): Promise<{ status: number; text: string }> {
  const target = new URL(url);
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = httpRequest(
      {
        host: target.hostname,
        port: target.port,
        method: 'POST',
        path,
        headers: { ...headers, 'content-length': String(declaredBytes), connection: 'close' },
      },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      },
    );
    req.on('error', (error) => {
      if (!answered) reject(error);
    });
    req.end('x'.repeat(Math.min(1024, declaredBytes)));
  });
}
