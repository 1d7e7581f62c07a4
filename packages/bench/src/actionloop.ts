/**
 * A minimal host side of OpenWhisk's ActionLoop protocol, with no platform: spawn a runtime with a
 * FIFO as its fd 3 (a socketpair there breaks every runtime that opens /dev/fd/3), wait for its
 * `{"ok": true}`, send one request line, read the result line. What the languages dimension's
 * bare peers are timed with.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeFifo } from '../../../src/guest/action-loop.js';

export interface ActionLoopCommand {
  command: string;
  args: string[];
  cwd: string;
  /** The whole environment (nothing of ours is inherited: no NODE_OPTIONS, no CA bundle). */
  env?: Record<string, string>;
}

export interface ActionLoopStart {
  /** Spawn to the runtime's ack (the function is loaded). */
  ackMs: number;
  /** Spawn to the first result. */
  resultMs: number;
  result: unknown;
}

/** One activation's request line, as OpenWhisk's proxy writes it. */
export function requestLine(params: Record<string, unknown>, activationId = 'bench'): string {
  return `${JSON.stringify({
    value: params,
    namespace: '_',
    action_name: '/_/bench',
    action_version: '0.0.1',
    activation_id: activationId,
    deadline: String(Date.now() + 120_000),
    api_host: '',
  })}\n`;
}

/** A FIFO for fd 3, made the way the agent makes its launchers' (in a directory of its own, removed after). */
function fifo(): { dir: string; readFd: number; writeFd: number } {
  const dir = mkdtempSync(join(tmpdir(), 'isola-actionloop-'));
  const made = makeFifo(dir);
  if (!made) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error('mkfifo is not installed');
  }
  return { dir, readFd: made.read, writeFd: made.write };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/**
 * Starts the runtime, times it to its ack and to the result of one request, and stops it. Rejects
 * with the runtime's stderr when it exits or sends something that is not JSON.
 */
export async function actionLoopStart(
  run: ActionLoopCommand,
  params: Record<string, unknown>,
  timeoutMs = 120_000,
): Promise<ActionLoopStart> {
  const pipe = fifo();
  let child: ChildProcess | undefined;
  const lines = new Socket({ fd: pipe.readFd, readable: true, writable: false });
  try {
    const started = performance.now();
    child = spawn(run.command, run.args, {
      cwd: run.cwd,
      env: { PATH: '/usr/bin:/bin', LANG: 'C.UTF-8', ...run.env, __OW_WAIT_FOR_ACK: '1' },
      stdio: ['pipe', 'ignore', 'pipe', pipe.writeFd],
    });
    closeSync(pipe.writeFd);
    pipe.writeFd = -1;
    const spawned = child;
    let stderr = '';
    spawned.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-4000);
    });
    spawned.stdin?.on('error', () => {
      // it exited; the exit handler says so
    });
    return await new Promise<ActionLoopStart>((resolve, reject) => {
      let buffered = '';
      let ackMs: number | undefined;
      const fail = (message: string) => {
        clearTimeout(timer);
        reject(new Error(`${message}${stderr ? `: ${stderr.trim().slice(-1500)}` : ''}`));
      };
      const timer = setTimeout(() => fail(`no result within ${timeoutMs} ms`), timeoutMs);
      spawned.once('error', (error) => fail(`${run.command} did not start (${error.message})`));
      spawned.once('exit', (code, signal) => fail(`${run.command} exited (${signal ?? code}) before answering`));
      lines.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        for (let end = buffered.indexOf('\n'); end >= 0; end = buffered.indexOf('\n')) {
          const line = buffered.slice(0, end);
          buffered = buffered.slice(end + 1);
          const now = performance.now() - started;
          let message: unknown;
          try {
            message = JSON.parse(line);
          } catch {
            return fail(`the runtime wrote a line on fd 3 that is not JSON (${line.slice(0, 200)})`);
          }
          if (ackMs === undefined) {
            ackMs = now;
            spawned.stdin?.write(requestLine(params));
            continue;
          }
          clearTimeout(timer);
          spawned.removeAllListeners('exit');
          return resolve({ ackMs, resultMs: now, result: message });
        }
      });
    });
  } finally {
    lines.destroy();
    if (pipe.writeFd >= 0) closeSync(pipe.writeFd);
    if (child) await stop(child);
    rmSync(pipe.dir, { recursive: true, force: true });
  }
}
