import { type Command, InvalidArgumentError } from 'commander';
import { IsolaClient } from '../client.js';
import { configPath } from '../config-file.js';

export interface GlobalOptions {
  apihost?: string;
  auth?: string;
  dataDir?: string;
  json?: boolean;
}

export function globals(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

/** The global options given on the command line itself: commander also fills them from the environment. */
export function commandLineGlobals(command: Command): { apihost?: string; auth?: string; dataDir?: string } {
  const options = globals(command);
  const given = (name: 'apihost' | 'auth' | 'dataDir') =>
    command.getOptionValueSourceWithGlobals(name) === 'cli' && options[name] ? { [name]: options[name] } : {};
  return { ...given('apihost'), ...given('auth'), ...given('dataDir') };
}

/** A client for the server the flags, the environment or the config file name (see resolveConnection). */
export function clientFor(command: Command): IsolaClient {
  return new IsolaClient({ ...commandLineGlobals(command), configFile: configPath() });
}

/**
 * A parser for a whole-number option: commander reports a bad value as "option '<flags>' argument
 * '<value>' is invalid." followed by this reason, so the message names the option.
 */
export function wholeNumber(min: number, max = Number.MAX_SAFE_INTEGER, unit = ''): (text: string) => number {
  return (text: string) => {
    const value = /^\s*-?\d+\s*$/.test(text) ? Number(text) : Number.NaN;
    if (!Number.isSafeInteger(value) || value < min || value > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
      throw new InvalidArgumentError(`It must be a whole number ${range}${unit ? ` (${unit})` : ''}.`);
    }
    return value;
  };
}

/** `-p key value` pairs as wsk takes them: values that parse as JSON are JSON, others strings. */
export function pairs(flat: string[] | undefined, flag: string): { key: string; value: unknown }[] {
  if (!flat || flat.length === 0) return [];
  if (flat.length % 2 !== 0) throw new Error(`${flag} takes a key and a value each time: ${flag} key value`);
  const result: { key: string; value: unknown }[] = [];
  for (let i = 0; i < flat.length; i += 2) {
    const key = flat[i] as string;
    const raw = flat[i + 1] as string;
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // A plain string.
    }
    result.push({ key, value });
  }
  return result;
}

/**
 * The path of an action as `wsk` names it: `name`, `package/name`, or `/namespace/[package/]name`
 * for another namespace's (a shared package's actions, the `/whisk.system` catalogue).
 */
export function actionPath(reference: string): string {
  const parts = reference.startsWith('/') ? reference.slice(1).split('/') : ['_', ...reference.split('/')];
  const [namespace = '_', ...name] = parts;
  return `/api/v1/namespaces/${IsolaClient.path(namespace)}/actions/${name.map((p) => IsolaClient.path(p)).join('/')}`;
}
