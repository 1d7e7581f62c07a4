import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';

const SCRIPT = fileURLToPath(new URL('../../../scripts/setup-host.sh', import.meta.url));

export function registerSetupCommand(program: Command): void {
  program
    .command('setup [groups...]')
    .description(
      'install the Debian packages the backends need (groups: base, containers, microvm, kernel, wasm, browser, postgres, nats, languages, all; default all)',
    )
    .action(async (groups: string[]) => {
      const code = await new Promise<number>((resolve) => {
        const child = spawn('bash', [SCRIPT, ...groups], { stdio: 'inherit' });
        child.on('exit', (exitCode) => resolve(exitCode ?? 1));
        child.on('error', () => resolve(1));
      });
      if (code !== 0) throw new Error(`setup failed (exit code ${code})`);
    });
}
