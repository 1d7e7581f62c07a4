import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { ApiError } from './client.js';

type Register = (program: Command) => void;

/**
 * Each command's module, loaded only when that command runs (all of them for the help): a
 * client command loads neither the server nor the other commands, and answers at once.
 */
const COMMANDS: Record<string, () => Promise<Register>> = {
  serve: async () => (await import('./commands/serve.js')).registerServeCommand,
  doctor: async () => (await import('./commands/doctor.js')).registerDoctorCommand,
  setup: async () => (await import('./commands/setup.js')).registerSetupCommand,
  images: async () => (await import('./commands/images.js')).registerImagesCommands,
  simulate: async () => (await import('./commands/simulate.js')).registerSimulateCommand,
  bench: async () => (await import('./commands/bench.js')).registerBenchCommand,
  action: async () => (await import('./commands/action.js')).registerActionCommands,
  activation: async () => (await import('./commands/activation.js')).registerActivationCommands,
  dev: async () => (await import('./commands/dev.js')).registerDevCommand,
  namespace: async () => (await import('./commands/namespace.js')).registerNamespaceCommands,
  property: async () => (await import('./commands/property.js')).registerPropertyCommands,
  trigger: async () => (await import('./commands/trigger.js')).registerTriggerCommands,
  rule: async () => (await import('./commands/rule.js')).registerRuleCommands,
  package: async () => (await import('./commands/package.js')).registerPackageCommands,
  api: async () => (await import('./commands/api.js')).registerApiCommands,
  cluster: async () => (await import('./commands/cluster.js')).registerClusterCommands,
};
/** The program's options that take a value: what follows them is not the command's name. */
const TAKES_VALUE = new Set(['--apihost', '--auth', '--data-dir']);

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

let named: string | undefined;
for (let i = 0; i < args.length; i++) {
  const arg = args[i] as string;
  if (TAKES_VALUE.has(arg)) i++;
  else if (!arg.startsWith('-')) {
    named = arg;
    break;
  }
}
const wanted = named !== undefined && Object.hasOwn(COMMANDS, named) ? [named] : Object.keys(COMMANDS);
for (const register of await Promise.all(wanted.map((name) => (COMMANDS[name] as () => Promise<Register>)()))) register(program);

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
