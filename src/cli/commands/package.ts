import type { Command } from 'commander';
import type { KeyValue } from '../../core/types.js';
import { IsolaClient } from '../client.js';
import { formatTime, printJson, printTable } from '../output.js';
import { clientFor, globals, pairs, wholeNumber } from './common.js';

interface PackageView {
  namespace: string;
  name: string;
  version: string;
  publish: boolean;
  binding: { namespace?: string; name?: string };
  parameters?: KeyValue[];
  annotations: KeyValue[];
  actions?: { name: string }[];
  feeds?: { name: string }[];
  updated: number;
}

interface PackageOptions {
  param?: string[];
  annotation?: string[];
  shared?: string;
}

function packageOptions(command: Command): Command {
  return command
    .option('-p, --param <key value...>', 'default parameter for its actions (repeatable)')
    .option('-a, --annotation <key value...>', 'annotation (repeatable)')
    .option('--shared <yes|no>', 'share the package with every namespace (publish it)');
}

/** The body of a package PUT: only what the options give, so that an update keeps the rest. */
function packageBody(options: PackageOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (options.param) body.parameters = pairs(options.param, '--param');
  if (options.annotation) body.annotations = pairs(options.annotation, '--annotation');
  if (options.shared !== undefined) {
    if (options.shared !== 'yes' && options.shared !== 'no') throw new Error('--shared takes yes or no.');
    body.publish = options.shared === 'yes';
  }
  return body;
}

/** `name`, `/namespace/name`: the path of a package, in the caller's namespace unless named. */
function packagePath(reference: string): string {
  const match = /^\/([^/]+)\/([^/]+)$/.exec(reference);
  const [namespace, name] = match ? [match[1] as string, match[2] as string] : ['_', reference];
  return `/api/v1/namespaces/${IsolaClient.path(namespace)}/packages/${IsolaClient.path(name)}`;
}

/** `isola package`, as `wsk package`: create, update, bind, get, list and delete packages. */
export function registerPackageCommands(program: Command): void {
  const pkg = program.command('package').description('create, update, bind, get, list and delete packages');

  for (const [verb, overwrite] of [
    ['create', false],
    ['update', true],
  ] as const) {
    packageOptions(
      pkg.command(`${verb} <name>`).description(overwrite ? 'update a package (what you leave out is kept)' : 'create a package'),
    ).action(async (name: string, options: PackageOptions, command: Command) => {
      const { data } = await clientFor(command).request<PackageView>(
        'PUT',
        `${packagePath(name)}?overwrite=${overwrite}`,
        packageBody(options),
      );
      if (globals(command).json) printJson(data);
      else process.stdout.write(`ok: ${overwrite ? 'updated' : 'created'} package ${data.name}\n`);
    });
  }

  pkg
    .command('bind <package> <name>')
    .description('bind a package (/namespace/package for a shared one) under a name of your own, with parameters of its own')
    .option('-p, --param <key value...>', 'default parameter (repeatable)')
    .option('-a, --annotation <key value...>', 'annotation (repeatable)')
    .action(async (bound: string, name: string, options: PackageOptions, command: Command) => {
      const match = /^\/([^/]+)\/([^/]+)$/.exec(bound);
      const binding = match ? { namespace: match[1], name: match[2] } : { namespace: '_', name: bound };
      const { data } = await clientFor(command).request<PackageView>('PUT', `${packagePath(name)}?overwrite=false`, {
        ...packageBody(options),
        binding,
      });
      if (globals(command).json) printJson(data);
      else process.stdout.write(`ok: created binding ${data.name}\n`);
    });

  pkg
    .command('get <name>')
    .description('show a package (or /namespace/package) with its parameters, actions and feeds')
    .option('-s, --summary', 'only its actions and feeds')
    .action(async (name: string, options: { summary?: boolean }, command: Command) => {
      const { data } = await clientFor(command).request<PackageView>('GET', packagePath(name));
      if (!options.summary || globals(command).json) return printJson(data);
      process.stdout.write(`package /${data.namespace}/${data.name}\n`);
      for (const action of data.actions ?? []) process.stdout.write(`   action /${data.namespace}/${data.name}/${action.name}\n`);
      for (const feed of data.feeds ?? []) process.stdout.write(`   feed   /${data.namespace}/${data.name}/${feed.name}\n`);
    });

  pkg
    .command('list [namespace]')
    .description("list your packages, or another namespace's shared ones (/whisk.system)")
    .option('--limit <n>', 'how many (at most 200)', wholeNumber(1, 200), 30)
    .option('--skip <n>', 'how many to skip', wholeNumber(0), 0)
    .action(async (namespace: string | undefined, options: { limit: number; skip: number }, command: Command) => {
      const ns = namespace ? namespace.replace(/^\//, '') : '_';
      const { data } = await clientFor(command).request<PackageView[]>(
        'GET',
        `/api/v1/namespaces/${IsolaClient.path(ns)}/packages?limit=${options.limit}&skip=${options.skip}`,
      );
      if (globals(command).json) return printJson(data);
      printTable(
        ['package', 'shared', 'binds', 'updated'],
        data.map((p) => [
          `/${p.namespace}/${p.name}`,
          p.publish ? 'shared' : 'private',
          p.binding.name ? `/${p.binding.namespace}/${p.binding.name}` : '',
          formatTime(p.updated),
        ]),
      );
    });

  pkg
    .command('delete <name>')
    .description('delete a package (it must hold no actions) or a binding')
    .action(async (name: string, _options: unknown, command: Command) => {
      const { data } = await clientFor(command).request<PackageView>('DELETE', packagePath(name));
      if (globals(command).json) printJson(data);
      else process.stdout.write(`ok: deleted package ${name}\n`);
    });
}
