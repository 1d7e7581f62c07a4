import type { Command } from 'commander';
import { globals, wholeNumber } from '../../../src/cli/commands/common.js';

interface BenchOptions {
  quick?: boolean;
  backends?: string[];
  workloads?: string[];
  out: string;
  concurrency: number;
  memoryBudget: number;
  attacks: boolean;
  peers: boolean;
  dimension?: string[];
  kinds?: string[];
}

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('measure every backend this host supports side by side, with peers and an escape battery; writes a report')
    .option('--quick', 'few samples per figure (minutes, not an hour); the slowest workloads only in full runs')
    .option(
      '--backends <name...>',
      'isolate, wasm, process, container (runc and crun), container:runc, container:crun, gvisor, microvm, microvm:boot, microvm:specialised, vm',
    )
    .option('--workloads <name...>', 'hello, json, compression, graph, thumbnail, fib, ml')
    .option(
      '--dimension <name...>',
      'what to measure: backends (the default: every backend, the workloads, peers, the escape battery), languages (every kind on every backend that runs it, against the bare runtimes)',
    )
    .option('--kinds <kind...>', 'the languages dimension: nodejs, python, java, go, ruby, php, native (default: all)')
    .requiredOption('--out <dir>', 'where results.json, summary.md and report.html go')
    .option('--concurrency <n>', 'connections for the throughput figures', wholeNumber(1, 1024), 4)
    .option('--memory-budget <MB>', 'memory the density figure fills with idle instances', wholeNumber(1), 1024)
    .option('--no-attacks', 'skip the isolation battery')
    .option('--no-peers', 'skip the peers (workerd, bare runtimes, bare QEMU, bare node)')
    .action(async (options: BenchOptions, command: Command) => {
      const { runHarness } = await import('./harness.js');
      const { writeReport } = await import('./report.js');
      const { SingleBar, Presets } = await import('cli-progress');
      const { dataDir } = globals(command);
      const bar = new SingleBar(
        {
          format: ' {bar} {percentage}% | {value}/{total} | {step}',
          hideCursor: true,
          clearOnComplete: false,
          noTTYOutput: true,
          notTTYSchedule: 5000,
          stream: process.stderr,
          etaBuffer: 20,
        },
        Presets.shades_classic,
      );
      let value = 0;
      bar.start(1, 0, { step: 'starting' });
      const notes: string[] = [];
      const results = await runHarness({
        quick: Boolean(options.quick),
        ...(options.backends ? { backends: options.backends.flatMap((b) => b.split(',')).filter(Boolean) } : {}),
        ...(options.workloads ? { workloads: options.workloads.flatMap((w) => w.split(',')).filter(Boolean) } : {}),
        ...(options.dimension ? { dimensions: options.dimension.flatMap((d) => d.split(',')).filter(Boolean) } : {}),
        ...(options.kinds ? { kinds: options.kinds.flatMap((k) => k.split(',')).filter(Boolean) } : {}),
        // Images and snapshots are cached under the data dir when one is given.
        ...(dataDir ? { dataDir: `${dataDir}/bench` } : {}),
        concurrency: options.concurrency,
        memoryBudgetMb: options.memoryBudget,
        attacks: options.attacks,
        peers: options.peers,
        progress: {
          total: (steps) => bar.setTotal(Math.max(steps, value)),
          step: (label) => bar.update(value, { step: label }),
          done: () => {
            value++;
            if (value > bar.getTotal()) bar.setTotal(value);
            bar.update(value);
          },
          note: (message) => notes.push(message),
        },
      }).finally(() => bar.stop());
      const paths = await writeReport(results, options.out);
      for (const note of notes) process.stderr.write(`note: ${note}\n`);
      process.stdout.write(`${paths.json}\n${paths.markdown}\n${paths.html}\n`);
    });
}
