import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newCredentials } from '../core/ids.js';

export const GUEST_NAMESPACE = 'guest';
export const GUEST_AUTH_FILE = 'guest.auth';
export const SERVER_FILE = 'server.json';

export interface Credentials {
  uuid: string;
  key: string;
}

export function parseAuth(auth: string): Credentials {
  const at = auth.indexOf(':');
  if (at <= 0 || at === auth.length - 1) throw new Error('Credentials must look like uuid:key.');
  return { uuid: auth.slice(0, at), key: auth.slice(at + 1) };
}

export function formatAuth(credentials: Credentials): string {
  return `${credentials.uuid}:${credentials.key}`;
}

/** Makes the data directory private to the server's user: sandboxes run as other users. */
export function ensureDataDir(dataDir: string): void {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  chmodSync(dataDir, 0o700);
}

/** The guest credentials saved in the data dir, generated on first use. */
export function loadOrCreateGuestAuth(dataDir: string): Credentials {
  const file = join(dataDir, GUEST_AUTH_FILE);
  if (existsSync(file)) return parseAuth(readFileSync(file, 'utf8').trim());
  const credentials = newCredentials();
  writeFileSync(file, `${formatAuth(credentials)}\n`, { mode: 0o600 });
  return credentials;
}

export function readGuestAuth(dataDir: string): string | undefined {
  const file = join(dataDir, GUEST_AUTH_FILE);
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : undefined;
}

export interface ServerInfo {
  url: string;
  pid: number;
}

export function writeServerInfo(dataDir: string, info: ServerInfo): void {
  writeFileSync(join(dataDir, SERVER_FILE), `${JSON.stringify(info)}\n`, { mode: 0o600 });
}

export function readServerInfo(dataDir: string): ServerInfo | undefined {
  try {
    return JSON.parse(readFileSync(join(dataDir, SERVER_FILE), 'utf8')) as ServerInfo;
  } catch {
    return undefined;
  }
}
