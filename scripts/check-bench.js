#!/usr/bin/env node
// Type-checks the bench package (packages/bench has a tsconfig of its own, since its imports need
// its own dependencies); skipped, saying so, when the package is not installed.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { missingDependencies } from '../packages/bench/launch.js';

const missing = missingDependencies();
if (missing.length > 0) {
  process.stdout.write('check: the bench package is not installed (npm run bench:install): not type-checked\n');
  process.exit(0);
}
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const project = fileURLToPath(new URL('../packages/bench/tsconfig.json', import.meta.url));
const run = spawnSync(process.execPath, [tsc, '--noEmit', '-p', project], { stdio: 'inherit' });
process.exit(run.status ?? 1);
