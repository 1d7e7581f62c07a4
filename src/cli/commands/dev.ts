import { type FSWatcher, statSync, watch } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Command } from 'commander';
import type { ActivationRecord } from '../../core/types.js';
import { ApiError, type IsolaClient } from '../client.js';
import { ActivationTail } from './activation.js';
import { actionPath, clientFor } from './common.js';
import { type DeployOptions, deployBody, isolationOption } from './deploy-body.js';

interface DevOptions {
  name?: string;
  kind?: string;
  main?: string;
  isolation?: string;
  param?: string[];
  web?: string;
  rm?: boolean;
  tail: boolean;
}

interface DeployedAction {
  namespace: string;
  name: string;
  version: string;
  /** ms since the epoch, by the server's clock. */
  updated: number;
  exec: { kind: string };
  annotations: { key: string; value: unknown }[];
}

/** Editors save in bursts (a temp file, a rename, a write): one deploy after this much quiet. */
const DEBOUNCE_MS = 150;
const TAIL_INTERVAL_MS = 1000;

/** Files whose changes never redeploy: dependencies, version control, editors' swap, backup and lock files. */
function isIgnored(relativePath: string): boolean {
  const parts = relativePath.split(/[\\/]/);
  if (parts.some((part) => part === 'node_modules' || part === '.git')) return true;
  const file = parts.at(-1) ?? '';
  return (
    /^\..*\.sw[a-p]$/.test(file) || // vim swap files
    file === '4913' || // vim's probe that it may write the directory
    file.endsWith('~') || // vim and emacs backups
    /^\.?#/.test(file) || // emacs autosaves and locks
    /\.(tmp|swp|bak)$/.test(file) ||
    /\.tmp\.\d+$/.test(file) // atomic writes (VS Code, many tools): file.tmp.1234
  );
}

const clock = () => new Date().toTimeString().slice(0, 8);
const say = (line: string) => process.stdout.write(`[${clock()}] ${line}\n`);
/** On stderr; a compiler's message keeps its lines, indented under the first. */
const complain = (text: string) => process.stderr.write(`[${clock()}] error: ${text.replace(/\n/g, '\n    ')}\n`);

/** The doors onto the function, as the server's routes spell them (README: "Other doors onto the same functions"). */
function printUrls(apihost: string, namespace: string, name: string, webExported: boolean | undefined): void {
  const encoded = encodeURIComponent(name);
  const web =
    webExported === true
      ? '(web-exported)'
      : webExported === false
        ? '(answers only once web-exported: run with --web true)'
        : '(answers only when web-exported: --web true)';
  const rows: [string, string][] = [
    ['OpenWhisk API', `${apihost}/api/v1/namespaces/_/actions/${encoded}`],
    ['Web action', `${apihost}/api/v1/web/${encodeURIComponent(namespace)}/default/${encoded}.json  ${web}`],
    ['Lambda', `${apihost}/2015-03-31/functions/${encoded}/invocations`],
    ['OpenFaaS', `${apihost}/function/${encoded}`],
    ['Dashboard', `${apihost}/ui/functions/${encoded}`],
  ];
  for (const [door, url] of rows) process.stdout.write(`  ${door.padEnd(15)}${url}\n`);
}

function printActivation(record: ActivationRecord): void {
  const coldStart = record.annotations.find((a) => a.key === 'coldStart')?.value;
  const start = coldStart === true ? 'cold' : coldStart === false ? 'warm' : '';
  const status = record.response.status;
  say(`activation ${record.activationId} v${record.version} ${status} ${record.duration} ms${start ? ` ${start}` : ''}`);
  for (const line of record.logs) process.stdout.write(`    ${line}\n`);
}

/** The name a path deploys as by default: its base name without extension (a directory's name). */
export function defaultName(path: string, isDirectory: boolean): string {
  const base = basename(resolve(path));
  return isDirectory ? base : basename(base, extname(base));
}

/**
 * Deploy, watch, redeploy on save, tail the logs: the loop of `wrangler dev` and `spin watch`,
 * until SIGINT or SIGTERM.
 */
async function dev(path: string, options: DevOptions, client: IsolaClient): Promise<void> {
  let isDirectory: boolean;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch {
    throw new Error(`${path} does not exist: give the function's file or directory.`);
  }
  const name = options.name ?? defaultName(path, isDirectory);
  const deployOptions: DeployOptions = {
    ...(options.kind ? { kind: options.kind } : {}),
    ...(options.main ? { main: options.main } : {}),
    ...(options.isolation ? { isolation: options.isolation } : {}),
    ...(options.param ? { param: options.param } : {}),
    ...(options.web !== undefined ? { web: options.web } : {}),
  };
  // Checks the server and the credentials before anything else; the namespace names the web URL.
  const { data: namespaces } = await client.request<string[]>('GET', '/api/v1/namespaces');
  const namespace = namespaces[0] ?? '_';
  const startedAt = Date.now();

  /** Stores a new version; a deploy the server refuses (a syntax error...) is reported, and the next save tries again. */
  const deploy = async (first = false): Promise<DeployedAction | undefined> => {
    try {
      const { data } = await client.request<DeployedAction>(
        'PUT',
        `${actionPath(name)}?overwrite=true`,
        deployBody(path, deployOptions),
      );
      const isolation = data.annotations.find((a) => a.key === 'isolation')?.value;
      say(`deployed ${name} version ${data.version} (${data.exec.kind}${isolation ? `, isolation ${isolation}` : ''})`);
      return data;
    } catch (error) {
      // At start, only the server's word on the code (400) is worth watching on: a kind that
      // cannot be told, or a server that failed, ends the command.
      if (first && !(error instanceof ApiError && error.status === 400)) throw error;
      complain(`deploy of ${name} failed: ${(error as Error).message}`);
      return undefined;
    }
  };

  // Stopping is asked for from now on; it takes effect once the first deploy is done.
  let watchFailed: (error: Error) => void = () => undefined;
  const finished = new Promise<NodeJS.Signals | Error>((done) => {
    process.once('SIGINT', () => done('SIGINT'));
    process.once('SIGTERM', () => done('SIGTERM'));
    watchFailed = done;
  });

  // The first deploy may fail on the code (fixed on the next save).
  const first = await deploy(true);
  process.stdout.write(`Function ${name} (namespace ${namespace}):\n`);
  printUrls(
    client.apihost,
    namespace,
    name,
    first ? first.annotations.some((a) => a.key === 'web-export' && a.value === true) : undefined,
  );
  process.stdout.write(
    `Watching ${path} for changes${options.tail ? ' and printing its activations' : ''}. ` +
      `Ctrl-C stops (the function ${options.rm ? 'is deleted' : 'stays deployed'}).\n`,
  );

  // Deploys one at a time: a save during a deploy deploys again once it is done.
  let deploying: Promise<unknown> = Promise.resolve();
  let pending = false;
  let debounce: NodeJS.Timeout | undefined;
  const redeploy = () => {
    if (pending) return;
    pending = true;
    deploying = deploying.then(() => {
      pending = false;
      return deploy();
    });
  };
  const changed = () => {
    clearTimeout(debounce);
    debounce = setTimeout(redeploy, DEBOUNCE_MS);
  };

  // A file is watched through its directory: editors that save by renaming a new file over it
  // would leave a watch on the file itself watching the old one.
  const absolute = resolve(path);
  const watched = isDirectory ? absolute : dirname(absolute);
  const target = basename(absolute);
  const stopped = new AbortController();
  const watcher: FSWatcher = watch(watched, { recursive: isDirectory, signal: stopped.signal }, (_event, filename) => {
    if (filename === null) return changed();
    const relative = filename.toString();
    if (isDirectory ? !isIgnored(relative) : relative === target) changed();
  });
  watcher.on('error', (error) => {
    if (!stopped.signal.aborted) watchFailed(new Error(`Cannot watch ${watched} any more: ${error.message}`));
  });

  const tailing = (async () => {
    if (!options.tail) return;
    // From the first deploy by the server's clock (activations are stamped by it), else from now.
    const tail = new ActivationTail(client, name, first?.updated ?? startedAt);
    let failing = false;
    while (!stopped.signal.aborted) {
      try {
        for (const record of await tail.next()) printActivation(record);
        failing = false;
      } catch (error) {
        // Said once until it works again: the server may be restarting.
        if (!failing) complain(`reading the activations failed: ${(error as Error).message}`);
        failing = true;
      }
      await sleep(TAIL_INTERVAL_MS, undefined, { signal: stopped.signal }).catch(() => undefined);
    }
  })();

  const reason = await finished;
  // A second Ctrl-C while cleaning up leaves at once.
  process.once('SIGINT', () => process.exit(130));
  stopped.abort();
  clearTimeout(debounce);
  await Promise.all([tailing, deploying]);
  if (reason instanceof Error) throw reason;
  if (options.rm) {
    try {
      await client.request('DELETE', actionPath(name));
      process.stdout.write(`\nStopped (${reason}); deleted ${name}.\n`);
    } catch (error) {
      if (!(error instanceof ApiError && error.status === 404)) throw error;
      process.stdout.write(`\nStopped (${reason}); ${name} was not deployed.\n`);
    }
  } else process.stdout.write(`\nStopped (${reason}); ${name} stays deployed.\n`);
}

export function registerDevCommand(program: Command): void {
  program
    .command('dev <path>')
    .description('deploy a file or directory, redeploy it on every save and print its activations and logs, until Ctrl-C')
    .option('--name <name>', "the function's name (default: the file's name without extension, or the directory's)")
    .option(
      '--kind <kind>',
      'runtime kind (default from the file, as for action create; a directory is zipped and read by what it holds)',
    )
    .option('--main <name>', 'entry point (default main; for Java the class, Class or Class#method)')
    .addOption(isolationOption())
    .option('-p, --param <key value...>', 'default parameter (repeatable)')
    .option('--web <true|false>', 'make it a web action')
    .option('--rm', 'delete the function on Ctrl-C (default: it stays deployed)')
    .option('--no-tail', "do not print the function's activations")
    .action((path: string, options: DevOptions, command: Command) => dev(path, options, clientFor(command)));
}
