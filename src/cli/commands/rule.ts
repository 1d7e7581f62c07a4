import type { Command } from 'commander';
import { IsolaClient } from '../client.js';
import { formatTime, printJson, printTable } from '../output.js';
import { clientFor, globals, wholeNumber } from './common.js';

interface RuleView {
  namespace: string;
  name: string;
  version: string;
  status: string;
  trigger: { path: string; name: string };
  action: { path: string; name: string };
  updated: number;
}

const rulePath = (name: string) => `/api/v1/namespaces/_/rules/${IsolaClient.path(name)}`;

/** `isola rule`, as `wsk rule`: create, update, get, list, delete, enable and disable. */
export function registerRuleCommands(program: Command): void {
  const rule = program.command('rule').description('create, update, get, list, delete, enable and disable rules');

  for (const [verb, overwrite] of [
    ['create', false],
    ['update', true],
  ] as const) {
    rule
      .command(`${verb} <name> <trigger> <action>`)
      .description(`${overwrite ? 'update' : 'create'} a rule: firing the trigger invokes the action`)
      .option('--disable', 'store it inactive')
      .action(async (name: string, trigger: string, action: string, options: { disable?: boolean }, command: Command) => {
        const { data } = await clientFor(command).request<RuleView>('PUT', `${rulePath(name)}?overwrite=${overwrite}`, {
          trigger,
          action,
          status: options.disable ? 'inactive' : 'active',
        });
        if (globals(command).json) printJson(data);
        else process.stdout.write(`ok: ${overwrite ? 'updated' : 'created'} rule ${data.name}\n`);
      });
  }

  rule
    .command('get <name>')
    .description('show a rule')
    .action(async (name: string, _options: unknown, command: Command) => {
      printJson((await clientFor(command).request<RuleView>('GET', rulePath(name))).data);
    });

  rule
    .command('list')
    .description('list rules')
    .option('--limit <n>', 'how many (at most 200)', wholeNumber(1, 200), 30)
    .option('--skip <n>', 'how many to skip', wholeNumber(0), 0)
    .action(async (options: { limit: number; skip: number }, command: Command) => {
      const { data } = await clientFor(command).request<RuleView[]>(
        'GET',
        `/api/v1/namespaces/_/rules?limit=${options.limit}&skip=${options.skip}`,
      );
      if (globals(command).json) return printJson(data);
      printTable(
        ['rule', 'trigger', 'action', 'status', 'updated'],
        data.map((r) => [
          `/${r.namespace}/${r.name}`,
          `/${r.trigger.path}/${r.trigger.name}`,
          `/${r.action.path}/${r.action.name}`,
          r.status,
          formatTime(r.updated),
        ]),
      );
    });

  rule
    .command('delete <name>')
    .description('delete a rule')
    .action(async (name: string, _options: unknown, command: Command) => {
      const { data } = await clientFor(command).request<RuleView>('DELETE', rulePath(name));
      if (globals(command).json) printJson(data);
      else process.stdout.write(`ok: deleted rule ${name}\n`);
    });

  for (const [verb, status] of [
    ['enable', 'active'],
    ['disable', 'inactive'],
  ] as const) {
    rule
      .command(`${verb} <name>`)
      .description(`${verb} a rule`)
      .action(async (name: string, _options: unknown, command: Command) => {
        const { data } = await clientFor(command).request<RuleView>('POST', rulePath(name), { status });
        if (globals(command).json) printJson(data);
        else process.stdout.write(`ok: ${verb}d rule ${name}\n`);
      });
  }
}
