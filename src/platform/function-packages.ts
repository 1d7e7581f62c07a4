import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { version as esbuildVersion } from 'esbuild';
import { badRequest } from '../core/errors.js';
import type { Kind } from '../core/kinds.js';
import type { Exec } from '../core/types.js';
import { MAX_FRAME_BYTES, type RuntimeStart } from '../guest/protocol.js';
import { buildFunction, GO, JAVAC, type PreparedFunction, runtimeStartOf } from './packages/builders.js';
import { type CompileLimits, DEFAULT_COMPILE_LIMITS, toolVersion } from './packages/compiler.js';

export type { PreparedFunction } from './packages/builders.js';

/** Bump when what a build produces changes, so that packages cached on disk are made again. */
const FORMAT = 2;

/** The launchers ship next to the guest agent (copied to dist/ by the build). */
export const LAUNCHERS_DIR = fileURLToPath(new URL('../guest/launchers/', import.meta.url));

/** The launcher files each kind's package holds: their text is part of the cache key. */
const LAUNCHER_FILES: Partial<Record<Kind, readonly string[]>> = {
  'python:3': ['launcher.py'],
  'java:17': ['IsolaLauncher.java'],
  'go:1.19': ['launcher.go'],
  'ruby:3.1': ['launcher.rb'],
  'php:8.2': ['launcher.php'],
};

/** A package travels to the guest in one init frame, with room for the rest of the frame. */
const MAX_PACKAGE_BASE64 = MAX_FRAME_BYTES - 4 * 2 ** 20;

export interface FunctionPackagesOptions {
  /** The server's data dir: packages are cached under `<dataDir>/packages`. */
  dataDir: string;
  launchersDir?: string;
  limits?: CompileLimits;
  /** Bytes of packages kept in memory (least recently used go first). */
  memoryBytes?: number;
}

/** What a function is built from: its name (messages, source maps) and exec. */
export interface PackageSource {
  name: string;
  exec: Exec;
}

/**
 * Turns an action's exec into what the guest runs (see PreparedFunction), once per content:
 * packages are cached on disk by a hash of everything that goes into them (kind, main, code, the
 * launcher's text and the compiler's version) and in memory, so that an invoke finds them made.
 * One whose cache entry is gone is made again from the stored source.
 */
export class FunctionPackages {
  private readonly dir: string;
  private readonly launchersDir: string;
  private readonly limits: CompileLimits;
  private readonly memoryBytes: number;
  /** Least recently used first (a Map keeps insertion order). */
  private readonly memory = new Map<string, { prepared: PreparedFunction; bytes: number }>();
  private memoryUsed = 0;
  private readonly building = new Map<string, Promise<PreparedFunction>>();
  /** The key of an exec already hashed: a stored action's exec is one object for its life in the cache. */
  private readonly keys = new WeakMap<Exec, string>();

  constructor(options: FunctionPackagesOptions) {
    this.dir = join(options.dataDir, 'packages');
    this.launchersDir = options.launchersDir ?? LAUNCHERS_DIR;
    this.limits = options.limits ?? DEFAULT_COMPILE_LIMITS;
    this.memoryBytes = options.memoryBytes ?? 256 * 2 ** 20;
  }

  /** Throws a 400 for what the caller sent (a zip refused, a compile error). */
  async prepare(source: PackageSource): Promise<PreparedFunction> {
    let key = this.keys.get(source.exec);
    if (!key) {
      key = await this.keyOf(source);
      this.keys.set(source.exec, key);
    }
    const cached = this.memory.get(key);
    if (cached) {
      this.memory.delete(key);
      this.memory.set(key, cached);
      return cached.prepared;
    }
    let pending = this.building.get(key);
    if (!pending) {
      pending = this.load(key, source).finally(() => this.building.delete(key));
      this.building.set(key, pending);
    }
    return pending;
  }

  /** What a blank sandbox of `kind` starts ahead of its function, if anything. */
  runtimeStart(kind: Kind): Promise<RuntimeStart | undefined> {
    return runtimeStartOf(kind, {
      name: kind,
      launchersDir: this.launchersDir,
      cacheDir: join(this.dir, 'tools'),
      limits: this.limits,
    });
  }

  private async load(key: string, source: PackageSource): Promise<PreparedFunction> {
    const file = join(this.dir, `${key}.json`);
    let prepared = await readFile(file, 'utf8').then(
      (text) => JSON.parse(text) as PreparedFunction,
      () => undefined,
    );
    if (!prepared) {
      await mkdir(this.dir, { recursive: true });
      prepared = await buildFunction(source.exec, {
        name: source.name,
        launchersDir: this.launchersDir,
        cacheDir: join(this.dir, 'tools'),
        limits: this.limits,
      });
      if (prepared.package && prepared.package.zip.length > MAX_PACKAGE_BASE64) {
        throw badRequest(
          `The function's package is ${Math.round(prepared.package.zip.length / 2 ** 20)} MB once encoded; at most ` +
            `${Math.floor(MAX_PACKAGE_BASE64 / 2 ** 20)} MB reach a sandbox.`,
        );
      }
      // Only what took work is kept on disk: plain CommonJS and wasm are used as stored.
      if (prepared.package || prepared.code !== undefined) {
        const temporary = `${file}.${process.pid}.${Date.now()}.tmp`;
        await writeFile(temporary, JSON.stringify(prepared));
        await rename(temporary, file);
      }
    }
    this.remember(key, prepared);
    return prepared;
  }

  private remember(key: string, prepared: PreparedFunction): void {
    const bytes = (prepared.package?.zip.length ?? 0) + (prepared.code?.length ?? 0) + 256;
    if (bytes > this.memoryBytes) return;
    this.memory.set(key, { prepared, bytes });
    this.memoryUsed += bytes;
    for (const [oldest, entry] of this.memory) {
      if (this.memoryUsed <= this.memoryBytes) break;
      this.memory.delete(oldest);
      this.memoryUsed -= entry.bytes;
    }
  }

  private async keyOf({ name, exec }: PackageSource): Promise<string> {
    const hash = createHash('sha256');
    hash.update(JSON.stringify([FORMAT, exec.kind, exec.main ?? null, exec.binary]));
    // The name is in a compiled source's messages and source map.
    if (exec.kind === 'nodejs:20' && !exec.binary) hash.update(`\0${name}\0${esbuildVersion}`);
    for (const file of LAUNCHER_FILES[exec.kind] ?? []) {
      hash.update(`\0${file}\0`);
      hash.update(await readFile(join(this.launchersDir, file)).catch(() => Buffer.alloc(0)));
    }
    if (exec.kind === 'java:17') hash.update(await toolVersion([JAVAC, '-version']));
    if (exec.kind === 'go:1.19') hash.update(await toolVersion([GO, 'version']));
    hash.update('\0');
    hash.update(exec.code);
    return hash.digest('hex');
  }
}
