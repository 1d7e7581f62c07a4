import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, sep } from 'node:path';
import { Option } from 'commander';
import { zipSync } from 'fflate';
import { ISOLATIONS } from '../../core/kinds.js';
import { execCodeOf, inferKind } from '../kind-inference.js';
import { pairs } from './common.js';

/** What `isola action create|update` and `isola dev` take to build an action's PUT body. */
export interface DeployOptions {
  kind?: string;
  main?: string;
  memory?: number;
  timeout?: number;
  concurrency?: number;
  logsize?: number;
  isolation?: string;
  param?: string[];
  annotation?: string[];
  web?: string;
  sequence?: string;
}

/** Never part of a zipped directory: version control's own files. */
const LEFT_OUT_OF_ZIPS = new Set(['.git']);

/** A directory's files as a zip with paths relative to it (node_modules kept: a Node.js zip runs from it). */
function zipDirectory(dir: string): Buffer {
  const tree: Record<string, Uint8Array> = {};
  const walk = (current: string) => {
    for (const entry of readdirSync(current, { withFileTypes: true })) {
      if (LEFT_OUT_OF_ZIPS.has(entry.name)) continue;
      const path = join(current, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.isFile()) tree[relative(dir, path).split(sep).join('/')] = readFileSync(path);
    }
  };
  walk(dir);
  if (Object.keys(tree).length === 0) throw new Error(`${dir} holds no files to deploy.`);
  return Buffer.from(zipSync(tree, { level: 6 }));
}

/**
 * The code at `path`: a file as it is, a directory zipped (its kind then read from what it holds,
 * as for a zip: package.json, __main__.py...).
 */
export function readCode(path: string): Buffer {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `${path} does not exist.` : `Cannot read ${path}: ${(error as Error).message}`);
  }
  return isDirectory ? zipDirectory(path) : readFileSync(path);
}

export function deployBody(file: string | undefined, options: DeployOptions) {
  let exec: Record<string, unknown> | undefined;
  if (file && options.sequence !== undefined) throw new Error('Give a file or --sequence, not both.');
  if (options.sequence !== undefined) {
    // As wsk: comma-separated actions, a bare name being in your own namespace.
    const components = options.sequence.split(',').map((c) => c.trim());
    if (components.some((c) => c === '')) throw new Error('--sequence takes action names separated by commas: a,b,/ns/c');
    exec = { kind: 'sequence', components: components.map((c) => (c.startsWith('/') ? c : `/_/${c}`)) };
  } else if (file) {
    const content = readCode(file);
    const kind = inferKind(file, content, options.kind);
    exec = { kind, ...execCodeOf(kind, content), ...(options.main ? { main: options.main } : {}) };
  }
  const limits: Record<string, number> = {};
  for (const key of ['memory', 'timeout', 'concurrency', 'logsize'] as const) {
    const value = options[key];
    if (value !== undefined) limits[key === 'logsize' ? 'logs' : key] = value;
  }
  const annotations = pairs(options.annotation, '--annotation');
  if (options.isolation) annotations.push({ key: 'isolation', value: options.isolation });
  if (options.web !== undefined) annotations.push({ key: 'web-export', value: options.web !== 'false' });
  const parameters = pairs(options.param, '--param');
  return {
    ...(exec ? { exec } : {}),
    ...(Object.keys(limits).length > 0 ? { limits } : {}),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(annotations.length > 0 ? { annotations } : {}),
  };
}

/** `-i, --isolation`, taking only the backends Isola has: for every command that deploys. */
export function isolationOption(): Option {
  return new Option('-i, --isolation <backend>', 'isolation backend').choices([...ISOLATIONS]);
}
