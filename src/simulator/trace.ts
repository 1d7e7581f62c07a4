import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Traces in the format of the Azure Functions 2019 dataset (Shahrad et al.): per day,
 * `invocations_per_function_md.anon.dNN.csv` (HashOwner, HashApp, HashFunction, Trigger, then one
 * column of invocation counts per minute 1..1440), `function_durations_percentiles.anon.dNN.csv`
 * (..., Average, Count, Minimum, Maximum, percentiles) and `app_memory_percentiles.anon.dNN.csv`
 * (HashOwner, HashApp, SampleCount, AverageAllocatedMb, percentiles). Simulated per application,
 * as the paper does: an application's functions share its instances.
 */
export interface TraceApp {
  id: string;
  /** Invocations in each minute of the trace, every day concatenated. */
  perMinute: number[];
  /** Average execution time, ms. */
  durationMs: number;
  memoryMb: number;
  trigger: string;
}

export const MINUTES_PER_DAY = 1440;
export const DEFAULT_APP_MEMORY_MB = 128;

function csvRows(file: string): string[][] {
  return readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .filter((line) => line.trim() !== '')
    .map((line) => line.split(','));
}

function daySuffix(file: string): string | undefined {
  return /\.(d\d+)\.csv$/.exec(file)?.[1];
}

export function readTrace(dir: string): TraceApp[] {
  const files = readdirSync(dir);
  const days = files
    .filter((f) => f.startsWith('invocations_per_function_md.anon.'))
    .map(daySuffix)
    .filter((d): d is string => d !== undefined)
    .sort();
  if (days.length === 0) throw new Error(`No invocations_per_function_md.anon.dNN.csv files in ${dir}.`);
  const apps = new Map<string, TraceApp & { durationWeight: number; durationSum: number }>();
  days.forEach((day, dayIndex) => {
    const rows = csvRows(join(dir, `invocations_per_function_md.anon.${day}.csv`));
    const header = rows.shift() ?? [];
    const firstMinute = header.indexOf('1');
    if (firstMinute < 0) throw new Error(`invocations file for ${day} has no minute columns`);
    for (const row of rows) {
      const id = `${row[0]}/${row[1]}`;
      let app = apps.get(id);
      if (!app) {
        app = {
          id,
          perMinute: new Array(days.length * MINUTES_PER_DAY).fill(0),
          durationMs: 0,
          memoryMb: DEFAULT_APP_MEMORY_MB,
          trigger: row[3] ?? '',
          durationWeight: 0,
          durationSum: 0,
        };
        apps.set(id, app);
      }
      for (let m = 0; m < MINUTES_PER_DAY; m++) {
        const count = Number(row[firstMinute + m] ?? 0) || 0;
        const index = dayIndex * MINUTES_PER_DAY + m;
        app.perMinute[index] = (app.perMinute[index] ?? 0) + count;
      }
    }
    const durationsFile = join(dir, `function_durations_percentiles.anon.${day}.csv`);
    if (files.includes(`function_durations_percentiles.anon.${day}.csv`)) {
      const durations = csvRows(durationsFile);
      const head = durations.shift() ?? [];
      const average = head.indexOf('Average');
      const count = head.indexOf('Count');
      for (const row of durations) {
        const app = apps.get(`${row[0]}/${row[1]}`);
        const n = Number(row[count]) || 0;
        if (app && n > 0) {
          app.durationSum += (Number(row[average]) || 0) * n;
          app.durationWeight += n;
        }
      }
    }
    const memoryFile = join(dir, `app_memory_percentiles.anon.${day}.csv`);
    if (files.includes(`app_memory_percentiles.anon.${day}.csv`)) {
      const memory = csvRows(memoryFile);
      const head = memory.shift() ?? [];
      const allocated = head.indexOf('AverageAllocatedMb');
      for (const row of memory) {
        const app = apps.get(`${row[0]}/${row[1]}`);
        const mb = Number(row[allocated]);
        if (app && mb > 0) app.memoryMb = mb;
      }
    }
  });
  return [...apps.values()].map(({ durationSum, durationWeight, ...app }) => ({
    ...app,
    durationMs: durationWeight > 0 ? durationSum / durationWeight : 0,
  }));
}

/** A small deterministic PRNG (mulberry32), so that a seed gives the same trace everywhere. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface GenerateOptions {
  apps: number;
  days: number;
  seed: number;
}

/**
 * A synthetic trace with the mix of behaviours the Azure trace shows: timer-triggered apps on a
 * fixed period (many of them less often than every ten minutes), apps with Poisson arrivals at
 * rates spanning orders of magnitude, apps with diurnal bursts, and rare apps invoked a few times
 * a day.
 */
export function generateTrace(dir: string, options: GenerateOptions): TraceApp[] {
  const random = seededRandom(options.seed);
  const minutes = options.days * MINUTES_PER_DAY;
  const apps: TraceApp[] = [];
  const hex = () =>
    Math.floor(random() * 2 ** 32)
      .toString(16)
      .padStart(8, '0')
      .repeat(4);
  for (let i = 0; i < options.apps; i++) {
    const perMinute = new Array<number>(minutes).fill(0);
    const kind = random();
    let trigger = 'http';
    if (kind < 0.35) {
      trigger = 'timer';
      const periods = [1, 2, 5, 8, 12, 15, 20, 30, 45, 60, 120];
      const period = periods[Math.floor(random() * periods.length)] as number;
      const offset = Math.floor(random() * period);
      for (let m = offset; m < minutes; m += period) perMinute[m] = 1;
    } else if (kind < 0.7) {
      const perHour = 10 ** (random() * 3 - 1); // 0.1 to 100 invocations an hour
      const p = perHour / 60;
      for (let m = 0; m < minutes; m++) perMinute[m] = poisson(random, p);
    } else if (kind < 0.85) {
      trigger = 'queue';
      const start = Math.floor(random() * 18 * 60);
      const length = 30 + Math.floor(random() * 180);
      for (let d = 0; d < options.days; d++) {
        for (let m = start; m < start + length; m++) perMinute[d * MINUTES_PER_DAY + m] = poisson(random, 0.5 + random() * 3);
      }
    } else {
      trigger = 'event';
      const count = 1 + Math.floor(random() * 6) * options.days;
      for (let k = 0; k < count; k++) perMinute[Math.floor(random() * minutes)] = 1;
    }
    apps.push({
      id: `${hex()}/${hex()}`,
      perMinute,
      durationMs: Math.round(10 ** (1 + random() * 3)),
      memoryMb: [128, 160, 192, 256, 320, 512][Math.floor(random() * 6)] as number,
      trigger,
    });
  }
  writeTrace(dir, apps);
  return apps;
}

function poisson(random: () => number, lambda: number): number {
  const limit = Math.exp(-lambda);
  let k = 0;
  let p = 1;
  do {
    k++;
    p *= random();
  } while (p > limit);
  return k - 1;
}

/** Writes apps as an Azure-format trace (one function per app). */
export function writeTrace(dir: string, apps: readonly TraceApp[]): void {
  mkdirSync(dir, { recursive: true });
  const days = Math.ceil((apps[0]?.perMinute.length ?? MINUTES_PER_DAY) / MINUTES_PER_DAY);
  const minuteColumns = Array.from({ length: MINUTES_PER_DAY }, (_, i) => String(i + 1));
  for (let d = 0; d < days; d++) {
    const day = `d${String(d + 1).padStart(2, '0')}`;
    const invocations = [['HashOwner', 'HashApp', 'HashFunction', 'Trigger', ...minuteColumns].join(',')];
    const durations = [['HashOwner', 'HashApp', 'HashFunction', 'Average', 'Count', 'Minimum', 'Maximum'].join(',')];
    const memory = [['HashOwner', 'HashApp', 'SampleCount', 'AverageAllocatedMb'].join(',')];
    for (const app of apps) {
      const [owner, application] = app.id.split('/') as [string, string];
      const counts = app.perMinute.slice(d * MINUTES_PER_DAY, (d + 1) * MINUTES_PER_DAY);
      const total = counts.reduce((a, b) => a + b, 0);
      invocations.push([owner, application, `${application}f`, app.trigger, ...counts].join(','));
      durations.push([owner, application, `${application}f`, app.durationMs, total, app.durationMs, app.durationMs].join(','));
      memory.push([owner, application, 100, app.memoryMb].join(','));
    }
    writeFileSync(join(dir, `invocations_per_function_md.anon.${day}.csv`), `${invocations.join('\n')}\n`);
    writeFileSync(join(dir, `function_durations_percentiles.anon.${day}.csv`), `${durations.join('\n')}\n`);
    writeFileSync(join(dir, `app_memory_percentiles.anon.${day}.csv`), `${memory.join('\n')}\n`);
  }
}
