// Throughput of the store's activation write path: enqueueActivation and completeActivation, on
// SQLite (and on PostgreSQL with --database). Pass one or more store modules to compare them side
// by side in one run (rounds alternate between them, so that load on the machine hits both alike).
// `--database private-postgres` runs against a private PostgreSQL started for the run.
//   node --import tsx scripts/store-write-throughput.ts [--rounds 5] [--count 5000] [--database URL]
//     [--only <measure name part>] [store.ts ...]
// Prints, per measure and module, the median rate and CPU time per operation as JSON.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { ActivationRecord } from '../src/core/types.js';
import { PostgresInstance } from '../test/helpers/postgres.js';

interface StoreUnderTest {
  enqueueActivation(
    queued: {
      activationId: string;
      namespace: string;
      name: string;
      version: string;
      subject: string;
      accepted: number;
      params: Record<string, unknown> | undefined;
      annotations: { key: string; value: unknown }[];
    },
    state?: 'queued' | 'running',
  ): Promise<void>;
  completeActivation(record: ActivationRecord, accepted: number, attempts?: number): Promise<void>;
  close(): Promise<void>;
}

interface StoreModule {
  Store: { open(options: { dataDir: string; databaseUrl?: string }): Promise<StoreUnderTest> };
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    rounds: { type: 'string', default: '5' },
    count: { type: 'string', default: '5000' },
    database: { type: 'string' },
    only: { type: 'string' },
  },
});
const rounds = Number(values.rounds);
const count = Number(values.count);
const modules = positionals.length > 0 ? positionals : ['src/store/store.ts'];

let sequence = 0;
const newId = () => `${Date.now().toString(16)}${(sequence++).toString(16).padStart(20, '0')}`;

function queued(id: string) {
  return {
    activationId: id,
    namespace: 'guest',
    name: 'hello',
    version: '0.0.1',
    subject: 'guest',
    accepted: Date.now(),
    params: { name: 'world', n: 42 },
    annotations: [{ key: 'kind', value: 'nodejs:20' }],
  };
}

function record(id: string): ActivationRecord {
  const now = Date.now();
  return {
    activationId: id,
    namespace: 'guest',
    name: 'hello',
    version: '0.0.1',
    subject: 'guest',
    start: now,
    end: now + 1,
    duration: 1,
    response: { status: 'success', success: true, result: { greeting: 'hello world' } },
    logs: ['a log line'],
    annotations: [{ key: 'kind', value: 'nodejs:20' }],
    publish: false,
  };
}

/**
 * Operations per second for `count` operations, `inFlight` at a time, and the CPU time this
 * process spent per operation (less sensitive than the rate to what else runs on the machine).
 */
async function measure(inFlight: number, op: (id: string) => Promise<void>): Promise<Sample> {
  const ids = Array.from({ length: count }, newId);
  const cpu = process.cpuUsage();
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < ids.length) await op(ids[next++] as string);
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  return { opsPerSecond: Math.round(count / elapsed), cpuMicrosPerOp: Math.round(((used.user + used.system) / count) * 10) / 10 };
}

interface Sample {
  opsPerSecond: number;
  cpuMicrosPerOp: number;
}

const MEASURES = {
  'enqueue, 1 in flight': (s: StoreUnderTest) => measure(1, (id) => s.enqueueActivation(queued(id))),
  'enqueue, 64 in flight': (s: StoreUnderTest) => measure(64, (id) => s.enqueueActivation(queued(id))),
  'complete, 1 in flight': (s: StoreUnderTest) => measure(1, (id) => s.completeActivation(record(id), Date.now())),
  'complete, 64 in flight': (s: StoreUnderTest) => measure(64, (id) => s.completeActivation(record(id), Date.now())),
  'enqueue then complete, 64 in flight': (s: StoreUnderTest) =>
    measure(64, async (id) => {
      await s.enqueueActivation(queued(id), 'running');
      await s.completeActivation(record(id), Date.now());
    }),
};

const privatePostgres = values.database === 'private-postgres' ? await PostgresInstance.start() : undefined;
const database = privatePostgres ? await privatePostgres.createDatabase() : values.database;

const loaded = await Promise.all(
  modules.map(async (path) => ({
    path,
    module: (await import(pathToFileURL(resolve(path)).href)) as StoreModule,
  })),
);
const samples = new Map<string, Sample[]>();
for (let round = 0; round < rounds; round++) {
  // Alternate which module goes first, so that neither always runs on a warmer process.
  const order = round % 2 === 0 ? loaded : [...loaded].reverse();
  for (const { path, module } of order) {
    const dataDir = mkdtempSync(join(tmpdir(), 'isola-store-bench-'));
    let store: StoreUnderTest | undefined;
    try {
      store = await module.Store.open({ dataDir, ...(database ? { databaseUrl: database } : {}) });
      for (const [name, run] of Object.entries(MEASURES)) {
        if (values.only && !name.includes(values.only)) continue;
        const key = `${path} | ${name}`;
        samples.set(key, [...(samples.get(key) ?? []), await run(store)]);
      }
    } finally {
      await store?.close();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }
}
await privatePostgres?.stop();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
const result = Object.fromEntries(
  [...samples].map(([key, xs]) => [
    key,
    {
      opsPerSecond: median(xs.map((x) => x.opsPerSecond)),
      cpuMicrosPerOp: median(xs.map((x) => x.cpuMicrosPerOp)),
      samples: xs.map((x) => x.opsPerSecond),
    },
  ]),
);
process.stdout.write(`${JSON.stringify({ count, rounds, database: values.database ?? 'sqlite', result }, null, 2)}\n`);
