#!/usr/bin/env node
// The `isola` command: runs the platform compiled to dist/ (`npm install` builds it; `npm run
// build` again after changing src/). Commands that create V8 isolates re-execute Node.js with
// --no-node-snapshot, which isolated-vm needs on Node 20; the others run in this process so that
// they answer at once.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const main = new URL('../dist/cli/main.js', import.meta.url);
const NEEDS_ISOLATES = new Set(['serve', 'doctor', 'images']);
const command = process.argv.slice(2).find((arg) => !arg.startsWith('-'));

if (!existsSync(main)) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  process.stderr.write(`isola is not built: run \`npm run build\` (or \`npm install\`) in ${root}\n`);
  process.exit(1);
}

if (NEEDS_ISOLATES.has(command ?? '') && !process.execArgv.includes('--no-node-snapshot')) {
  const args = ['--no-node-snapshot', ...process.execArgv, fileURLToPath(main), ...process.argv.slice(2)];
  const child = spawn(process.execPath, args, { stdio: 'inherit' });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1)));
} else {
  await import(main.href);
}
