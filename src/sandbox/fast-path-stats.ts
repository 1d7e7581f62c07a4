import { Counter, type Registry } from 'prom-client';

/**
 * How a backend with a fast path made its runs, for the metrics: on the server's thread (`sync`),
 * on another thread (`async`), and fast-path runs that overran their budget.
 */
export interface FastPathRunStats {
  sync: number;
  async: number;
  overruns: number;
}

/** Two counters read from `stats` on each scrape: runs by path, and overruns. */
export function registerFastPathMetrics(
  registry: Registry,
  stats: FastPathRunStats,
  runs: { name: string; help: string },
  overruns: { name: string; help: string },
): void {
  new Counter({
    ...runs,
    labelNames: ['path'] as const,
    registers: [registry],
    collect() {
      this.reset();
      this.inc({ path: 'sync' }, stats.sync);
      this.inc({ path: 'async' }, stats.async);
    },
  });
  new Counter({
    ...overruns,
    registers: [registry],
    collect() {
      this.reset();
      this.inc(stats.overruns);
    },
  });
}
