#!/usr/bin/env node
// Runs every test file (src/**/*.test.ts, test/**/*.test.ts, and packages/bench/test/**/*.test.ts
// when the bench package is installed) with Node's test runner, through tsx. The servers the tests
// start run the built platform (dist/), which this builds first (incrementally: seconds). Node 20's runner takes no
// globs, so the files are listed here. Pass paths or a name filter, or --no-build to run on the
// dist/ there is:
//   node scripts/run-tests.js [file-or-dir ...] [--test-name-pattern=...] [--no-build]
import { spawn, spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { missingDependencies } from '../packages/bench/launch.js';

const root = fileURLToPath(new URL('..', import.meta.url));

function collect(path) {
  if (statSync(path).isFile()) return path.endsWith('.test.ts') ? [path] : [];
  return readdirSync(path, { withFileTypes: true })
    .filter((entry) => entry.name !== 'node_modules' && !entry.name.startsWith('.'))
    .flatMap((entry) => collect(join(path, entry.name)));
}

const args = process.argv.slice(2);
const targets = args.filter((a) => !a.startsWith('--'));
const build = !args.includes('--no-build');
const flags = args.filter((a) => a.startsWith('--') && a !== '--no-build');
const benchMissing = missingDependencies();
const dirs = ['src', 'test', ...(benchMissing.length === 0 ? ['packages/bench/test'] : [])];
if (targets.length === 0 && benchMissing.length > 0) {
  process.stdout.write('note: the bench package is not installed (npm run bench:install): its tests are not run\n');
}
const files = (targets.length > 0 ? targets : dirs.map((d) => join(root, d)))
  .flatMap(collect)
  .map((f) => relative(root, f))
  .sort();

if (build) {
  const built = spawnSync(process.execPath, [join(root, 'scripts/build.js')], { stdio: 'inherit' });
  if (built.status !== 0) process.exit(built.status ?? 1);
}

const child = spawn(
  process.execPath,
  // A test that hangs fails after 30 minutes instead of holding the whole run until CI gives up (the
  // evaluation harness's end-to-end run takes over 15 beside the microVM suites on two cores).
  [
    '--no-node-snapshot',
    '--import',
    import.meta.resolve('tsx'),
    '--test',
    '--test-concurrency=2',
    '--test-timeout=1800000',
    ...flags,
    ...files,
  ],
  // In a terminal Node's runner writes its spec report, which ends with the failing tests; elsewhere
  // (CI) it writes TAP, which this reads to do the same.
  { cwd: root, stdio: ['inherit', process.stdout.isTTY ? 'inherit' : 'pipe', 'inherit'] },
);

// The report of a whole run is long and CI logs are often seen only by their end, so every failure
// (its TAP line and its YAML block: the error and the stack) is repeated after the totals.
const failures = [];
let failure = null;
let pending = '';
function scan(line) {
  if (failure) {
    if (failure.lines.length < 60) failure.lines.push(line);
    if (line.trim() === '...') failure = null;
    return;
  }
  if (/^\s*not ok \d+ /.test(line)) {
    failure = { lines: [line] };
    failures.push(failure);
  }
}
child.stdout?.on('data', (chunk) => {
  process.stdout.write(chunk);
  const lines = (pending + chunk.toString('utf8')).split('\n');
  pending = lines.pop() ?? '';
  for (const line of lines) scan(line);
});
child.on('close', (code, signal) => {
  if (pending) scan(pending);
  if (failures.length > 0) {
    process.stdout.write(`\n# ${failures.length} failed (tests and the suites around them):\n`);
    for (const { lines } of failures) process.stdout.write(`${lines.join('\n')}\n`);
  }
  process.exit(signal ? 1 : (code ?? 1));
});
