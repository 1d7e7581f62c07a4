// `isola bench`: the platform's CLI hands the command here (through packages/bench/launch.js)
// when this package is installed, with the same arguments.
import { Command, Option } from 'commander';
import { registerBenchCommand } from './cli.js';

const program = new Command('isola')
  .addOption(new Option('--data-dir <dir>', 'data directory').env('ISOLA_DATA_DIR'))
  .addOption(new Option('--apihost <url>').hideHelp())
  .addOption(new Option('--auth <uuid:key>').hideHelp())
  .option('--json', 'print machine-readable JSON')
  .showHelpAfterError();
registerBenchCommand(program);

try {
  await program.parseAsync(process.argv);
} catch (error) {
  process.stderr.write(`error: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
}
