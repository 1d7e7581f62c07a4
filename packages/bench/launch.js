#!/usr/bin/env node
// Runs one of the bench package's TypeScript entry points (through tsx, from the repository's
// sources), or says how to install the package when its dependencies are not there. Plain
// JavaScript with no dependencies, so that it works before `npm run bench:install`.
//   node packages/bench/launch.js <entry.ts relative to packages/bench> [args...]
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

const here = new URL('.', import.meta.url);
const manifest = JSON.parse(readFileSync(new URL('package.json', here), 'utf8'));

/** Whether Node.js would find a package from this folder: in its node_modules or a parent's. */
function findable(name) {
  for (let dir = here; ; dir = new URL('..', dir)) {
    if (existsSync(new URL(`node_modules/${name}/package.json`, dir))) return true;
    if (dir.pathname === '/') return false;
  }
}

/** The bench package's dependencies that cannot be found from it: all of them before its install. */
export function missingDependencies() {
  return Object.keys(manifest.dependencies).filter((name) => !name.startsWith('@types/') && !findable(name));
}

export const NOT_INSTALLED = (missing) =>
  `the benchmark harness is not installed: run \`npm run bench:install\` in ${fileURLToPath(new URL('../..', here))} ` +
  `(missing: ${missing.join(', ')})`;

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const [entry, ...args] = process.argv.slice(2);
  if (!entry) {
    process.stderr.write('usage: node packages/bench/launch.js <entry.ts> [args...]\n');
    process.exit(2);
  }
  const missing = missingDependencies();
  if (missing.length > 0) {
    process.stderr.write(`${NOT_INSTALLED(missing)}\n`);
    process.exit(1);
  }
  // isolated-vm needs --no-node-snapshot on Node 20; tsx comes with the repository's own install.
  const child = spawn(
    process.execPath,
    ['--no-node-snapshot', '--import', import.meta.resolve('tsx'), fileURLToPath(new URL(entry, here)), ...args],
    { stdio: 'inherit' },
  );
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
  child.on('exit', (code, signal) => process.exit(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1)));
}
