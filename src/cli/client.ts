import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { parseAuth } from '../platform/credentials.js';
import { resolveConnection } from './config-file.js';

/** What was given on the command line (or by a program): it wins over the environment and the config file. */
export interface ClientOptions {
  apihost?: string;
  auth?: string;
  dataDir?: string;
  /** The CLI's config file (`isola property set`), read below the flags and the environment. */
  configFile?: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly code?: string,
    readonly body?: unknown,
  ) {
    super(message);
  }
}

/**
 * One HTTP exchange through node:http(s), not fetch: Node.js 20 compiles its fetch (undici) on
 * first use, about 100 ms of CPU, more than the rest of a CLI command.
 */
function exchange(
  url: URL,
  method: string,
  headers: Record<string, string>,
  payload?: string,
): Promise<{ status: number; text: string }> {
  const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
      response.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** One HTTP request to an Isola server, with its error shape turned into an ApiError. */
async function send<T>(
  apihost: string,
  authorization: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; data: T }> {
  const payload = body !== undefined ? JSON.stringify(body) : undefined;
  const headers: Record<string, string> = { authorization };
  if (payload !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = String(Buffer.byteLength(payload));
  }
  let status: number;
  let text: string;
  try {
    ({ status, text } = await exchange(new URL(`${apihost}${path}`), method, headers, payload));
  } catch (error) {
    throw new Error(`Cannot reach the Isola server at ${apihost}: ${error}. Is \`isola serve\` running?`);
  }
  let data: unknown = text;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: keep the text.
  }
  if (status >= 400) {
    const err = data as { error?: unknown; code?: string } | undefined;
    const message = typeof err?.error === 'string' ? err.error : `HTTP ${status}: ${text.slice(0, 200)}`;
    throw new ApiError(status, message, err?.code, data);
  }
  return { status, data: data as T };
}

/** A small client for the OpenWhisk API, used by the CLI and the benchmarks. */
export class IsolaClient {
  readonly apihost: string;
  private readonly authorization: string;

  constructor(options: ClientOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    const { apihost, auth, dataDir } = resolveConnection({
      flags: {
        ...(options.apihost ? { apihost: options.apihost } : {}),
        ...(options.auth ? { auth: options.auth } : {}),
        ...(options.dataDir ? { dataDir: options.dataDir } : {}),
      },
      env,
      ...(options.configFile ? { configFile: options.configFile } : {}),
    });
    this.apihost = apihost.value;
    if (!auth) {
      throw new Error(
        `No credentials: pass --auth uuid:key, set ISOLA_AUTH, save them with \`isola property set --auth uuid:key\`, ` +
          `or run where ${dataDir} holds the server's guest.auth.`,
      );
    }
    parseAuth(auth.value, `The credentials from ${auth.source}`);
    this.authorization = `Basic ${Buffer.from(auth.value).toString('base64')}`;
  }

  request<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; data: T }> {
    return send<T>(this.apihost, this.authorization, method, path, body);
  }

  static path(...parts: string[]): string {
    return parts.map((p) => encodeURIComponent(p)).join('/');
  }
}

/** A client for a server's admin API, with the operator token. */
export class AdminClient {
  constructor(
    readonly apihost: string,
    private readonly token: string,
  ) {}

  request<T = unknown>(method: string, path: string): Promise<{ status: number; data: T }> {
    return send<T>(this.apihost.replace(/\/$/, ''), `Bearer ${this.token}`, method, path);
  }
}
