#!/usr/bin/env node
// The `isola` command. It runs the TypeScript sources through tsx. Commands that create V8
// isolates re-execute Node.js with --no-node-snapshot, which isolated-vm needs on Node 20; the
// others run in this process so that they start quickly.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const main = new URL('../src/cli/main.ts', import.meta.url);
const NEEDS_ISOLATES = new Set(['serve', 'doctor', 'bench', 'images']);
const command = process.argv.slice(2).find((arg) => !arg.startsWith('-'));

if (NEEDS_ISOLATES.has(command ?? '') && !process.execArgv.includes('--no-node-snapshot')) {
  const args = ['--no-node-snapshot', '--import', import.meta.resolve('tsx'), fileURLToPath(main), ...process.argv.slice(2)];
  const child = spawn(process.execPath, args, { stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1)));
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import(main.href);
}
