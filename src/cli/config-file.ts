import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { readGuestAuth, readServerInfo } from '../platform/credentials.js';

/** What `isola property set` keeps for the CLI, like `wsk property set`. */
export interface CliConfig {
  apihost?: string;
  auth?: string;
}

export const PROPERTIES = ['apihost', 'auth'] as const;
export type Property = (typeof PROPERTIES)[number];

/** `$XDG_CONFIG_HOME/isola/config.json`, else `~/.config/isola/config.json`. */
export function configPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME?.startsWith('/') ? env.XDG_CONFIG_HOME : join(homedir(), '.config');
  return join(base, 'isola', 'config.json');
}

export function readConfig(path: string): CliConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return {};
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`${path} is not valid JSON (${(error as Error).message}): fix it or remove it.`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw new Error(`${path} must hold a JSON object such as {"apihost": "...", "auth": "..."}.`);
  }
  const config: CliConfig = {};
  for (const key of PROPERTIES) {
    const value = (parsed as Record<string, unknown>)[key];
    if (value === undefined) continue;
    if (typeof value !== 'string') throw new Error(`${path}: "${key}" must be a string.`);
    config[key] = value;
  }
  return config;
}

/** Writes the file readable by its owner only: it holds credentials. */
export function writeConfig(path: string, config: CliConfig): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const temp = `${path}.${process.pid}.tmp`;
  writeFileSync(temp, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  chmodSync(temp, 0o600);
  renameSync(temp, path);
}

/** A value and where it came from, for `isola property get` and error messages. */
export interface Setting {
  value: string;
  source: string;
}

export interface ConnectionInputs {
  /** Given on the command line. */
  flags: { apihost?: string; auth?: string; dataDir?: string };
  /** The environment to read ISOLA_APIHOST, ISOLA_AUTH and ISOLA_DATA_DIR from; the process's by default. */
  env?: NodeJS.ProcessEnv;
  /** The config file's path; its contents are read here. */
  configFile?: string;
}

export const DEFAULT_APIHOST = 'http://127.0.0.1:3233';

/**
 * Where the CLI connects and with which credentials. Precedence, highest first: the flags
 * (--apihost, --auth), the environment (ISOLA_APIHOST, ISOLA_AUTH or ISOLA_GUEST_AUTH), the server
 * of a data dir named with --data-dir or ISOLA_DATA_DIR, the config file, the server of ./.isola
 * in the current directory, and last the default API host.
 */
export function resolveConnection({ flags, env = process.env, configFile }: ConnectionInputs): {
  apihost: Setting;
  auth: Setting | undefined;
  dataDir: string;
} {
  const named = flags.dataDir ?? (env.ISOLA_DATA_DIR || undefined);
  const dataDir = resolve(named ?? './.isola');
  const url = readServerInfo(dataDir)?.url;
  const guestAuth = readGuestAuth(dataDir);
  const fromDir = {
    apihost: url ? { value: url, source: `the server of ${dataDir}` } : undefined,
    auth: guestAuth ? { value: guestAuth, source: `${dataDir}/guest.auth` } : undefined,
  };
  const none = { apihost: undefined, auth: undefined };
  const namedDir = named ? fromDir : none;
  const cwdDir = named ? none : fromDir;
  const file = configFile ? readConfig(configFile) : {};
  const setting = (value: string | undefined, source: string): Setting | undefined => (value ? { value, source } : undefined);

  const apihost = setting(flags.apihost, '--apihost') ??
    setting(env.ISOLA_APIHOST, 'ISOLA_APIHOST') ??
    namedDir.apihost ??
    setting(file.apihost, configFile ?? '') ??
    cwdDir.apihost ?? { value: DEFAULT_APIHOST, source: 'default' };
  const auth =
    setting(flags.auth, '--auth') ??
    setting(env.ISOLA_AUTH, 'ISOLA_AUTH') ??
    setting(env.ISOLA_GUEST_AUTH, 'ISOLA_GUEST_AUTH') ??
    namedDir.auth ??
    setting(file.auth, configFile ?? '') ??
    cwdDir.auth;
  return { apihost: { ...apihost, value: apihost.value.replace(/\/$/, '') }, auth, dataDir };
}
