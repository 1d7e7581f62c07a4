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

/** One HTTP request to an Isola server, with its error shape turned into an ApiError. */
async function send<T>(
  apihost: string,
  authorization: string,
  method: string,
  path: string,
  body?: unknown,
): Promise<{ status: number; data: T }> {
  let response: Response;
  try {
    response = await fetch(`${apihost}${path}`, {
      method,
      headers: {
        authorization,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (error) {
    throw new Error(
      `Cannot reach the Isola server at ${apihost}: ${(error as Error).cause ?? (error as Error).message}. Is \`isola serve\` running?`,
    );
  }
  const text = await response.text();
  let data: unknown = text;
  try {
    data = text ? JSON.parse(text) : undefined;
  } catch {
    // Not JSON: keep the text.
  }
  if (response.status >= 400) {
    const err = data as { error?: unknown; code?: string } | undefined;
    const message = typeof err?.error === 'string' ? err.error : `HTTP ${response.status}: ${text.slice(0, 200)}`;
    throw new ApiError(response.status, message, err?.code, data);
  }
  return { status: response.status, data: data as T };
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
