import { spawn } from 'node:child_process';
import { badRequest } from '../../core/errors.js';

/** How a compiler run on the host is bounded: the user's source is untrusted input to it. */
export interface CompileLimits {
  /** Wall-clock budget of one compiler run. */
  timeoutMs: number;
  /** Address space of the compiler (prlimit --as): a JVM or Go's toolchain fits in 3 GB. */
  addressSpaceBytes: number;
  /** Largest file the compiler may write (prlimit --fsize). */
  fileSizeBytes: number;
}

export const DEFAULT_COMPILE_LIMITS: CompileLimits = {
  timeoutMs: 120_000,
  addressSpaceBytes: 3 * 2 ** 30,
  fileSizeBytes: 256 * 2 ** 20,
};

/** Compiler output kept for the message: the first lines say what is wrong. */
const MAX_OUTPUT_BYTES = 64 * 1024;
/** What a 400 quotes of it. */
const QUOTED_CHARS = 4000;

/** At most two compilers at once: the host also runs functions. */
const MAX_CONCURRENT = 2;
let running = 0;
const queue: (() => void)[] = [];

async function slot<T>(work: () => Promise<T>): Promise<T> {
  if (running >= MAX_CONCURRENT) await new Promise<void>((resolve) => queue.push(resolve));
  running++;
  try {
    return await work();
  } finally {
    running--;
    queue.shift()?.();
  }
}

export interface CompilerRun {
  status: number | null;
  output: string;
  timedOut: boolean;
}

/**
 * Runs a compiler under prlimit with a clean environment (only what is given), in `cwd`, and
 * collects its output (bounded). Never runs a shell.
 */
export function runCompiler(
  argv: readonly string[],
  options: { cwd: string; env: Record<string, string>; limits: CompileLimits },
): Promise<CompilerRun> {
  const { limits } = options;
  return slot(
    () =>
      new Promise<CompilerRun>((resolve, reject) => {
        const child = spawn(
          '/usr/bin/prlimit',
          [`--as=${limits.addressSpaceBytes}`, `--fsize=${limits.fileSizeBytes}`, '--core=0', '--', ...argv],
          { cwd: options.cwd, env: options.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
        );
        let output = '';
        const collect = (chunk: Buffer) => {
          if (output.length < MAX_OUTPUT_BYTES) output += chunk.toString('utf8').slice(0, MAX_OUTPUT_BYTES - output.length);
        };
        child.stdout.on('data', collect);
        child.stderr.on('data', collect);
        let timedOut = false;
        const timer = setTimeout(() => {
          timedOut = true;
          // The whole group: go build runs compile and link as children of its own.
          if (child.pid) {
            try {
              process.kill(-child.pid, 'SIGKILL');
            } catch {
              child.kill('SIGKILL');
            }
          }
        }, limits.timeoutMs);
        child.on('error', (error) => {
          clearTimeout(timer);
          reject(error);
        });
        child.on('close', (status) => {
          clearTimeout(timer);
          resolve({ status, output, timedOut });
        });
      }),
  );
}

/** A 400 for a compiler that refused the source, quoting what it said (trimmed), or throws for a failed run. */
export function assertCompiled(what: string, run: CompilerRun, tidy: (output: string) => string = (o) => o): void {
  if (run.timedOut) throw badRequest(`${what} did not finish compiling within its time limit.`);
  if (run.status === 0) return;
  let quoted = tidy(run.output).trim();
  if (quoted.length > QUOTED_CHARS) quoted = `${quoted.slice(0, QUOTED_CHARS)}\n...`;
  throw badRequest(`${what} does not compile:\n${quoted || `the compiler exited with status ${run.status}`}`);
}

/** The first line a tool prints about its version, asked once. */
const versions = new Map<string, Promise<string>>();
export function toolVersion(argv: readonly string[]): Promise<string> {
  const key = argv.join(' ');
  let version = versions.get(key);
  if (!version) {
    version = new Promise<string>((resolve) => {
      const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.stderr.on('data', (chunk: Buffer) => {
        output += chunk.toString();
      });
      child.on('error', () => resolve('absent'));
      child.on('close', () => resolve(output.split('\n')[0]?.trim() ?? ''));
    });
    versions.set(key, version);
  }
  return version;
}
