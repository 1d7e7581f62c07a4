import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newCredentials } from '../core/ids.js';

export const GUEST_NAMESPACE = 'guest';
export const GUEST_AUTH_FILE = 'guest.auth';
export const SERVER_FILE = 'server.json';
export const ADMIN_TOKEN_FILE = 'admin.token';

export interface Credentials {
  uuid: string;
  key: string;
}

/** `uuid:key`; `source` names where the text came from, for the error. */
export function parseAuth(auth: string, source = 'Credentials'): Credentials {
  const at = auth.indexOf(':');
  if (at <= 0 || at === auth.length - 1) {
    const what = at < 0 ? 'has no colon' : at === 0 ? 'has no uuid before the colon' : 'has no key after the colon';
    throw new Error(
      `${source} must look like uuid:key (a namespace's credentials, as \`isola namespace create\` prints them); the value given ${what}.`,
    );
  }
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

/** The server that holds the data dir's lock: written by it alone, read by clients and by a second server. */
export interface ServerInfo {
  /** Absent while the server is starting. */
  url?: string;
  pid: number;
  /** The process's start time (see processStartTime): with the pid, it tells a live owner from a reused pid. */
  startTime?: string;
}

export function writeServerInfo(dataDir: string, info: ServerInfo): void {
  // Written aside and renamed into place, so that a reader never sees half of it.
  const file = join(dataDir, SERVER_FILE);
  const temp = `${file}.${process.pid}.tmp`;
  writeFileSync(temp, `${JSON.stringify(info)}\n`, { mode: 0o600 });
  renameSync(temp, file);
}

export function removeServerInfo(dataDir: string): void {
  rmSync(join(dataDir, SERVER_FILE), { force: true });
}

export function readServerInfo(dataDir: string): ServerInfo | undefined {
  try {
    return JSON.parse(readFileSync(join(dataDir, SERVER_FILE), 'utf8')) as ServerInfo;
  } catch {
    return undefined;
  }
}

/**
 * The operator's token, for /metrics and the admin API: ISOLA_ADMIN_TOKEN when set, else the one
 * saved in the data dir, generated on first use (mode 600, like guest.auth).
 */
export function loadOrCreateAdminToken(dataDir: string): string {
  const existing = readAdminToken(dataDir);
  if (existing) return existing;
  const token = randomBytes(32).toString('base64url');
  writeFileSync(join(dataDir, ADMIN_TOKEN_FILE), `${token}\n`, { mode: 0o600 });
  return token;
}

export function readAdminToken(dataDir: string): string | undefined {
  try {
    return readFileSync(join(dataDir, ADMIN_TOKEN_FILE), 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}

/** Compares a presented secret with the expected one in time that does not depend on where they differ. */
export function sameSecret(given: string, expected: string): boolean {
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(given), digest(expected));
}
