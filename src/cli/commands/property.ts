import type { Command } from 'commander';
import { parseAuth } from '../../platform/credentials.js';
import {
  type CliConfig,
  configPath,
  PROPERTIES,
  type Property,
  readConfig,
  resolveConnection,
  writeConfig,
} from '../config-file.js';
import { printJson, printTable } from '../output.js';
import { commandLineGlobals, globals } from './common.js';

function propertyName(name: string): Property {
  if ((PROPERTIES as readonly string[]).includes(name)) return name as Property;
  throw new Error(`Unknown property "${name}": use ${PROPERTIES.join(' or ')}.`);
}

/** An API host must be an http(s) URL: checked before it is saved, not at the next command. */
function checkApihost(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new Error(`--apihost must be a URL such as http://127.0.0.1:3233, not "${value}".`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new Error(`--apihost must be an http or https URL: "${value}".`);
  return value.replace(/\/$/, '');
}

export function registerPropertyCommands(program: Command): void {
  const property = program
    .command('property')
    .description(`the CLI's saved settings (API host and credentials), in ${configPath()}`);

  property
    .command('set')
    .description('save the API host and/or credentials that commands use from any directory')
    .option('--apihost <url>', 'API host of the server, e.g. http://127.0.0.1:3233')
    .option('--auth <uuid:key>', 'credentials')
    .action((options: { apihost?: string; auth?: string }, command: Command) => {
      // The program's global --apihost/--auth may take these flags first: either way they were given here.
      const { apihost, auth } = { ...commandLineGlobals(command), ...options };
      if (apihost === undefined && auth === undefined)
        throw new Error('Nothing to set: pass --apihost <url> and/or --auth <uuid:key>.');
      const path = configPath();
      const config: CliConfig = { ...readConfig(path) };
      if (apihost !== undefined) config.apihost = checkApihost(apihost);
      if (auth !== undefined) {
        parseAuth(auth, 'The credentials given to --auth');
        config.auth = auth;
      }
      writeConfig(path, config);
      if (globals(command).json) printJson({ file: path, ...config, ...(config.auth ? { auth: '(set)' } : {}) });
      else
        process.stdout.write(
          `saved in ${path}: ${[apihost !== undefined && 'apihost', auth !== undefined && 'auth'].filter(Boolean).join(', ')}\n`,
        );
    });

  property
    .command('unset [names...]')
    .description('remove saved settings: apihost, auth (default both)')
    .action((names: string[], _options: unknown, command: Command) => {
      const chosen = names.length > 0 ? names.map(propertyName) : [...PROPERTIES];
      const path = configPath();
      const config: CliConfig = { ...readConfig(path) };
      for (const name of chosen) delete config[name];
      writeConfig(path, config);
      if (globals(command).json) printJson({ file: path, removed: chosen });
      else process.stdout.write(`removed from ${path}: ${chosen.join(', ')}\n`);
    });

  property
    .command('get [name]')
    .description(
      'show the API host and credentials commands would use here and where each comes from; with a name (apihost, auth), that value alone',
    )
    .action((name: string | undefined, _options: unknown, command: Command) => {
      const path = configPath();
      const { apihost, auth } = resolveConnection({ flags: commandLineGlobals(command), configFile: path });
      if (name !== undefined) {
        const setting = propertyName(name) === 'apihost' ? apihost : auth;
        if (!setting) throw new Error(`${name} is not set: isola property set --${name} <value>`);
        process.stdout.write(`${setting.value}\n`);
        return;
      }
      if (globals(command).json) {
        printJson({ configFile: path, apihost, auth: auth ?? null });
        return;
      }
      printTable(
        ['property', 'value', 'from'],
        [
          ['apihost', apihost.value, apihost.source],
          ['auth', auth?.value ?? '(none)', auth?.source ?? 'nowhere: set it with isola property set --auth'],
          ['config file', path, ''],
        ],
      );
    });
}
