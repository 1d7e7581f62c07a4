import type { Command } from 'commander';
import type { KeyValue } from '../../core/types.js';
import { IsolaClient } from '../client.js';
import { formatTime, printJson, printTable } from '../output.js';
import { actionPath, clientFor, globals, pairs, wholeNumber } from './common.js';

interface TriggerView {
  namespace: string;
  name: string;
  version: string;
  parameters: KeyValue[];
  annotations: KeyValue[];
  rules?: Record<string, { action: { path: string; name: string }; status: string }>;
  updated: number;
}

interface TriggerOptions {
  param?: string[];
  annotation?: string[];
  cron?: string;
  feed?: string;
}

function triggerOptions(command: Command): Command {
  return command
    .option('-p, --param <key value...>', 'default parameter (repeatable)')
    .option('-a, --annotation <key value...>', 'annotation (repeatable)')
    .option('--cron <expression>', 'fire on this schedule ("*/5 * * * *", or six fields with seconds)')
    .option('-f, --feed <action>', 'a feed that fires it (/whisk.system/alarms/alarm, once, interval); -p goes to the feed');
}

/** The feed a trigger was created with (its `feed` annotation), if any. */
function feedOf(trigger: TriggerView): string | undefined {
  const feed = trigger.annotations.find((a) => a.key === 'feed')?.value;
  return typeof feed === 'string' ? feed : undefined;
}

/**
 * Tells a feed about one of its triggers, as wsk does: the feed action is invoked (blocking) with
 * `lifecycleEvent` and `triggerName`, and the feed's own parameters.
 */
async function feedEvent(
  command: Command,
  feed: string,
  event: 'CREATE' | 'DELETE' | 'READ' | 'PAUSE' | 'UNPAUSE',
  trigger: string,
  params: Record<string, unknown> = {},
): Promise<unknown> {
  const { data } = await clientFor(command).request<unknown>('POST', `${actionPath(feed)}?blocking=true&result=true`, {
    ...params,
    lifecycleEvent: event,
    triggerName: `/_/${trigger}`,
  });
  return data;
}

/** The body of a trigger PUT: only what the options give, so that an update keeps the rest. */
function triggerBody(options: TriggerOptions): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (options.param) body.parameters = pairs(options.param, '--param');
  const annotations = pairs(options.annotation, '--annotation');
  if (options.cron !== undefined) annotations.push({ key: 'cron', value: options.cron });
  if (options.annotation || options.cron !== undefined) body.annotations = annotations;
  return body;
}

const triggerPath = (name: string) => `/api/v1/namespaces/_/triggers/${IsolaClient.path(name)}`;

/** `isola trigger`, as `wsk trigger`: create, update, get, list, delete and fire. */
export function registerTriggerCommands(program: Command): void {
  const trigger = program.command('trigger').description('create, update, get, list, delete and fire triggers');

  for (const [verb, overwrite] of [
    ['create', false],
    ['update', true],
  ] as const) {
    triggerOptions(
      trigger
        .command(`${verb} <name>`)
        .description(overwrite ? 'update a trigger (what you leave out is kept)' : 'create a trigger'),
    ).action(async (name: string, options: TriggerOptions, command: Command) => {
      if (options.feed !== undefined) return createWithFeed(command, name, options, overwrite);
      const { data } = await clientFor(command).request<TriggerView>(
        'PUT',
        `${triggerPath(name)}?overwrite=${overwrite}`,
        triggerBody(options),
      );
      if (globals(command).json) printJson(data);
      else process.stdout.write(`ok: ${overwrite ? 'updated' : 'created'} trigger ${data.name}\n`);
    });
  }

  trigger
    .command('get <name>')
    .description('show a trigger and the rules bound to it')
    .action(async (name: string, _options: unknown, command: Command) => {
      const { data } = await clientFor(command).request<TriggerView>('GET', triggerPath(name));
      const feed = feedOf(data);
      // As wsk: a feed's trigger shows what the feed says about it too.
      printJson(feed ? { ...data, feed: await feedEvent(command, feed, 'READ', name) } : data);
    });

  trigger
    .command('list')
    .description('list triggers')
    .option('--limit <n>', 'how many (at most 200)', wholeNumber(1, 200), 30)
    .option('--skip <n>', 'how many to skip', wholeNumber(0), 0)
    .action(async (options: { limit: number; skip: number }, command: Command) => {
      const { data } = await clientFor(command).request<TriggerView[]>(
        'GET',
        `/api/v1/namespaces/_/triggers?limit=${options.limit}&skip=${options.skip}`,
      );
      if (globals(command).json) return printJson(data);
      printTable(
        ['trigger', 'version', 'cron', 'updated'],
        data.map((t) => [
          `/${t.namespace}/${t.name}`,
          t.version,
          String(t.annotations.find((a) => a.key === 'cron')?.value ?? ''),
          formatTime(t.updated),
        ]),
      );
    });

  trigger
    .command('delete <name>')
    .description('delete a trigger')
    .action(async (name: string, _options: unknown, command: Command) => {
      const client = clientFor(command);
      const feed = feedOf((await client.request<TriggerView>('GET', triggerPath(name))).data);
      // As wsk: the feed is told first, so that it stops firing a trigger about to go.
      if (feed) await feedEvent(command, feed, 'DELETE', name);
      const { data } = await client.request<TriggerView>('DELETE', triggerPath(name));
      if (globals(command).json) printJson(data);
      else process.stdout.write(`ok: deleted trigger ${name}\n`);
    });

  trigger
    .command('fire <name>')
    .description("fire a trigger: each active rule's action is invoked with the payload")
    .option('-p, --param <key value...>', 'payload parameter (repeatable)')
    .action(async (name: string, options: { param?: string[] }, command: Command) => {
      const params = Object.fromEntries(pairs(options.param, '--param').map((p) => [p.key, p.value]));
      const { status, data } = await clientFor(command).request<{ activationId?: string }>('POST', triggerPath(name), params);
      if (globals(command).json) return printJson(status === 204 ? {} : data);
      if (status === 204 || !data?.activationId)
        process.stdout.write(`ok: triggered /_/${name}; no active rule is bound to it\n`);
      else process.stdout.write(`ok: triggered /_/${name} with id ${data.activationId}\n`);
    });
}

/** `trigger create --feed`: the trigger (annotated with its feed), then the feed's CREATE; undone when the feed refuses. */
async function createWithFeed(command: Command, name: string, options: TriggerOptions, overwrite: boolean): Promise<void> {
  const feed = options.feed as string;
  const client = clientFor(command);
  const annotations = [...pairs(options.annotation, '--annotation'), { key: 'feed', value: feed }];
  const { data } = await client.request<TriggerView>('PUT', `${triggerPath(name)}?overwrite=${overwrite}`, { annotations });
  const params = Object.fromEntries(pairs(options.param, '--param').map((p) => [p.key, p.value]));
  try {
    await feedEvent(command, feed, 'CREATE', name, params);
  } catch (error) {
    if (!overwrite) await client.request('DELETE', triggerPath(name)).catch(() => undefined);
    throw error;
  }
  if (globals(command).json) printJson(data);
  else process.stdout.write(`ok: ${overwrite ? 'updated' : 'created'} trigger ${data.name} with feed ${feed}\n`);
}
