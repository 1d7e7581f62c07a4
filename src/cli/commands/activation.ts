import type { Command } from 'commander';
import type { ActivationRecord } from '../../core/types.js';
import { IsolaClient } from '../client.js';
import { formatTime, printJson, printTable } from '../output.js';
import { clientFor, globals } from './common.js';

const STATUS_NAMES = ['success', 'application error', 'developer error', 'internal error'];

type Summary = Omit<ActivationRecord, 'logs' | 'response'> & { statusCode: number };

export function registerActivationCommands(program: Command): void {
  const activation = program.command('activation').description('list activations and read their records, logs and results');

  activation
    .command('list [name]')
    .description('list activations, newest first')
    .option('--limit <n>', 'how many', '30')
    .option('--skip <n>', 'how many to skip', '0')
    .option('--since <ms>', 'only those started at or after this time (ms since the epoch)')
    .action(async (name: string | undefined, options: { limit: string; skip: string; since?: string }, command: Command) => {
      const query = new URLSearchParams({ limit: String(Number(options.limit)), skip: String(Number(options.skip)) });
      if (name) query.set('name', name);
      if (options.since) query.set('since', options.since);
      const { data } = await clientFor(command).request<Summary[]>('GET', `/api/v1/namespaces/_/activations?${query}`);
      if (globals(command).json) return printJson(data);
      const annotation = (a: Summary, key: string) => a.annotations.find((x) => x.key === key)?.value;
      printTable(
        ['start', 'activation id', 'action', 'version', 'isolation', 'cold/warm', 'duration', 'status'],
        data.map((a) => [
          formatTime(a.start),
          a.activationId,
          a.name,
          a.version,
          String(annotation(a, 'isolation') ?? ''),
          annotation(a, 'coldStart') ? 'cold' : 'warm',
          `${a.duration} ms`,
          STATUS_NAMES[a.statusCode] ?? String(a.statusCode),
        ]),
      );
    });

  const byId = (path: string) => async (id: string, _options: unknown, command: Command) => {
    const { data } = await clientFor(command).request('GET', `/api/v1/namespaces/_/activations/${IsolaClient.path(id)}${path}`);
    if (path === '/logs' && !globals(command).json) {
      for (const line of (data as { logs: string[] }).logs) process.stdout.write(`${line}\n`);
      return;
    }
    printJson(path === '/result' && !globals(command).json ? (data as { result: unknown }).result : data);
  };

  activation.command('get <id>').description('show an activation record').action(byId(''));
  activation.command('logs <id>').description("print an activation's logs").action(byId('/logs'));
  activation.command('result <id>').description("print an activation's result").action(byId('/result'));
}
