/**
 * Resources per backend, each against the same measurement run bare on the host in the same run
 * (the DESMET study's axes): CPU (a fixed integer kernel), memory bandwidth (copies of a 64 MiB
 * buffer, larger than the caches), file I/O in the sandbox's scratch directory (a sequential
 * write with fsync, random 4 KiB writes each followed by fdatasync) and the network to a receiver
 * on a test host in a network namespace, reached through the `egress` policy (throughput and
 * round trip). One Node.js function measures all of it, deployed under each backend and run by a
 * bare `node` on the host; the wasm backend runs the CPU and memory kernels written in C
 * (functions/resources/kernels.c, built with clang for wasm32-wasi), against the same file compiled
 * natively and run bare. Rounds taken in turns, medians. Writes
 * packages/bench/results/resources.{json,md,svg}.
 *
 *   npm run bench:resources [-- --quick]
 */

import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { egressSupported } from '../../../src/sandbox/network/egress.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { TestHost } from '../../../test/helpers/test-host.js';
import { hostInfo } from '../src/host.js';
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
  resourcesChart,
  resourcesTable,
  runBare,
  SINK_PORT,
} from '../src/resources.js';
import { summarize } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const ROUNDS = quick ? 1 : 3;
const MS = quick ? 300 : 1000;
const MB = quick ? 16 : 64;
const PINGS = quick ? 50 : 200;
const TEST_HOST = '198.51.100.10';
const log = (message: string) => process.stderr.write(`${message}\n`);

interface Target {
  name: string;
  isolation: 'process' | 'container' | 'gvisor' | 'microvm' | 'isolate' | 'wasm';
  tests: Metric[];
  notApplicable: Partial<Record<Metric, string>>;
  samples: ResourceResult[];
  unavailable?: string;
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

async function runUnder(server: ServerProcess, target: Target, params: ResourceParams): Promise<ResourceResult> {
  const response = await server.invokeToEnd<{ response: { status: string; result: ResourceResult & { error?: string } } }>(
    `resources-${target.isolation}`,
    params,
    600_000,
  );
  const record = response.body.response;
  if (response.status !== 200 || record.status !== 'success') {
    throw new Error(`${target.name}: ${response.status} ${record.status}: ${JSON.stringify(record.result).slice(0, 300)}`);
  }
  return record.result;
}

function median(values: number[]): number | undefined {
  return values.length === 0 ? undefined : summarize(values).p50;
}

async function main() {
  const started = Date.now();
  const egress = egressSupported();
  const network = egress.ok ? undefined : egress.reason;
  const testHost = egress.ok
    ? await TestHost.start({ networks: ['198.51.100'], program: receiverProgram(SINK_PORT, ECHO_PORT), tag: `res${process.pid}` })
    : undefined;
  const server = await ServerProcess.start({
    env: {
      ISOLA_BACKENDS: 'isolate,wasm,process,container,gvisor,microvm',
      ISOLA_CONTAINER_RUNTIME: 'runc',
      // No blank sandboxes made ahead (an empty setting would mean the default pool).
      ISOLA_PREWARM: 'isolate:0,wasm:0,process:0,container:0,gvisor:0,microvm:0',
      ISOLA_LOG_LEVEL: 'error',
    },
  });
  const allTests = [...METRICS];
  const noNetwork = (why: string) => ({ netThroughput: why, netLatency: why });
  const targets: Target[] = (['process', 'container', 'gvisor', 'microvm', 'isolate'] as const).map((isolation) => {
    const isolate = isolation === 'isolate';
    const why = 'an isolate has no file system or sockets';
    return {
      name: isolation === 'container' ? 'container:runc' : isolation,
      isolation,
      tests: allTests.filter((t) => (isolate ? t === 'cpu' || t === 'memory' : network ? !t.startsWith('net') : true)),
      notApplicable: isolate
        ? { fileSequential: why, fileRandom: why, ...noNetwork(why) }
        : network
          ? noNetwork(`no egress here: ${network}`)
          : {},
      samples: [],
    };
  });
  const kernelsDir = mkdtempSync(join(tmpdir(), 'isola-resources-kernels-'));
  const kernels = buildKernels(kernelsDir);
  const wasmWhy = 'a WASI module here has no file system or sockets';
  const wasmTarget: Target = {
    name: 'wasm',
    isolation: 'wasm',
    tests: ['cpu', 'memory'],
    notApplicable: { fileSequential: wasmWhy, fileRandom: wasmWhy, ...noNetwork(wasmWhy) },
    samples: [],
    ...(typeof kernels === 'string' ? { unavailable: kernels } : {}),
  };
  targets.push(wasmTarget);
  const nativeSamples: ResourceResult[] = [];
  const bareSamples: ResourceResult[] = [];
  const params = (tests: Metric[], ms: number, mb: number, pings: number): ResourceParams => ({
    tests,
    ms,
    mb,
    host: TEST_HOST,
    sinkPort: SINK_PORT,
    echoPort: ECHO_PORT,
    pings,
  });
  try {
    for (const target of targets) {
      if (target.unavailable) continue;
      const wasm = target.isolation === 'wasm' && typeof kernels !== 'string' ? kernels.wasm : undefined;
      const deployed = await server.deploy(`resources-${target.isolation}`, wasm ? wasm.toString('base64') : RESOURCES_FUNCTION, {
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
    await runBare(
      params(
        allTests.filter((t) => !network || !t.startsWith('net')),
        50,
        1,
        5,
      ),
    );
    const live = targets.filter((t) => !t.unavailable);
    for (let round = 0; round < ROUNDS; round++) {
      // Bare, the native kernels and every backend in turns, each round starting one further along.
      const order = ['bare', ...(typeof kernels === 'string' ? [] : ['native']), ...live.map((t) => t.name)];
      const rotated = order.map((_, i) => order[(i + round) % order.length] as string);
      for (const name of rotated) {
        if (name === 'native' && typeof kernels !== 'string') {
          const result = await runNative(kernels.native, params(['cpu', 'memory'], MS, MB, PINGS));
          nativeSamples.push(result);
          log(`round ${round + 1} native C: ${JSON.stringify(result)}`);
          continue;
        }
        const target = live.find((t) => t.name === name);
        const tests = target ? target.tests : allTests.filter((t) => !network || !t.startsWith('net'));
        const result = target
          ? await runUnder(server, target, params(tests, MS, MB, PINGS))
          : await runBare(params(tests, MS, MB, PINGS));
        (target ? target.samples : bareSamples).push(result);
        log(`round ${round + 1} ${name}: ${JSON.stringify(result)}`);
      }
    }
  } finally {
    await server.dispose();
    testHost?.stop();
    rmSync(kernelsDir, { recursive: true, force: true });
  }

  const medians = (samples: ResourceResult[]): Partial<Record<Metric, number>> =>
    Object.fromEntries(
      METRICS.map((m) => [m, median(samples.map((s) => s[m]).filter((v): v is number => typeof v === 'number'))]).filter(
        ([, v]) => v !== undefined,
      ),
    );
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
    ...targets
      .filter((t) => !t.unavailable)
      .map((t) => {
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
          target: t.isolation === 'wasm' ? 'wasm (C)' : t.name,
          notApplicable: t.notApplicable,
          values,
          overhead,
          ...(t.samples[0]?.scratch ? { scratch: t.samples[0].scratch } : {}),
        };
      }),
  ];
  const unavailable = targets.filter((t) => t.unavailable).map((t) => ({ target: t.name, why: t.unavailable }));
  const host = hostInfo();
  const tookS = Math.round((Date.now() - started) / 1000);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(
    join(outDir, 'resources.json'),
    `${JSON.stringify({ host, tookS, rounds: ROUNDS, ms: MS, mb: MB, pings: PINGS, rows, unavailable, samples: { bare: bareSamples, nativeC: nativeSamples, ...Object.fromEntries(targets.map((t) => [t.name, t.samples])) } }, null, 2)}\n`,
  );
  writeFileSync(join(outDir, 'resources.svg'), resourcesChart(rows));
  const md = [
    '# Resources per backend against bare (npm run bench:resources)',
    '',
    `Host: ${JSON.stringify(host)}. Took ${tookS} s. ${ROUNDS} rounds, bare and each backend in turns; medians. Each time-bounded test ran ${MS} ms; the sequential write and the network transfer moved ${MB} MB; ${PINGS} round trips.`,
    '',
    "The same Node.js function under every backend (512 MB, egress to a test host in a network namespace on 198.51.100.10 behind a veth) and bare (a `node` on the host, reaching the test host directly). In brackets: the overhead against bare, in % (how much less it did; for the round trip, how much longer it took; negative: better than bare). The file tests write in the sandbox's scratch directory (its `os.tmpdir()`), whose file system is in the last row: a tmpfs makes fsync free.",
    '',
    resourcesTable(rows),
    '',
    `wasm (C): the CPU and memory kernels written in C (functions/resources/kernels.c) as a WASI module under the wasm backend; its overhead is against the same file compiled natively (gcc -O2) and run bare in turns: ${nativeValues.cpu ?? '–'} M steps/s and ${nativeValues.memory ?? '–'} GB/s (medians), not against the JavaScript above.`,
    ...(unavailable.length > 0 ? ['', 'Not measured here:', ...unavailable.map((u) => `- ${u.target}: ${u.why}`)] : []),
    '',
    '![overhead per backend](resources.svg)',
    '',
  ].join('\n');
  writeFileSync(join(outDir, 'resources.md'), md);
  log(`wrote ${join(outDir, 'resources.json')}, .md and .svg`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
