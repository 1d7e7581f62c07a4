import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { IsolateRunStats } from '../sandbox/isolate/isolate-backend.js';
import type { Scheduler } from '../scheduler/scheduler.js';

const SECONDS_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/** The platform's Prometheus metrics, in a registry of its own. */
export class Metrics {
  readonly registry = new Registry();
  readonly activations = new Counter({
    name: 'isola_activations_total',
    help: 'Finished activations by backend, function and status.',
    labelNames: ['isolation', 'namespace', 'action', 'status'] as const,
    registers: [this.registry],
  });
  readonly starts = new Counter({
    name: 'isola_starts_total',
    help: 'How invocations found their instance: cold (a new one was started), stemcell (a cold start on a blank sandbox made ahead), restore (from a snapshot of the function), warm, or prewarm (the first call on an instance the keep-alive policy started ahead, or a provisioned one).',
    labelNames: ['isolation', 'namespace', 'action', 'start'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'isola_activation_duration_seconds',
    help: 'Activation duration, initialisation included.',
    labelNames: ['isolation'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  readonly initTime = new Histogram({
    name: 'isola_init_duration_seconds',
    help: 'Time to create a sandbox and load the function on a cold start.',
    labelNames: ['isolation'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });
  readonly waitTime = new Histogram({
    name: 'isola_wait_duration_seconds',
    help: 'Time an invocation waited before its instance was chosen.',
    labelNames: ['isolation'] as const,
    buckets: SECONDS_BUCKETS,
    registers: [this.registry],
  });

  constructor(scheduler: Scheduler, isolateRuns?: IsolateRunStats) {
    collectDefaultMetrics({ register: this.registry, prefix: 'isola_process_' });
    new Gauge({
      name: 'isola_instances',
      help: 'Live instances by backend and state.',
      labelNames: ['isolation', 'state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const entry of scheduler.stats().instances)
          this.set({ isolation: entry.isolation, state: entry.state }, entry.count);
      },
    });
    new Gauge({
      name: 'isola_function_instances',
      help: 'Live instances of each function by state.',
      labelNames: ['namespace', 'action', 'state'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const fn of scheduler.stats().functions) {
          for (const entry of fn.instances)
            this.set({ namespace: fn.namespace, action: fn.action, state: entry.state }, entry.count);
        }
      },
    });
    new Gauge({
      name: 'isola_function_queue_length',
      help: 'Invocations of each function waiting for an instance.',
      labelNames: ['namespace', 'action'] as const,
      registers: [this.registry],
      collect() {
        this.reset();
        for (const fn of scheduler.stats().functions) this.set({ namespace: fn.namespace, action: fn.action }, fn.queued);
      },
    });
    new Gauge({
      name: 'isola_memory_used_megabytes',
      help: 'Memory limits of live instances, summed.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().memoryUsedMb);
      },
    });
    new Gauge({
      name: 'isola_memory_budget_megabytes',
      help: 'The memory budget for instances.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().memoryBudgetMb);
      },
    });
    new Gauge({
      name: 'isola_queue_length',
      help: 'Invocations waiting for an instance.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().queued);
      },
    });
    if (isolateRuns) {
      new Counter({
        name: 'isola_isolate_runs_total',
        help: 'Runs under isolation "isolate" by how they were made: sync (on the server thread, for versions whose runs proved short) or async (on a pool thread).',
        labelNames: ['path'] as const,
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc({ path: 'sync' }, isolateRuns.sync);
          this.inc({ path: 'async' }, isolateRuns.async);
        },
      });
      new Counter({
        name: 'isola_isolate_sync_overruns_total',
        help: 'Synchronous runs that overran their budget and were made again asynchronously in a new isolate.',
        registers: [this.registry],
        collect() {
          this.reset();
          this.inc(isolateRuns.overruns);
        },
      });
    }
    new Gauge({
      name: 'isola_prewarmed_sandboxes',
      help: 'Blank sandboxes made ahead of demand.',
      registers: [this.registry],
      collect() {
        this.set(scheduler.stats().stemCells);
      },
    });
  }
}
