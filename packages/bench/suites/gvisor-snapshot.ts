/**
 * The gVisor snapshot experiment: for a function with heavy initialisation, a cold start (boot
 * the sandbox, load the function, first result) against `runsc restore` of a checkpoint taken
 * after initialisation (to the first result), and whether a restored sandbox goes on serving.
 * Writes packages/bench/results/gvisor-snapshot.json.
 *
 *   node --no-node-snapshot --import tsx bench/gvisor-snapshot.ts [--quick]
 */

import { execFileSync, spawn } from 'node:child_process';
import { constants, createWriteStream, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeFrame, FrameDecoder, type GuestMessage, type HostMessage } from '../../../src/guest/protocol.js';
import { ensureNodeRootfs } from '../../../src/images/node-rootfs.js';
import { containerSpec } from '../../../src/sandbox/container/oci-spec.js';
import { findBinary } from '../../../src/sandbox/container/runtime.js';
import { hostInfo } from '../src/host.js';
import { summarize } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const RUNS = quick ? 2 : 5;
// About a second and a half of initialisation, as a function that loads a model or builds tables.
const HEAVY =
  'const table = []; const t0 = Date.now(); while (Date.now() - t0 < 1500) { table.push(Math.sqrt(table.length)); if (table.length > 1e6) table.length = 0; }' +
  'function main(p) { return { size: table.length, n: p.n }; }';

const work = mkdtempSync(join(tmpdir(), 'isola-gvisor-snapshot-'));
const image = ensureNodeRootfs(join(work, 'images'), join(work, 'runtime'));
const runsc = findBinary('runsc');
const global = ['--root', join(work, 'state'), '--network=none', '--platform=ptrace'];

interface Launched {
  send(message: HostMessage): void;
  next(timeoutMs: number): Promise<GuestMessage | undefined>;
}

function launch(verb: string[], id: string): Launched {
  const bundle = join(work, id);
  mkdirSync(bundle);
  const spec = containerSpec({
    rootfs: image.path,
    args: [image.nodePath, '--max-old-space-size=192', image.agentPath, '--channel=stdio'],
    memoryMb: 256,
    overheadMb: 64,
    pidsLimit: 1024,
    nprocLimit: 64,
    cgroupsPath: `/isola/${id}`,
    seccomp: true,
    uid: 65534,
  });
  writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
  execFileSync('mkfifo', [join(bundle, 'stdin')]);
  const fd = openSync(join(bundle, 'stdin'), constants.O_RDWR);
  const child = spawn(runsc as string, [...global, ...verb, '--bundle', bundle, id], { stdio: [fd, 'pipe', 'inherit'] });
  const input = createWriteStream('', { fd });
  const decoder = new FrameDecoder<GuestMessage>();
  const queue: GuestMessage[] = [];
  const waiters: ((m: GuestMessage) => void)[] = [];
  child.stdout?.on('data', (chunk: Buffer) => {
    for (const message of decoder.push(chunk)) {
      if (message.type === 'log') continue;
      const waiter = waiters.shift();
      if (waiter) waiter(message);
      else queue.push(message);
    }
  });
  return {
    send: (message) => input.write(encodeFrame(message)),
    next: (timeoutMs) =>
      new Promise((resolve) => {
        const queued = queue.shift();
        if (queued) return resolve(queued);
        const timer = setTimeout(() => resolve(undefined), timeoutMs);
        waiters.push((m) => {
          clearTimeout(timer);
          resolve(m);
        });
      }),
  };
}

function remove(id: string): void {
  try {
    execFileSync(runsc as string, [...global, 'delete', '--force', id], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

const run = (n: number): HostMessage => ({ type: 'run', id: `r${n}`, params: { n }, deadline: Date.now() + 60_000, env: {} });

async function main() {
  if (!runsc) throw new Error('runsc is not installed');
  const cold: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const started = performance.now();
    const c = launch(['run', '--detach'], `cold-${i}`);
    c.send({ type: 'init', code: HEAVY, main: 'main', binary: false, env: {} });
    c.send(run(1));
    await c.next(30_000); // hello
    await c.next(30_000); // ready
    const result = await c.next(30_000);
    if (result?.type !== 'result') throw new Error(`cold start failed: ${JSON.stringify(result)}`);
    cold.push(performance.now() - started);
    remove(`cold-${i}`);
  }
  const template = launch(['run', '--detach'], 'template');
  template.send({ type: 'init', code: HEAVY, main: 'main', binary: false, env: {} });
  await template.next(30_000);
  await template.next(30_000);
  const imagePath = join(work, 'checkpoint');
  mkdirSync(imagePath);
  const checkpointStarted = performance.now();
  execFileSync(runsc, [...global, 'checkpoint', '--image-path', imagePath, 'template']);
  const checkpointMs = performance.now() - checkpointStarted;
  remove('template');
  const restored: number[] = [];
  let laterRequestsAnswered = 0;
  for (let i = 0; i < RUNS; i++) {
    const started = performance.now();
    const c = launch(['restore', '--detach', '--image-path', imagePath], `restored-${i}`);
    c.send(run(2));
    const result = await c.next(30_000);
    if (result?.type !== 'result') throw new Error(`restore failed: ${JSON.stringify(result)}`);
    restored.push(performance.now() - started);
    // Is the restored sandbox still listening? A request written after it has gone idle:
    await new Promise((resolve) => setTimeout(resolve, 500));
    c.send(run(3));
    if ((await c.next(3000))?.type === 'result') laterRequestsAnswered++;
    remove(`restored-${i}`);
  }
  const coldSummary = summarize(cold);
  const restoreSummary = summarize(restored);
  const results = {
    benchmark: 'gvisor-snapshot',
    quick,
    host: hostInfo(),
    initialisationMs: 1500,
    coldStartToFirstResult: coldSummary,
    checkpointMs: Math.round(checkpointMs),
    restoreToFirstResult: restoreSummary,
    restoreSpeedup: Math.round((coldSummary.p50 / restoreSummary.p50) * 10) / 10,
    restoredSandboxesAnsweringLaterRequests: `${laterRequestsAnswered} of ${RUNS}`,
    finding:
      laterRequestsAnswered === RUNS
        ? 'restored sandboxes keep serving'
        : 'a restored sandbox answers what reaches it while it is busy, but once it has gone idle it never reads stdin again (runsc release 20221219): it cannot serve as a reusable instance, so snapshots are not offered for gVisor',
  };
  mkdirSync(outDir, { recursive: true });
  const file = join(outDir, quick ? 'gvisor-snapshot-quick.json' : 'gvisor-snapshot.json');
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`);
  process.stdout.write(`${JSON.stringify(results, null, 2)}\n`);
}

try {
  await main();
} finally {
  rmSync(work, { recursive: true, force: true });
}
