import { readFileSync } from 'node:fs';
import { type Command, InvalidArgumentError } from 'commander';
import { parseDuration } from '../../config.js';
import { LIMIT_RANGES } from '../../core/limits.js';
import { ApiError } from '../client.js';
import { formatTime, notePage, printJson, printTable } from '../output.js';
import { actionPath, clientFor, globals, pairs, wholeNumber } from './common.js';
import { type DeployOptions, deployBody, isolationOption } from './deploy-body.js';

interface ActionView {
  namespace: string;
  name: string;
  version: string;
  exec: { kind: string; binary: boolean; code?: string };
  annotations: { key: string; value: unknown }[];
  limits: Record<string, number>;
  updated: number;
}

const limit = (key: keyof typeof LIMIT_RANGES) =>
  wholeNumber(LIMIT_RANGES[key].min, LIMIT_RANGES[key].max, LIMIT_RANGES[key].unit || undefined);

/** A timeout in ms, or a duration such as 30s or 2m. */
function timeoutMs(text: string): number {
  const { min, max } = LIMIT_RANGES.timeout;
  let value: number;
  try {
    value = /^\s*\d+\s*$/.test(text) ? Number(text) : parseDuration(text);
  } catch {
    value = Number.NaN;
  }
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(`It must be from ${min} to ${max} ms, in ms or as a duration such as 30s or 2m.`);
  }
  return value;
}

function deployOptions(command: Command): Command {
  return command
    .option(
      '--kind <kind>',
      'runtime kind: nodejs:20, python:3, java:17, go:1.19, ruby:3.1, php:8.2, native or wasm ' +
        '(default from the file: .js .cjs .mjs .ts, .py, .java .jar, .go, .rb, .php, .wasm; a .zip by what it holds; an ELF executable is native)',
    )
    .option('--main <name>', 'entry point (default main; for Java the class, Class or Class#method)')
    .option('-m, --memory <MB>', 'memory limit in MB', limit('memory'))
    .option('-t, --timeout <ms>', 'timeout in ms (or 30s, 2m)', timeoutMs)
    .option('-c, --concurrency <n>', 'invocations one instance serves at once', limit('concurrency'))
    .option('-l, --logsize <KB>', 'log limit in KB', limit('logs'))
    .addOption(isolationOption())
    .option('-p, --param <key value...>', 'default parameter (repeatable)')
    .option('-a, --annotation <key value...>', 'annotation (repeatable)')
    .option('--web <true|false>', 'make it a web action')
    .option('--sequence <actions>', 'make it a sequence of these actions, comma-separated (instead of a file)');
}

function printAction(action: ActionView, verb: string, json: boolean | undefined): void {
  if (json) printJson(action);
  else {
    const isolation = action.annotations.find((a) => a.key === 'isolation')?.value;
    const runs = isolation === undefined ? action.exec.kind : `${action.exec.kind}, isolation ${isolation}`;
    process.stdout.write(`ok: ${verb} action ${action.name} (version ${action.version}, ${runs})\n`);
  }
}

/** `-P file.json`: a JSON object of parameters. */
function paramFile(file: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(readFileSync(file, 'utf8'));
  } catch (error) {
    throw new Error(`--param-file ${file}: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new Error(`--param-file ${file} must hold a JSON object of parameters.`);
  }
  return value as Record<string, unknown>;
}

export function registerActionCommands(program: Command): void {
  const action = program.command('action').description('create, update, get, list, delete and invoke actions');

  deployOptions(
    action
      .command('create <name> [file]')
      .description(
        'create an action from a file (its kind inferred, or --kind), a directory (zipped), or a sequence (--sequence a,b)',
      ),
  ).action(async (name: string, file: string | undefined, options: DeployOptions, command: Command) => {
    if (!file && options.sequence === undefined) throw new Error('Give the file with the code, or --sequence a,b.');
    const { data } = await clientFor(command).request<ActionView>(
      'PUT',
      `${actionPath(name)}?overwrite=false`,
      deployBody(file, options),
    );
    printAction(data, 'created', globals(command).json);
  });

  deployOptions(
    action.command('update <name> [file]').description('store a new version of an action (what you leave out is kept)'),
  ).action(async (name: string, file: string | undefined, options: DeployOptions, command: Command) => {
    const { data } = await clientFor(command).request<ActionView>(
      'PUT',
      `${actionPath(name)}?overwrite=true`,
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
      const { data } = await clientFor(command).request<ActionView>('GET', `${actionPath(name)}?${query}`);
      if (globals(command).json) return printJson(data);
      const { exec, ...rest } = data;
      printJson({ ...rest, exec: options.code ? exec : { ...exec, code: undefined } });
    });

  action
    .command('versions <name>')
    .description('list the stored versions of an action')
    .action(async (name: string, _options: unknown, command: Command) => {
      const { data } = await clientFor(command).request<ActionView[]>('GET', `${actionPath(name)}/versions`);
      if (globals(command).json) return printJson(data);
      printTable(
        ['version', 'kind', 'updated'],
        data.map((v) => [v.version, v.exec.kind, formatTime(v.updated)]),
      );
    });

  action
    .command('list')
    .description('list actions')
    .option('--limit <n>', 'how many (at most 200)', wholeNumber(1, 200), 30)
    .option('--skip <n>', 'how many to skip', wholeNumber(0), 0)
    .action(async (options: { limit: number; skip: number }, command: Command) => {
      const { data } = await clientFor(command).request<ActionView[]>(
        'GET',
        `/api/v1/namespaces/_/actions?limit=${options.limit}&skip=${options.skip}`,
      );
      notePage('action', data.length, options);
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
      const { data } = await clientFor(command).request<ActionView>('DELETE', `${actionPath(name)}`);
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
        const params = options.paramFile ? paramFile(options.paramFile) : {};
        for (const { key, value } of pairs(options.param, '--param')) params[key] = value;
        const blocking = Boolean(options.blocking || options.result);
        const query = `blocking=${blocking}&result=${Boolean(options.result)}`;
        const json = globals(command).json;
        let status: number;
        let data: unknown;
        try {
          ({ status, data } = await clientFor(command).request('POST', `${actionPath(name)}?${query}`, params));
        } catch (error) {
          // A failed activation (502) still carries its record or result.
          if (!(error instanceof ApiError) || error.status !== 502) throw error;
          status = 502;
          data = error.body;
          process.exitCode = 1;
        }
        const activationId = (data as { activationId?: string } | undefined)?.activationId;
        if (status === 202 && blocking) {
          // The server stopped waiting (its blocking wait); the activation goes on.
          process.exitCode = 1;
          const message =
            `The activation ${activationId} of ${name} is still running: the server stopped waiting for it. ` +
            `Fetch its result once it is done with \`isola activation result ${activationId}\` ` +
            `(or wait for it: \`isola activation result ${activationId} --wait\`).`;
          if (json) process.stderr.write(`${JSON.stringify({ error: message, activationId, running: true })}\n`);
          else process.stderr.write(`${message}\n`);
          return;
        }
        if (json || options.result) return printJson(data);
        if (status === 202) {
          process.stdout.write(`ok: invoked /_/${name} with id ${activationId}\n`);
          return;
        }
        process.stdout.write(`${status === 200 ? 'ok' : 'error'}: invoked /_/${name} with id ${activationId}\n`);
        printJson(data);
      },
    );
}
