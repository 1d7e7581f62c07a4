import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Kind } from '../core/kinds.js';

/**
 * The language runtimes the sandbox images can carry, taken from the host's Debian packages and
 * placed at the same absolute paths as on the host, so that one launcher command line serves the
 * process backend (which runs the host's interpreters) and every image.
 */
export const LANGUAGE_RUNTIMES = ['python', 'java', 'ruby', 'php'] as const;
export type LanguageRuntime = (typeof LANGUAGE_RUNTIMES)[number];

/**
 * The image a kind's sandboxes boot: node and the agent, plus the kind's runtime. Go and native
 * functions are static binaries, so they share the Node.js image.
 */
export type ImageName = 'nodejs' | LanguageRuntime;

const RUNTIME_OF_KIND: Partial<Record<Kind, LanguageRuntime>> = {
  'python:3': 'python',
  'java:17': 'java',
  'ruby:3.1': 'ruby',
  'php:8.2': 'php',
};

export function imageNameFor(kind: Kind | undefined): ImageName {
  return (kind && RUNTIME_OF_KIND[kind]) || 'nodejs';
}

/** The runtimes an image carries. */
export function runtimesOf(name: ImageName): LanguageRuntime[] {
  return name === 'nodejs' ? [] : [name];
}

/** What the host needs for a kind to run (and, for compiled kinds, to be compiled at deploy). */
const HOST_NEEDS: Partial<Record<Kind, string[]>> = {
  'python:3': ['/usr/bin/python3'],
  'java:17': ['/usr/bin/java', '/usr/bin/javac', '/usr/share/java/gson.jar'],
  'go:1.19': ['/usr/bin/go'],
  'ruby:3.1': ['/usr/bin/ruby'],
  'php:8.2': ['/usr/bin/php'],
};

/** Why this host cannot run (or build) a kind, or undefined when it can. */
export function missingForKind(kind: Kind, exists: (path: string) => boolean = existsSync): string | undefined {
  const missing = (HOST_NEEDS[kind] ?? []).filter((path) => !exists(path));
  if (missing.length === 0) return undefined;
  return `${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing: run \`isola setup languages\``;
}

/** Files of a runtime: what goes into an image, at the same path as on the host. */
export interface RuntimeLayout {
  /** Files or directories (walked) whose content goes in; symbolic links are followed. */
  paths: string[];
  /** Symbolic links made in the image: [link, target]. */
  links: [string, string][];
  /** Parts of the directories above that a function never needs (test suites, GUI libraries, sources). */
  exclude?: RegExp;
}

// Debian's PHP reads the system's time zone database (it warns at every start without one), and
// Python's zoneinfo and Ruby's Time read it too; Java brings its own (lib/tzdb.dat).
const TIME_ZONES = existsSync('/usr/share/zoneinfo') ? ['/usr/share/zoneinfo'] : [];

function existing(paths: string[]): string[] {
  return paths.filter((path) => existsSync(path));
}

/** Directories in `parent` whose names match. */
function dirsIn(parent: string, pattern: RegExp): string[] {
  try {
    return readdirSync(parent)
      .filter((entry) => pattern.test(entry))
      .map((entry) => join(parent, entry));
  } catch {
    return [];
  }
}

/**
 * Where a runtime lives on this host, found from its binary (`/usr/bin/python3` ->
 * `python3.11` -> `/usr/lib/python3.11`), or an error naming what is missing.
 */
export function runtimeLayout(runtime: LanguageRuntime): RuntimeLayout {
  const binary = { python: '/usr/bin/python3', java: '/usr/bin/java', ruby: '/usr/bin/ruby', php: '/usr/bin/php' }[runtime];
  if (!existsSync(binary)) throw new Error(`${binary} is missing: run \`isola setup languages\``);
  const real = realpathSync(binary);
  switch (runtime) {
    case 'python': {
      // python3.11
      const name = basename(real);
      return {
        paths: [real, `/usr/lib/${name}`, ...TIME_ZONES],
        links: [[binary, name]],
        exclude: /\/(test|tests|idle_test|__pycache__|ensurepip|idlelib|tkinter|turtledemo|config-[^/]*)(\/|$)/,
      };
    }
    case 'java': {
      // <home>/bin/java: the JVM finds its home from its own path.
      const home = dirname(dirname(real));
      return {
        paths: [real, join(home, 'lib'), join(home, 'conf'), join(home, 'release')],
        links: [[binary, real]],
        exclude:
          /\/(src\.zip|ct\.sym|libawt_xawt\.so|libatk-wrapper\.so|libjawt\.so|libsplashscreen\.so|libjsound\.so|jexec|jspawnhelper)$/,
      };
    }
    case 'ruby': {
      // ruby3.1 -> /usr/lib/ruby/3.1.0 and /usr/lib/<triplet>/ruby/3.1.0 (the native extensions)
      const version = `${basename(real).replace(/^ruby/, '')}.0`;
      const archDirs = dirsIn('/usr/lib', /-linux-gnu$/).map((dir) => join(dir, 'ruby', version));
      return {
        paths: existing([real, `/usr/lib/ruby/${version}`, ...archDirs, ...TIME_ZONES]),
        links: [[binary, basename(real)]],
      };
    }
    case 'php': {
      // php8.2 -> /etc/php/8.2/cli (php.ini, conf.d) and the extension directories /usr/lib/php/2*
      const version = basename(real).replace(/^php/, '');
      return {
        paths: existing([real, `/etc/php/${version}/cli`, ...dirsIn('/usr/lib/php', /^\d{8}$/), ...TIME_ZONES]),
        links: [[binary, basename(real)]],
      };
    }
  }
}

/**
 * A command that proves a runtime starts (and loads its standard library's JSON support), with
 * a JVM held to `memoryMb` as the Java launcher holds it: the template warm-up and the tests run it.
 */
export const RUNTIME_CHECKS: Record<LanguageRuntime, (memoryMb: number) => string[]> = {
  python: () => ['/usr/bin/python3', '-c', 'import json, random; print(json.dumps({"ok": True}))'],
  java: (memoryMb) => [
    '/usr/bin/java',
    `-XX:MaxRAM=${memoryMb}m`,
    '-XX:+UseSerialGC',
    '-XX:TieredStopAtLevel=1',
    '-Xshare:auto',
    '-version',
  ],
  ruby: () => ['/usr/bin/ruby', '--disable-gems', '-e', 'require "json"; puts JSON.generate({ok: true})'],
  php: () => ['/usr/bin/php', '-r', 'echo json_encode(["ok" => true]), "\n";'],
};
