import { resolve } from 'node:path';
import { readGuestAuth, readServerInfo } from '../platform/credentials.js';

export interface ClientOptions {
  apihost?: string;
  auth?: string;
  dataDir?: string;
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

/** A small client for the OpenWhisk API, used by the CLI and the benchmarks. */
export class IsolaClient {
  readonly apihost: string;
  private readonly authorization: string;

  constructor(options: ClientOptions = {}, env: NodeJS.ProcessEnv = process.env) {
    const dataDir = resolve(options.dataDir ?? env.ISOLA_DATA_DIR ?? './.isola');
    this.apihost = (options.apihost ?? env.ISOLA_APIHOST ?? readServerInfo(dataDir)?.url ?? 'http://127.0.0.1:3233').replace(
      /\/$/,
      '',
    );
    const auth = options.auth ?? env.ISOLA_AUTH ?? env.ISOLA_GUEST_AUTH ?? readGuestAuth(dataDir);
    if (!auth) {
      throw new Error(
        `No credentials: pass --auth uuid:key, set ISOLA_AUTH, or run where ${dataDir} holds the server's guest.auth.`,
      );
    }
    this.authorization = `Basic ${Buffer.from(auth).toString('base64')}`;
  }

  async request<T = unknown>(method: string, path: string, body?: unknown): Promise<{ status: number; data: T }> {
    let response: Response;
    try {
      response = await fetch(`${this.apihost}${path}`, {
        method,
        headers: {
          authorization: this.authorization,
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
    } catch (error) {
      throw new Error(
        `Cannot reach the Isola server at ${this.apihost}: ${(error as Error).cause ?? (error as Error).message}. Is \`isola serve\` running?`,
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

  static path(...parts: string[]): string {
    return parts.map((p) => encodeURIComponent(p)).join('/');
  }
}
