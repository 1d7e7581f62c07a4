import { type Command, Option } from 'commander';
import { printJson, printTable } from '../output.js';
import { clientFor, globals, wholeNumber } from './common.js';

export function registerSimulateCommand(program: Command): void {
  program
    .command('simulate')
    .description('replay an Azure Functions 2019 trace under keep-alive policies and report cold starts and idle memory')
    .option('--trace <dir>', 'directory of invocations_per_function_md.anon.dNN.csv (+ durations and memory) files')
    .addOption(
      new Option('--policy <policy...>', 'policies to compare: fixed:<duration>, hybrid').default(['fixed:10m', 'hybrid']),
    )
    .option('--generate <dir>', 'write a synthetic trace in the dataset format into <dir> (and simulate it)')
    .option('--apps <n>', 'apps in a generated trace', wholeNumber(1, 1_000_000), 200)
    .option('--days <n>', 'days in a generated trace', wholeNumber(1, 366), 1)
    .option('--seed <n>', 'seed of a generated trace', wholeNumber(0, 2 ** 32 - 1), 1)
    .option('--replay <ms-per-minute>', 'also replay the trace against the server (--apihost), one trace minute in this many ms')
    .option('--replay-apps <n>', 'how many apps to replay (the busiest)', wholeNumber(1), 20)
    .option('--replay-minutes <n>', 'how many minutes of the trace to replay', wholeNumber(1), 240)
    .action(
      async (
        options: {
          trace?: string;
          policy: string[];
          generate?: string;
          apps: number;
          days: number;
          seed: number;
          replay?: string;
          replayApps: number;
          replayMinutes: number;
        },
        command: Command,
      ) => {
        const { readTrace, generateTrace } = await import('../../simulator/trace.js');
        const { simulate } = await import('../../simulator/simulate.js');
        const { parsePolicy } = await import('../../scheduler/policy.js');
        const { parseDuration } = await import('../../config.js');
        const { scalePolicy } = await import('../../simulator/scale.js');
        const dir = options.generate ?? options.trace;
        if (!dir) throw new Error('Give --trace <dir>, or --generate <dir> to make a synthetic one.');
        const apps = options.generate
          ? generateTrace(options.generate, {
              apps: options.apps,
              days: options.days,
              seed: options.seed,
            })
          : readTrace(dir);
        const policies = options.policy.map(parsePolicy);
        const reports = policies.map((policy) => simulate(apps, policy));
        let replays: unknown[] | undefined;
        if (options.replay) {
          const { replay } = await import('../../simulator/replay.js');
          const minuteMs = parseDuration(options.replay);
          const minutes = options.replayMinutes;
          const busiest = [...apps]
            .map((app) => ({ ...app, perMinute: app.perMinute.slice(0, minutes) }))
            .sort((a, b) => b.perMinute.filter(Boolean).length - a.perMinute.filter(Boolean).length)
            .slice(0, options.replayApps);
          replays = [];
          for (const [i, policy] of options.policy.entries()) {
            const scaled = scalePolicy(policy, minuteMs);
            const live = await replay({
              client: clientFor(command),
              apps: busiest,
              policy: scaled,
              minuteMs,
              prefix: `replay-${process.pid}-${i}`,
            });
            const predicted = simulate(busiest, parsePolicy(scaled), minuteMs);
            replays.push({
              policy,
              scaled,
              live,
              simulated: {
                coldStartPct: predicted.coldStartPct,
                coldStarts: predicted.coldStarts,
                invocations: predicted.invocations,
              },
            });
          }
        }
        if (globals(command).json)
          return printJson({ trace: dir, apps: apps.length, policies: reports, ...(replays ? { replays } : {}) });
        printTable(
          ['policy', 'apps', 'invocations', 'cold starts', 'cold start %', 'p75 app cold %', 'wasted GB-s', 'on histogram %'],
          reports.map((r) => [
            r.policy,
            r.apps,
            r.invocations,
            r.coldStarts,
            r.coldStartPct,
            r.appColdStartPctP75,
            r.wastedMemoryGbSeconds,
            r.appsOnHistogramPct,
          ]),
        );
        if (replays) printJson(replays);
      },
    );
}
