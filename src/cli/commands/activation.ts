import { type Command, InvalidArgumentError } from 'commander';
import { parseDuration } from '../../config.js';
import type { ActivationRecord } from '../../core/types.js';
import { ApiError, IsolaClient } from '../client.js';
import { formatTime, notePage, printJson, printTable } from '../output.js';
import { clientFor, globals, wholeNumber } from './common.js';

const STATUS_NAMES = ['success', 'application error', 'developer error', 'internal error'];
const DEFAULT_WAIT = '5m';

type Summary = Omit<ActivationRecord, 'logs' | 'response'> & { statusCode: number };

/**
 * A point in time as ms since the epoch: a duration means that long ago (`5m`, `2h`, `7d`), else
 * a date (`2024-05-01`, `2024-05-01T12:00:00Z`) or ms since the epoch.
 */
export function pointInTime(text: string, now = Date.now()): number {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  try {
    return now - parseDuration(trimmed);
  } catch {
    // not a duration
  }
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) {
    throw new InvalidArgumentError(
      'It must be a duration back from now (30s, 5m, 2h, 7d), a date (2024-05-01 or 2024-05-01T12:00:00Z) or ms since the epoch.',
    );
  }
  return date;
}

function waitDuration(text: string): number {
  try {
    return parseDuration(text);
  } catch {
    throw new InvalidArgumentError('It must be a duration such as 30s, 5m or 1h.');
  }
}

/**
 * The activations that finished since a point in time, each returned once, oldest first: what
 * `isola activation poll` and `isola dev` print as they come.
 */
export class ActivationTail {
  private readonly seen = new Set<string>();

  constructor(
    private readonly client: IsolaClient,
    private readonly name: string | undefined,
    private readonly since: number,
  ) {}

  /** Asks the server once; the records not returned before. */
  async next(): Promise<ActivationRecord[]> {
    const query = new URLSearchParams({ docs: 'true', limit: '200', since: String(this.since) });
    if (this.name) query.set('name', this.name);
    const { data } = await this.client.request<ActivationRecord[]>('GET', `/api/v1/namespaces/_/activations?${query}`);
    // Newest first from the server.
    const fresh = data.reverse().filter((record) => !this.seen.has(record.activationId));
    for (const record of fresh) this.seen.add(record.activationId);
    return fresh;
  }
}

export function registerActivationCommands(program: Command): void {
  const activation = program.command('activation').description('list activations and read their records, logs and results');

  activation
    .command('list [name]')
    .description('list activations, newest first')
    .option('--limit <n>', 'how many (at most 200)', wholeNumber(1, 200), 30)
    .option('--skip <n>', 'how many to skip', wholeNumber(0), 0)
    .option('--since <when>', 'only those started since then: 5m (ago), a date, or ms since the epoch', (t) => pointInTime(t))
    .option('--upto <when>', 'only those started until then: 5m (ago), a date, or ms since the epoch', (t) => pointInTime(t))
    .action(
      async (
        name: string | undefined,
        options: { limit: number; skip: number; since?: number; upto?: number },
        command: Command,
      ) => {
        const query = new URLSearchParams({ limit: String(options.limit), skip: String(options.skip) });
        if (name) query.set('name', name);
        if (options.since !== undefined) query.set('since', String(options.since));
        if (options.upto !== undefined) query.set('upto', String(options.upto));
        const { data } = await clientFor(command).request<Summary[]>('GET', `/api/v1/namespaces/_/activations?${query}`);
        notePage('activation', data.length, options);
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
      },
    );

  activation
    .command('poll [name]')
    .description('print activations as they finish, with their logs, until interrupted (or --exit)')
    .option('--since-seconds <n>', 'also those started this many seconds ago', wholeNumber(0), 0)
    .option('--exit <seconds>', 'stop after this many seconds', wholeNumber(1))
    .option('--interval <duration>', 'how often to ask', waitDuration, 1000)
    .action(
      async (name: string | undefined, options: { sinceSeconds: number; exit?: number; interval: number }, command: Command) => {
        const client = clientFor(command);
        const json = globals(command).json;
        const since = Date.now() - options.sinceSeconds * 1000;
        const deadline = options.exit === undefined ? Number.POSITIVE_INFINITY : Date.now() + options.exit * 1000;
        const tail = new ActivationTail(client, name, since);
        if (!json) process.stdout.write('Enter Ctrl-c to exit.\n');
        for (;;) {
          for (const record of await tail.next()) {
            if (json) process.stdout.write(`${JSON.stringify(record)}\n`);
            else {
              process.stdout.write(`\nActivation: '${record.name}' (${record.activationId})\n`);
              for (const line of record.logs) process.stdout.write(`${line}\n`);
            }
          }
          if (Date.now() + options.interval > deadline) break;
          await new Promise((done) => setTimeout(done, options.interval));
        }
        if (!json) process.stdout.write('\nPolling stopped.\n');
      },
    );

  const byId = (path: string) => async (id: string, options: { wait?: number | true }, command: Command) => {
    const client = clientFor(command);
    const url = `/api/v1/namespaces/_/activations/${IsolaClient.path(id)}${path}`;
    const waitMs = options.wait === true ? parseDuration(DEFAULT_WAIT) : options.wait;
    const deadline = Date.now() + (waitMs ?? 0);
    let data: unknown;
    for (;;) {
      try {
        ({ data } = await client.request('GET', url));
        break;
      } catch (error) {
        // A running activation has no record yet: with --wait, ask again until it has one.
        if (!(error instanceof ApiError) || error.status !== 404 || waitMs === undefined) throw error;
        if (Date.now() > deadline) throw new Error(`The activation ${id} did not finish within the wait (or does not exist).`);
        await new Promise((done) => setTimeout(done, 250));
      }
    }
    if (path === '/logs' && !globals(command).json) {
      for (const line of (data as { logs: string[] }).logs) process.stdout.write(`${line}\n`);
      return;
    }
    printJson(path === '/result' && !globals(command).json ? (data as { result: unknown }).result : data);
  };

  const waitOption = [
    '--wait [duration]',
    `wait for a running activation to finish (up to ${DEFAULT_WAIT}, or this long)`,
  ] as const;
  activation
    .command('get <id>')
    .description('show an activation record')
    .option(...waitOption, waitDuration)
    .action(byId(''));
  activation
    .command('logs <id>')
    .description("print an activation's logs")
    .option(...waitOption, waitDuration)
    .action(byId('/logs'));
  activation
    .command('result <id>')
    .description("print an activation's result")
    .option(...waitOption, waitDuration)
    .action(byId('/result'));
}
