import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';

const LAUNCHER = fileURLToPath(new URL('../../../packages/bench/launch.js', import.meta.url));

/**
 * `isola bench` lives in its own package (packages/bench) that only those who evaluate Isola
 * install: this hands the whole command line to it, or its launcher says how to install it.
 */
export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description(
      'measure every backend this host supports side by side, with peers and an escape battery; writes a report ' +
        '(needs the benchmark harness: npm run bench:install; `isola bench --help` once installed)',
    )
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .argument('[args...]')
    .action(async () => {
      const code = await new Promise<number>((resolve) => {
        const child = spawn(process.execPath, [LAUNCHER, 'src/main.ts', ...process.argv.slice(2)], { stdio: 'inherit' });
        for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => child.kill(signal));
        child.on('exit', (exitCode, signal) => resolve(signal ? 128 + (constants.signals[signal] ?? 0) : (exitCode ?? 1)));
        child.on('error', () => resolve(1));
      });
      process.exitCode = code;
    });
}
