#!/usr/bin/env node
// Runs Biome (format and lint) from the bench package, which carries the heavy development tools
// so that a user who only runs the platform does not download them; says how to get it if absent.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';

const root = new URL('..', import.meta.url);
let biome;
try {
  biome = createRequire(new URL('packages/bench/package.json', root)).resolve('@biomejs/biome/bin/biome');
} catch {
  process.stderr.write('Biome is not installed: it comes with the development tools, `npm run bench:install`.\n');
  process.exit(1);
}
const run = spawnSync(process.execPath, [biome, ...process.argv.slice(2)], { stdio: 'inherit' });
process.exit(run.status ?? 1);
