#!/usr/bin/env node
// Runs every test file (src/**/*.test.ts, test/**/*.test.ts) with Node's test runner, through tsx.
// Node 20's runner takes no globs, so the files are listed here. Pass paths or a name filter:
//   node scripts/run-tests.js [file-or-dir ...] [--test-name-pattern=...]
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

function collect(path) {
  if (statSync(path).isFile()) return path.endsWith('.test.ts') ? [path] : [];
  return readdirSync(path, { withFileTypes: true })
    .filter((entry) => entry.name !== 'node_modules' && !entry.name.startsWith('.'))
    .flatMap((entry) => collect(join(path, entry.name)));
}

const args = process.argv.slice(2);
const targets = args.filter((a) => !a.startsWith('--'));
const flags = args.filter((a) => a.startsWith('--'));
const files = (targets.length > 0 ? targets : ['src', 'test'].map((d) => join(root, d)))
  .flatMap(collect)
  .map((f) => relative(root, f))
  .sort();

const child = spawn(
  process.execPath,
  ['--no-node-snapshot', '--import', import.meta.resolve('tsx'), '--test', '--test-concurrency=2', ...flags, ...files],
  { cwd: root, stdio: 'inherit' },
);
child.on('exit', (code, signal) => process.exit(signal ? 1 : (code ?? 1)));
