/**
 * The languages dimension's functions: `hello` and the `graph` workload in every kind the platform
 * runs, written as each kind expects (functions/languages/<language>/), with the same input and
 * the same output; and the bare peers that start the same function with no platform.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Kind } from '../../../src/core/kinds.js';
import type { ActionLoopCommand } from './actionloop.js';
import { GRAPH_JS, HELLO_JS } from './workloads.js';

export const LANGUAGE_KINDS = ['nodejs:20', 'python:3', 'java:17', 'go:1.19', 'ruby:3.1', 'php:8.2', 'native'] as const;
export type LanguageKind = (typeof LANGUAGE_KINDS)[number] & Kind;

export const LANGUAGE_WORKLOADS = ['hello', 'graph'] as const;
export type LanguageWorkload = (typeof LANGUAGE_WORKLOADS)[number];

/** The same parameters as the JavaScript workloads of the same name. */
export const LANGUAGE_PARAMS: Record<LanguageWorkload, Record<string, unknown>> = {
  hello: { name: 'bench' },
  graph: { seed: 7, nodes: 5000, edges: 20000, iterations: 10 },
};

export const LANGUAGE_DESCRIPTIONS: Record<LanguageWorkload, string> = {
  hello: 'returns a greeting',
  graph: 'BFS and 10 PageRank iterations on 5,000 nodes and 20,000 edges (the graph workload, ported)',
};

const FUNCTIONS = fileURLToPath(new URL('../functions/languages/', import.meta.url));
const GSON = '/usr/share/java/gson.jar';

/** The JVM flags the platform's java:17 command uses, so that the bare peer starts the JVM alike. */
export const JVM_FLAGS = (memoryMb: number) => [
  `-XX:MaxRAM=${memoryMb}m`,
  '-XX:+UseSerialGC',
  '-XX:TieredStopAtLevel=1',
  '-Xshare:auto',
];

/** A kind's name in ISOLA_PREWARM (`process:python:1`). */
export const prewarmToken = (kind: LanguageKind): string => kind.split(':')[0] as string;

interface Layout {
  /** Directory under functions/languages. */
  dir: string;
  file: (workload: LanguageWorkload) => string;
  /** exec.main, where the kind needs one. */
  main?: (workload: LanguageWorkload) => string;
}

const capitalised = (workload: LanguageWorkload) => `${workload[0]?.toUpperCase()}${workload.slice(1)}`;

const LAYOUTS: Record<Exclude<LanguageKind, 'nodejs:20'>, Layout> = {
  'python:3': { dir: 'python', file: (w) => `${w}.py` },
  'java:17': { dir: 'java', file: (w) => `${capitalised(w)}.java`, main: capitalised },
  'go:1.19': { dir: 'go', file: (w) => `${w}.go` },
  'ruby:3.1': { dir: 'ruby', file: (w) => `${w}.rb` },
  'php:8.2': { dir: 'php', file: (w) => `${w}.php` },
  native: { dir: 'native', file: (w) => `${w}.c` },
};

/** Where a kind's source of a workload is (JavaScript's are the harness's own workloads). */
export function sourcePath(kind: Exclude<LanguageKind, 'nodejs:20'>, workload: LanguageWorkload): string {
  const layout = LAYOUTS[kind];
  return join(FUNCTIONS, layout.dir, layout.file(workload));
}

/** The function's source as a user would deploy it. */
export function functionSource(kind: LanguageKind, workload: LanguageWorkload): string {
  if (kind === 'nodejs:20') return workload === 'hello' ? HELLO_JS : GRAPH_JS;
  return readFileSync(sourcePath(kind, workload), 'utf8');
}

function hashOf(...parts: string[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part).update('\0');
  return hash.digest('hex').slice(0, 16);
}

/** Builds into `<cacheDir>/<name>-<hash>` once: `make` fills a scratch directory, renamed when done. */
function cached(cacheDir: string, name: string, hash: string, make: (dir: string) => void): string {
  const dir = join(cacheDir, `${name}-${hash}`);
  if (existsSync(dir)) return dir;
  const scratch = `${dir}.${process.pid}.tmp`;
  rmSync(scratch, { recursive: true, force: true });
  mkdirSync(scratch, { recursive: true });
  try {
    make(scratch);
    renameSync(scratch, dir);
  } catch (error) {
    rmSync(scratch, { recursive: true, force: true });
    throw error;
  }
  return dir;
}

/** The native function, compiled with gcc (static, so that it needs nothing from an image). */
export function buildNative(workload: LanguageWorkload, cacheDir: string): string {
  const source = readFileSync(sourcePath('native', workload), 'utf8');
  const header = readFileSync(join(FUNCTIONS, 'native', 'actionloop.h'), 'utf8');
  const dir = cached(cacheDir, `native-${workload}`, hashOf(source, header), (scratch) => {
    execFileSync('gcc', ['-O2', '-static', '-o', join(scratch, 'exec'), sourcePath('native', workload), '-lm'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
  });
  return join(dir, 'exec');
}

/**
 * What `PUT /actions/<name>` gets as `exec`: the source (compiled at deploy by the platform) or,
 * for native, the ELF. JavaScript gets `tag` as a comment, so that no cache keyed by content (V8's
 * code cache) makes one cold start cheaper than a user's first; the other kinds are deployed as
 * they are, so that the deploy's package cache (keyed by content) compiles each source once: what
 * a sandbox starts from is the same package either way.
 */
export function execFor(
  kind: LanguageKind,
  workload: LanguageWorkload,
  tag: string,
  cacheDir: string,
): { kind: LanguageKind; code: string; binary?: boolean; main?: string } {
  if (kind === 'native') return { kind, code: readFileSync(buildNative(workload, cacheDir)).toString('base64'), binary: true };
  if (kind === 'nodejs:20') return { kind, code: `${functionSource(kind, workload)}\n// ${tag}\n` };
  const main = LAYOUTS[kind].main?.(workload);
  return { kind, code: functionSource(kind, workload), ...(main ? { main } : {}) };
}

export interface LanguagePeer {
  kind: LanguageKind;
  /** `bare python3`, ... */
  name: string;
  description: string;
  /** Builds what the peer needs (outside the timings) and returns how to start it. */
  prepare(workload: LanguageWorkload, cacheDir: string, memoryMb: number): ActionLoopCommand;
}

const PEERS_DIR = join(FUNCTIONS, 'peers');

/** A directory with the peer's launcher and the function beside it. */
function launcherDir(
  cacheDir: string,
  name: string,
  launcher: string,
  functionFile: string,
  functionText: string,
  build?: (dir: string) => void,
): string {
  const launcherText = readFileSync(join(PEERS_DIR, launcher), 'utf8');
  return cached(cacheDir, name, hashOf(launcherText, functionText, functionFile), (dir) => {
    copyFileSync(join(PEERS_DIR, launcher), join(dir, launcher));
    writeFileSync(join(dir, functionFile), functionText);
    build?.(dir);
  });
}

export const LANGUAGE_PEERS: LanguagePeer[] = [
  {
    kind: 'nodejs:20',
    name: 'bare node',
    description: "node (the server's binary) loading the function beside a minimal ActionLoop loop, no platform",
    prepare: (workload, cacheDir) => ({
      command: process.execPath,
      args: ['launcher.js', 'function.js'],
      cwd: launcherDir(
        cacheDir,
        `peer-node-${workload}`,
        'launcher.js',
        'function.js',
        `${functionSource('nodejs:20', workload)}\nmodule.exports.main = main;\n`,
      ),
    }),
  },
  {
    kind: 'python:3',
    name: 'bare python3',
    description: '/usr/bin/python3 loading the function beside a minimal ActionLoop loop, no platform',
    prepare: (workload, cacheDir) => ({
      command: '/usr/bin/python3',
      args: ['launcher.py', 'function.py'],
      cwd: launcherDir(cacheDir, `peer-python-${workload}`, 'launcher.py', 'function.py', functionSource('python:3', workload)),
    }),
  },
  {
    kind: 'java:17',
    name: 'bare java',
    description: "/usr/bin/java with the platform's JVM flags and a jar of the same class (javac here), no platform",
    prepare: (workload, cacheDir, memoryMb) => {
      const file = LAYOUTS['java:17'].file(workload);
      const cwd = launcherDir(
        cacheDir,
        `peer-java-${workload}`,
        'BenchLauncher.java',
        file,
        functionSource('java:17', workload),
        (dir) => {
          mkdirSync(join(dir, 'classes'));
          execFileSync('javac', ['-cp', GSON, '-d', 'classes', file, 'BenchLauncher.java'], {
            cwd: dir,
            stdio: ['ignore', 'ignore', 'pipe'],
          });
          execFileSync('jar', ['cf', 'function.jar', '-C', 'classes', '.'], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
          copyFileSync(GSON, join(dir, 'gson.jar'));
        },
      );
      return {
        command: '/usr/bin/java',
        args: [...JVM_FLAGS(memoryMb), '-cp', 'gson.jar:function.jar', 'BenchLauncher', capitalised(workload)],
        cwd,
      };
    },
  },
  {
    kind: 'go:1.19',
    name: 'bare Go binary',
    description: 'the function built with a minimal ActionLoop loop into a static binary (go build here), no platform',
    prepare: (workload, cacheDir) => ({
      command: './exec',
      args: [],
      cwd: launcherDir(
        cacheDir,
        `peer-go-${workload}`,
        'launcher.go',
        'function.go',
        functionSource('go:1.19', workload),
        (dir) => {
          writeFileSync(join(dir, 'go.mod'), 'module bench\n\ngo 1.19\n');
          execFileSync('go', ['build', '-o', 'exec', '.'], {
            cwd: dir,
            stdio: ['ignore', 'ignore', 'pipe'],
            env: {
              PATH: '/usr/bin:/bin',
              HOME: dir,
              CGO_ENABLED: '0',
              GOFLAGS: '-mod=mod',
              GOPROXY: 'off',
              GOCACHE: join(cacheDir, 'go-cache'),
              GOPATH: join(cacheDir, 'go-path'),
            },
          });
        },
      ),
    }),
  },
  {
    kind: 'ruby:3.1',
    name: 'bare ruby',
    description: '/usr/bin/ruby --disable-gems loading the function beside a minimal ActionLoop loop, no platform',
    prepare: (workload, cacheDir) => ({
      command: '/usr/bin/ruby',
      args: ['--disable-gems', 'launcher.rb', 'function.rb'],
      cwd: launcherDir(cacheDir, `peer-ruby-${workload}`, 'launcher.rb', 'function.rb', functionSource('ruby:3.1', workload)),
    }),
  },
  {
    kind: 'php:8.2',
    name: 'bare php',
    description: '/usr/bin/php loading the function beside a minimal ActionLoop loop, no platform',
    prepare: (workload, cacheDir) => ({
      command: '/usr/bin/php',
      args: ['launcher.php', 'function.php'],
      cwd: launcherDir(cacheDir, `peer-php-${workload}`, 'launcher.php', 'function.php', functionSource('php:8.2', workload)),
    }),
  },
  {
    kind: 'native',
    name: 'bare native binary',
    description: 'the same static ELF the platform runs (gcc here), spawned directly, no platform',
    prepare: (workload, cacheDir) => {
      const elf = buildNative(workload, cacheDir);
      return { command: elf, args: [], cwd: join(elf, '..') };
    },
  },
];

/** Which of two results of the same workload agree: the same JSON values, key order aside. */
export function sameResult(a: unknown, b: unknown): boolean {
  if (typeof a === 'number' && typeof b === 'number') return a === b;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameResult(x, b[i]));
  if (a && b && typeof a === 'object' && typeof b === 'object') {
    const ka = Object.keys(a).sort();
    const kb = Object.keys(b).sort();
    return (
      sameResult(ka, kb) && ka.every((k) => sameResult((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
    );
  }
  return a === b;
}
