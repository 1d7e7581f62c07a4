/**
 * A run of the resource benchmark: deploys the resources function under each target, runs it
 * there, bare on the host and (for wasm) the C kernels natively, rounds in turns, and makes the
 * rows of the table and the chart. Targets come in groups, one server each, measured one group
 * after the other (a data dir takes one server at a time): `npm run bench:resources` has one group
 * with every backend, the harness's resources dimension a group per server configuration (runc
 * and crun, the two microVM guests). Bare runs in turns within every group; the overhead is
 * against all of bare's runs.
 */

import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Isolation } from '../../../src/core/kinds.js';
import { egressSupported } from '../../../src/sandbox/network/egress.js';
import type { ServerProcess } from '../../../test/helpers/server-process.js';
import { TestHost } from '../../../test/helpers/test-host.js';
import {
  ECHO_PORT,
  METRICS,
  type Metric,
  overheadPercent,
  RESOURCES_FUNCTION,
  type ResourceParams,
  type ResourceResult,
  type ResourceRow,
  receiverProgram,
  runBare,
  SINK_PORT,
} from './resources.js';
import { summarize } from './stats.js';

/**
 * Where the test host answers, reached through the egress policy: in the benchmarking range
 * (RFC 2544), apart from the egress tests' 198.51.100.0/24, so that the two may run at once.
 */
const TEST_NETWORK = '198.18.0';
const TEST_HOST = `${TEST_NETWORK}.10`;

/** A backend configuration to measure. */
export interface ResourceTarget {
  name: string;
  isolation: Isolation;
}

/** Targets one server runs together. */
export interface ResourceGroup {
  targets: ResourceTarget[];
  start(): Promise<ServerProcess>;
  stop(server: ServerProcess): Promise<void>;
}

export interface ResourcesResults {
  rounds: number;
  ms: number;
  mb: number;
  pings: number;
  tookS: number;
  rows: ResourceRow[];
  /** Targets that could not be measured, and why. */
  unavailable: { target: string; why: string }[];
  /** The C kernels run natively: wasm's baseline. */
  nativeC: Partial<Record<Metric, number>>;
  samples: Record<string, ResourceResult[]>;
}

export interface ResourcesOptions {
  quick: boolean;
  groups: ResourceGroup[];
  log?: (message: string) => void;
  /** Called once per measured run (bare, native or a target), for progress. */
  ran?: (label: string) => void;
}

const KERNELS_C = fileURLToPath(new URL('../functions/resources/kernels.c', import.meta.url));

/** The C kernels as a wasm module and as a native program, or why they could not be built. */
function buildKernels(dir: string): { wasm: Buffer; native: string } | string {
  const wasm = join(dir, 'kernels.wasm');
  const native = join(dir, 'kernels');
  try {
    // Bulk memory: the copy is wasm's memory.copy, as it is a memcpy natively.
    execFileSync('clang', ['--target=wasm32-wasi', '-O2', '-mbulk-memory', '-s', '-o', wasm, KERNELS_C], { stdio: 'pipe' });
    execFileSync('gcc', ['-O2', '-o', native, KERNELS_C], { stdio: 'pipe' });
  } catch (error) {
    const stderr = String((error as { stderr?: Buffer }).stderr ?? '').trim();
    return `the C kernels did not build (npx isola setup wasm): ${stderr.slice(0, 200) || (error as Error).message}`;
  }
  return { wasm: readFileSync(wasm), native };
}

/** The native kernels run bare on the host: the JSON parameters on stdin, as the wasm module gets them. */
function runNative(program: string, params: ResourceParams): Promise<ResourceResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(program, [], { encoding: 'utf8' }, (error, stdout) =>
      error ? reject(error) : resolve(JSON.parse(stdout) as ResourceResult),
    );
    child.stdin?.end(JSON.stringify(params));
  });
}

const actionName = (target: { name: string }) => `resources-${target.name.replace(/[^a-zA-Z0-9_-]/g, '-')}`;

async function runUnder(server: ServerProcess, target: ResourceTarget, params: ResourceParams): Promise<ResourceResult> {
  const response = await server.invokeToEnd<{
    response: { status: string; result: ResourceResult & { error?: string } };
  }>(actionName(target), params, 600_000);
  const record = response.body.response;
  if (response.status !== 200 || record?.status !== 'success') {
    throw new Error(
      `${target.name}: ${response.status} ${record?.status}: ${JSON.stringify(record?.result ?? response.body).slice(0, 300)}`,
    );
  }
  return record.result;
}

function medians(samples: readonly ResourceResult[]): Partial<Record<Metric, number>> {
  const out: Partial<Record<Metric, number>> = {};
  for (const metric of METRICS) {
    const values = samples.map((s) => s[metric]).filter((v): v is number => typeof v === 'number');
    if (values.length > 0) out[metric] = summarize(values).p50;
  }
  return out;
}

interface Planned extends ResourceTarget {
  tests: Metric[];
  notApplicable: Partial<Record<Metric, string>>;
  samples: ResourceResult[];
  unavailable?: string;
}

/** Measures every target against bare, rounds in turns; medians. Needs root for the test host. */
export async function measureResources(options: ResourcesOptions): Promise<ResourcesResults> {
  const started = Date.now();
  const log = options.log ?? (() => {});
  const ran = options.ran ?? (() => {});
  const rounds = options.quick ? 1 : 3;
  const ms = options.quick ? 300 : 1000;
  const mb = options.quick ? 16 : 64;
  const pings = options.quick ? 50 : 200;
  const egress = egressSupported();
  const network = egress.ok ? undefined : egress.reason;
  const noNetwork = (why: string) => ({ netThroughput: why, netLatency: why });
  const params = (tests: Metric[], ms: number, mb: number, pings: number): ResourceParams => ({
    tests,
    ms,
    mb,
    host: TEST_HOST,
    sinkPort: SINK_PORT,
    echoPort: ECHO_PORT,
    pings,
  });
  const bareTests = METRICS.filter((t) => !network || !t.startsWith('net'));
  const kernelsDir = mkdtempSync(join(tmpdir(), 'isola-resources-kernels-'));
  const kernels = buildKernels(kernelsDir);
  const testHost = egress.ok
    ? await TestHost.start({ networks: [TEST_NETWORK], program: receiverProgram(SINK_PORT, ECHO_PORT), tag: `res${process.pid}` })
    : undefined;
  const bareSamples: ResourceResult[] = [];
  const nativeSamples: ResourceResult[] = [];
  const plan = (target: ResourceTarget): Planned => {
    const base = { ...target, samples: [] };
    if (target.isolation === 'isolate') {
      const why = 'an isolate has no file system or sockets';
      return { ...base, tests: ['cpu', 'memory'], notApplicable: { fileSequential: why, fileRandom: why, ...noNetwork(why) } };
    }
    if (target.isolation === 'wasm') {
      const why = 'a WASI module here has no file system or sockets';
      return {
        ...base,
        tests: ['cpu', 'memory'],
        notApplicable: { fileSequential: why, fileRandom: why, ...noNetwork(why) },
        ...(typeof kernels === 'string' ? { unavailable: kernels } : {}),
      };
    }
    return { ...base, tests: bareTests, notApplicable: network ? noNetwork(`no egress here: ${network}`) : {} };
  };
  const planned: Planned[] = [];
  try {
    await runBare(params(bareTests, 50, 1, 5));
    for (const group of options.groups) {
      const targets = group.targets.map(plan);
      planned.push(...targets);
      let server: ServerProcess;
      try {
        server = await group.start();
      } catch (error) {
        for (const target of targets)
          target.unavailable ??= `its server did not start: ${(error as Error).message.slice(0, 200)}`;
        continue;
      }
      try {
        await measureGroup(server, targets);
      } finally {
        await group.stop(server);
      }
    }
  } finally {
    testHost?.stop();
    rmSync(kernelsDir, { recursive: true, force: true });
  }

  async function measureGroup(server: ServerProcess, targets: Planned[]): Promise<void> {
    for (const target of targets) {
      if (target.unavailable) continue;
      const wasm = target.isolation === 'wasm' && typeof kernels !== 'string' ? kernels.wasm : undefined;
      const deployed = await server.deploy(actionName(target), wasm ? wasm.toString('base64') : RESOURCES_FUNCTION, {
        ...(wasm ? { exec: { kind: 'wasm', binary: true } } : {}),
        limits: { memory: 512, timeout: 300_000 },
        annotations: [
          { key: 'isolation', value: target.isolation },
          ...(target.tests.some((t) => t.startsWith('net')) ? [{ key: 'network', value: 'egress' }] : []),
        ],
      });
      if (deployed.status !== 200) {
        target.unavailable = JSON.stringify(deployed.body).slice(0, 300);
        log(`${target.name}: not here (${target.unavailable})`);
        continue;
      }
      // Cold start and warm-up, unmeasured.
      try {
        await runUnder(server, target, params(target.tests, 50, 1, 5));
      } catch (error) {
        target.unavailable = (error as Error).message;
        log(`${target.name}: failed its warm-up (${target.unavailable})`);
      }
    }
    const live = targets.filter((t) => !t.unavailable);
    const order = [
      'bare',
      ...(typeof kernels === 'string' || !live.some((t) => t.isolation === 'wasm') ? [] : ['native']),
      ...live.map((t) => t.name),
    ];
    for (let round = 0; round < rounds; round++) {
      // Bare, the native kernels and every target in turns, each round starting one further along.
      for (let i = 0; i < order.length; i++) {
        const name = order[(i + round) % order.length] as string;
        const target = live.find((t) => t.name === name);
        let result: ResourceResult;
        if (target) {
          if (target.unavailable) continue;
          try {
            result = await runUnder(server, target, params(target.tests, ms, mb, pings));
          } catch (error) {
            target.unavailable = `failed in round ${round + 1}: ${(error as Error).message}`;
            log(`${target.name}: ${target.unavailable}`);
            continue;
          }
          target.samples.push(result);
        } else if (name === 'native' && typeof kernels !== 'string') {
          result = await runNative(kernels.native, params(['cpu', 'memory'], ms, mb, pings));
          nativeSamples.push(result);
        } else {
          result = await runBare(params(bareTests, ms, mb, pings));
          bareSamples.push(result);
        }
        log(`round ${round + 1} ${name}: ${JSON.stringify(result)}`);
        ran(`${name}, round ${round + 1} of ${rounds}`);
      }
    }
  }

  const bareValues = medians(bareSamples);
  const nativeValues = medians(nativeSamples);
  const rows: ResourceRow[] = [
    {
      target: 'bare',
      notApplicable: network ? noNetwork(`no egress here: ${network}`) : {},
      values: bareValues,
      overhead: {},
      ...(bareSamples[0]?.scratch ? { scratch: bareSamples[0].scratch } : {}),
    },
    ...planned
      .filter((t) => !t.unavailable)
      .map((t): ResourceRow => {
        const values = medians(t.samples);
        const overhead: Partial<Record<Metric, number>> = {};
        // wasm runs the C kernels: its bare is the same C run natively.
        const baseline = t.isolation === 'wasm' ? nativeValues : bareValues;
        for (const metric of METRICS) {
          const bare = baseline[metric];
          const value = values[metric];
          if (bare !== undefined && value !== undefined) overhead[metric] = overheadPercent(metric, bare, value);
        }
        return {
          target: t.isolation === 'wasm' ? `${t.name} (C)` : t.name,
          notApplicable: t.notApplicable,
          values,
          overhead,
          ...(t.samples[0]?.scratch ? { scratch: t.samples[0].scratch } : {}),
        };
      }),
  ];
  return {
    rounds,
    ms,
    mb,
    pings,
    tookS: Math.round((Date.now() - started) / 1000),
    rows,
    unavailable: planned.filter((t) => t.unavailable).map((t) => ({ target: t.name, why: t.unavailable as string })),
    nativeC: nativeValues,
    samples: { bare: bareSamples, nativeC: nativeSamples, ...Object.fromEntries(planned.map((t) => [t.name, t.samples])) },
  };
}

/** The explanation under the table, the same in the suite's results and the harness's report. */
export function resourcesNotes(results: ResourcesResults): string[] {
  const nativeC = results.nativeC;
  return [
    `${results.rounds} round(s), bare and each backend in turns; medians. Each time-bounded test ran ${results.ms} ms; the sequential write and the network transfer moved ${results.mb} MB; ${results.pings} round trips.`,
    `The same Node.js function under every backend (512 MB, egress to a test host in a network namespace on ${TEST_HOST} behind a veth) and bare (a \`node\` on the host, reaching the test host directly). In brackets: the overhead against bare, in % (how much less it did; for the round trip, how much longer it took; negative: better than bare). The file tests write in the sandbox's scratch directory (its \`os.tmpdir()\`), whose file system is in the last row: a tmpfs makes fsync free.`,
    `wasm (C): the CPU and memory kernels written in C (packages/bench/functions/resources/kernels.c) as a WASI module under the wasm backend; its overhead is against the same file compiled natively (gcc -O2) and run bare in turns: ${nativeC.cpu ?? '–'} M steps/s and ${nativeC.memory ?? '–'} GB/s (medians), not against the JavaScript bare figures.`,
  ];
}
