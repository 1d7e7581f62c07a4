import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { ApiError } from './client.js';
import { registerActionCommands } from './commands/action.js';
import { registerActivationCommands } from './commands/activation.js';
import { registerBenchCommand } from './commands/bench.js';
import { registerDoctorCommand } from './commands/doctor.js';
import { registerImagesCommands } from './commands/images.js';
import { registerNamespaceCommands } from './commands/namespace.js';
import { registerPropertyCommands } from './commands/property.js';
import { registerServeCommand } from './commands/serve.js';
import { registerSetupCommand } from './commands/setup.js';
import { registerSimulateCommand } from './commands/simulate.js';

const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('isola')
  .description('Isola: functions as a service under the isolation you choose')
  .addOption(
    new Option('--apihost <url>', 'API host of the server (default: the one in the data dir, or http://127.0.0.1:3233)').env(
      'ISOLA_APIHOST',
    ),
  )
  .addOption(new Option('--auth <uuid:key>', 'credentials (default: the guest credentials in the data dir)').env('ISOLA_AUTH'))
  .addOption(new Option('--data-dir <dir>', 'data directory').env('ISOLA_DATA_DIR'))
  .option('--json', 'print machine-readable JSON')
  .addHelpText('after', '\n`isola --version` (or -V) prints the version.')
  .showHelpAfterError();

// Handled before commander: a program-level --version option would also capture
// `isola action get <name> --version <version>`, since program options are recognised anywhere.
const args = process.argv.slice(2);
const commandAt = args.findIndex((arg) => !arg.startsWith('-'));
const beforeCommand = commandAt < 0 ? args : args.slice(0, commandAt);
if (beforeCommand.includes('--version') || beforeCommand.includes('-V')) {
  process.stdout.write(`${version}\n`);
  process.exit(0);
}

registerServeCommand(program);
registerDoctorCommand(program);
registerSetupCommand(program);
registerImagesCommands(program);
registerSimulateCommand(program);
registerBenchCommand(program);
registerActionCommands(program);
registerActivationCommands(program);
registerNamespaceCommands(program);
registerPropertyCommands(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  const json = program.opts<{ json?: boolean }>().json;
  if (json) {
    const body =
      error instanceof ApiError
        ? { error: error.message, status: error.status, code: error.code }
        : { error: String((error as Error).message ?? error) };
    process.stderr.write(`${JSON.stringify(body)}\n`);
  } else if (error instanceof ApiError) {
    process.stderr.write(`error: ${error.message}${error.code ? ` (code ${error.code})` : ''}\n`);
  } else if (error instanceof Error) {
    process.stderr.write(`error: ${error.message}\n`);
  } else {
    process.stderr.write(`error: ${String(error)}\n`);
  }
  process.exitCode = 1;
}
