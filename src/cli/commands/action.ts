import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { type Command, Option } from 'commander';
import { ApiError, IsolaClient } from '../client.js';
import { formatTime, printJson, printTable } from '../output.js';
import { clientFor, globals, pairs } from './common.js';

interface ActionView {
  namespace: string;
  name: string;
  version: string;
  exec: { kind: string; binary: boolean; code?: string };
  annotations: { key: string; value: unknown }[];
  limits: Record<string, number>;
  updated: number;
}

interface DeployOptions {
  kind?: string;
  main?: string;
  memory?: string;
  timeout?: string;
  concurrency?: string;
  logsize?: string;
  isolation?: string;
  param?: string[];
  annotation?: string[];
  web?: string;
}

function deployBody(file: string | undefined, options: DeployOptions) {
  let exec: Record<string, unknown> | undefined;
  if (file) {
    const isWasm = options.kind === 'wasm' || extname(file) === '.wasm';
    const content = readFileSync(file);
    exec = {
      kind: options.kind ?? (isWasm ? 'wasm' : 'nodejs:20'),
      code: isWasm ? content.toString('base64') : content.toString('utf8'),
      binary: isWasm,
      ...(options.main ? { main: options.main } : {}),
    };
  }
  const limits: Record<string, number> = {};
  for (const key of ['memory', 'timeout', 'concurrency', 'logsize'] as const) {
    const value = options[key];
    if (value !== undefined) limits[key === 'logsize' ? 'logs' : key] = Number(value);
  }
  const annotations = pairs(options.annotation, '--annotation');
  if (options.isolation) annotations.push({ key: 'isolation', value: options.isolation });
  if (options.web !== undefined) annotations.push({ key: 'web-export', value: options.web !== 'false' });
  const parameters = pairs(options.param, '--param');
  return {
    ...(exec ? { exec } : {}),
    ...(Object.keys(limits).length > 0 ? { limits } : {}),
    ...(parameters.length > 0 ? { parameters } : {}),
    ...(annotations.length > 0 ? { annotations } : {}),
  };
}

function deployOptions(command: Command): Command {
  return command
    .option('--kind <kind>', 'runtime kind: nodejs:20 or wasm (default from the file)')
    .option('--main <name>', 'entry point (default main)')
    .option('-m, --memory <MB>', 'memory limit in MB')
    .option('-t, --timeout <ms>', 'timeout in ms')
    .option('-c, --concurrency <n>', 'invocations one instance serves at once')
    .option('-l, --logsize <KB>', 'log limit in KB')
    .addOption(
      new Option('-i, --isolation <backend>', 'isolation backend').choices([
        'isolate',
        'wasm',
        'process',
        'container',
        'gvisor',
        'microvm',
      ]),
    )
    .option('-p, --param <key value...>', 'default parameter (repeatable)')
    .option('-a, --annotation <key value...>', 'annotation (repeatable)')
    .option('--web <true|false>', 'make it a web action');
}

function printAction(action: ActionView, verb: string, json: boolean | undefined): void {
  if (json) printJson(action);
  else {
    const isolation = action.annotations.find((a) => a.key === 'isolation')?.value;
    process.stdout.write(
      `ok: ${verb} action ${action.name} (version ${action.version}, ${action.exec.kind}, isolation ${isolation})\n`,
    );
  }
}

export function registerActionCommands(program: Command): void {
  const action = program.command('action').description('create, update, get, list, delete and invoke actions');

  deployOptions(action.command('create <name> <file>').description('create an action from a .js or .wasm file')).action(
    async (name: string, file: string, options: DeployOptions, command: Command) => {
      const { data } = await clientFor(command).request<ActionView>(
        'PUT',
        `/api/v1/namespaces/_/actions/${IsolaClient.path(name)}?overwrite=false`,
        deployBody(file, options),
      );
      printAction(data, 'created', globals(command).json);
    },
  );

  deployOptions(
    action.command('update <name> [file]').description('store a new version of an action (what you leave out is kept)'),
  ).action(async (name: string, file: string | undefined, options: DeployOptions, command: Command) => {
    const { data } = await clientFor(command).request<ActionView>(
      'PUT',
      `/api/v1/namespaces/_/actions/${IsolaClient.path(name)}?overwrite=true`,
      deployBody(file, options),
    );
    printAction(data, 'updated', globals(command).json);
  });

  action
    .command('get <name>')
    .description('show an action (its latest version, or --version)')
    .option('--version <version>', 'a stored version, e.g. 0.0.1')
    .option('--code', 'include the code')
    .action(async (name: string, options: { version?: string; code?: boolean }, command: Command) => {
      const query = new URLSearchParams({ code: String(Boolean(options.code) || Boolean(globals(command).json)) });
      if (options.version) query.set('version', options.version);
      const { data } = await clientFor(command).request<ActionView>(
        'GET',
        `/api/v1/namespaces/_/actions/${IsolaClient.path(name)}?${query}`,
      );
      if (globals(command).json) return printJson(data);
      const { exec, ...rest } = data;
      printJson({ ...rest, exec: options.code ? exec : { ...exec, code: undefined } });
    });

  action
    .command('versions <name>')
    .description('list the stored versions of an action')
    .action(async (name: string, _options: unknown, command: Command) => {
      const { data } = await clientFor(command).request<ActionView[]>(
        'GET',
        `/api/v1/namespaces/_/actions/${IsolaClient.path(name)}/versions`,
      );
      if (globals(command).json) return printJson(data);
      printTable(
        ['version', 'kind', 'updated'],
        data.map((v) => [v.version, v.exec.kind, formatTime(v.updated)]),
      );
    });

  action
    .command('list')
    .description('list actions')
    .option('--limit <n>', 'how many', '30')
    .option('--skip <n>', 'how many to skip', '0')
    .action(async (options: { limit: string; skip: string }, command: Command) => {
      const { data } = await clientFor(command).request<ActionView[]>(
        'GET',
        `/api/v1/namespaces/_/actions?limit=${Number(options.limit)}&skip=${Number(options.skip)}`,
      );
      if (globals(command).json) return printJson(data);
      printTable(
        ['action', 'version', 'kind', 'isolation', 'memory', 'timeout', 'updated'],
        data.map((a) => [
          `/${a.namespace}/${a.name}`,
          a.version,
          a.exec.kind,
          String(a.annotations.find((x) => x.key === 'isolation')?.value ?? ''),
          `${a.limits.memory} MB`,
          `${a.limits.timeout} ms`,
          formatTime(a.updated),
        ]),
      );
    });

  action
    .command('delete <name>')
    .description('delete an action and its versions')
    .action(async (name: string, _options: unknown, command: Command) => {
      const { data } = await clientFor(command).request<ActionView>(
        'DELETE',
        `/api/v1/namespaces/_/actions/${IsolaClient.path(name)}`,
      );
      if (globals(command).json) printJson(data);
      else process.stdout.write(`ok: deleted action ${name}\n`);
    });

  action
    .command('invoke <name>')
    .description('invoke an action')
    .option('-p, --param <key value...>', 'parameter (repeatable)')
    .option('-P, --param-file <file>', 'parameters from a JSON file')
    .option('-b, --blocking', 'wait for the result')
    .option('-r, --result', 'wait and print only the result')
    .action(
      async (
        name: string,
        options: { param?: string[]; paramFile?: string; blocking?: boolean; result?: boolean },
        command: Command,
      ) => {
        const params: Record<string, unknown> = options.paramFile ? JSON.parse(readFileSync(options.paramFile, 'utf8')) : {};
        for (const { key, value } of pairs(options.param, '--param')) params[key] = value;
        const blocking = Boolean(options.blocking || options.result);
        const query = `blocking=${blocking}&result=${Boolean(options.result)}`;
        const json = globals(command).json;
        let status: number;
        let data: unknown;
        try {
          ({ status, data } = await clientFor(command).request(
            'POST',
            `/api/v1/namespaces/_/actions/${IsolaClient.path(name)}?${query}`,
            params,
          ));
        } catch (error) {
          // A failed activation (502) still carries its record or result.
          if (!(error instanceof ApiError) || error.status !== 502) throw error;
          status = 502;
          data = error.body;
          process.exitCode = 1;
        }
        if (json || options.result) return printJson(data);
        const activationId = (data as { activationId?: string }).activationId;
        if (status === 202) {
          process.stdout.write(`ok: invoked /_/${name} with id ${activationId}\n`);
          return;
        }
        process.stdout.write(`${status === 200 ? 'ok' : 'error'}: invoked /_/${name} with id ${activationId}\n`);
        printJson(data);
      },
    );
}
