import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { TestServer } from './server.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/** Runs the `isola` CLI from source (through tsx); resolves with its exit code and output. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
  const argv = ['--no-node-snapshot', '--import', 'tsx', MAIN, ...args];
  return new Promise((resolve) => {
    execFile(process.execPath, argv, { env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === 'number' ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

/** The CLI against a test server, with its URL and the guest's credentials. */
export function runCliAgainst(server: TestServer, args: string[]): Promise<CliRun> {
  return runCli(['--apihost', server.url, '--auth', server.auth, ...args]);
}
