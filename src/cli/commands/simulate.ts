import { type Command, InvalidArgumentError, Option } from 'commander';
import type { ClusterComparison } from '../../simulator/cluster.js';
import { printJson, printTable } from '../output.js';
import { clientFor, globals, wholeNumber } from './common.js';

export function registerSimulateCommand(program: Command): void {
  program
    .command('simulate')
    .description(
      'replay an Azure Functions 2019 trace under keep-alive policies and report cold starts and idle memory (with --invokers, across a simulated cluster of invokers)',
    )
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
    .option(
      '--invokers <n...>',
      'also replay the trace across this many simulated invokers (several counts: a cluster of each), comparing placements',
      (text: string, previous: number[] | undefined) => [...(previous ?? []), wholeNumber(1, 100_000)(text)],
    )
    .addOption(
      new Option('--placement <placement...>', 'placements compared in a cluster')
        .choices(['affinity', 'random', 'least-loaded'])
        .default(['affinity', 'random', 'least-loaded']),
    )
    .option('--invoker-memory <mb>', "each invoker's memory budget, MB (default: from --headroom)", wholeNumber(1))
    .option(
      '--headroom <x>',
      "the cluster's memory as a multiple of the most one unlimited host holds at once",
      positiveNumber,
      1.5,
    )
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
          invokers?: number[];
          placement: ('affinity' | 'random' | 'least-loaded')[];
          invokerMemory?: number;
          headroom: number;
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
        let clusters: ClusterComparison[] | undefined;
        if (options.invokers) {
          const { compareClusters } = await import('../../simulator/cluster.js');
          const json = globals(command).json;
          clusters = policies.map((policy) =>
            compareClusters(
              apps,
              policy,
              {
                invokers: options.invokers as number[],
                placements: options.placement,
                invokerMemoryMb: options.invokerMemory,
                headroom: options.headroom,
                seed: options.seed,
              },
              (message) => {
                if (!json) process.stderr.write(`${message}\n`);
              },
            ),
          );
        }
        if (globals(command).json)
          return printJson({
            trace: dir,
            apps: apps.length,
            policies: reports,
            ...(replays ? { replays } : {}),
            ...(clusters ? { clusters } : {}),
          });
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
        if (clusters) {
          printTable(
            [
              'policy',
              'invokers',
              'MB each',
              'placement',
              'cold starts',
              'cold start %',
              'vs single host',
              'waited',
              'evictions',
              'calls max/mean',
              'peak memory max/mean',
            ],
            clusters.flatMap((c) => [
              [c.policy, 1, 'unlimited', 'single host', c.singleHost.coldStarts, c.singleHost.coldStartPct, 1, 0, 0, 1, 1],
              ...c.runs.map((r) => [
                c.policy,
                r.invokers,
                r.invokerMemoryMb ?? 'unlimited',
                r.placement,
                r.coldStarts,
                r.coldStartPct,
                r.coldStartsVsSingleHost,
                r.waited,
                r.evictions,
                r.invocationsMaxOverMean,
                r.peakMemoryMaxOverMean,
              ]),
            ]),
          );
        }
      },
    );
}

function positiveNumber(text: string): number {
  const value = /^\s*\d+(\.\d+)?\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!(value > 0)) throw new InvalidArgumentError('It must be a number above 0.');
  return value;
}
