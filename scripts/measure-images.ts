// One image per language or one image for all of them: what each costs in disk (the root file
// system, and the microVM's root disk) and in a container's cold start (a blank sandbox made, a
// function loaded, and the runtime started once inside it). Measured side by side in one run;
// prints a Markdown table and writes the figures as JSON.
//   npx tsx scripts/measure-images.ts [images-dir] [out.json]
import { execFileSync } from 'node:child_process';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ensureMicrovmImage } from '../src/images/microvm-image.js';
import { ensureRootfs, type NodeRootfs } from '../src/images/node-rootfs.js';
import { LANGUAGE_RUNTIMES, type LanguageRuntime } from '../src/images/runtimes.js';
import type { FunctionCode } from '../src/sandbox/backend.js';
import { ContainerBackend } from '../src/sandbox/container/container-backend.js';
import { sandboxUids } from '../src/sandbox/host-ids.js';
import { ociRuntime } from '../src/sandbox/registry.js';

const root = resolve(process.argv[2] ?? '.isola-measure');
const out = process.argv[3] ?? join(root, 'images.json');
const imagesDir = join(root, 'images');
const runtimeDir = join(root, 'runtime');
mkdirSync(root, { recursive: true });
const REPEAT = Number(process.env.REPEAT ?? 5);
// What "the runtime started once" means per language: the cheapest start of each.
const START: Record<LanguageRuntime, string[]> = {
  python: ['/usr/bin/python3', '-c', 'pass'],
  java: ['/usr/bin/java', '-XX:MaxRAM=128m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Xshare:auto', '-version'],
  ruby: ['/usr/bin/ruby', '--disable-gems', '-e', '0'],
  php: ['/usr/bin/php', '-r', ';'],
};
const code: FunctionCode = {
  key: 'measure',
  kind: 'nodejs:20',
  code: `const { spawnSync } = require('child_process'); function main(p) { const r = spawnSync(p.command[0], p.command.slice(1)); return { status: r.status }; }`,
  binary: false,
  main: 'main',
  filename: 'measure.js',
  env: {},
  logLimitBytes: 65536,
};

const duMb = (path: string) => Number(execFileSync('du', ['-sm', path], { encoding: 'utf8' }).split('\t')[0]);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

const perKind = Object.fromEntries(LANGUAGE_RUNTIMES.map((r) => [r, ensureRootfs(imagesDir, runtimeDir, r)])) as Record<
  LanguageRuntime,
  NodeRootfs
>;
const node = ensureRootfs(imagesDir, runtimeDir, 'nodejs');
const all = ensureRootfs(imagesDir, runtimeDir, 'all', LANGUAGE_RUNTIMES);

async function coldStarts(image: (r: LanguageRuntime) => NodeRootfs, runtime: LanguageRuntime): Promise<number> {
  const backend = await ContainerBackend.open({
    isolation: 'container',
    runtime: ociRuntime('runc', join(root, 'run', 'runc')),
    image: node,
    imageFor: async (name) => image(name as LanguageRuntime),
    bundlesDir: join(root, 'containers', 'runc'),
    uids: sandboxUids(),
  });
  const kinds = { python: 'python:3', java: 'java:17', ruby: 'ruby:3.1', php: 'php:8.2' } as const;
  const times: number[] = [];
  for (let i = 0; i < REPEAT; i++) {
    const started = performance.now();
    const sandbox = await backend.create({ memoryMb: 256, kind: kinds[runtime] });
    const init = await sandbox.init(code, Date.now() + 60_000, () => {});
    if (!init.ok) throw new Error(init.error);
    const outcome = await sandbox.run({
      activationId: `m${i}`,
      params: { command: START[runtime] },
      deadline: Date.now() + 60_000,
      env: {},
      onLog: () => {},
    });
    times.push(performance.now() - started);
    await sandbox.destroy();
    if (outcome.kind !== 'result' || (outcome.result as { status: number }).status !== 0)
      throw new Error(`${runtime} did not start: ${JSON.stringify(outcome)}`);
  }
  await backend.close();
  return Math.round(median(times));
}

const withDisks = process.env.MICROVM !== '0';
const disk = (rootfs: NodeRootfs) =>
  withDisks ? Math.round(statSync(ensureMicrovmImage(imagesDir, rootfs).rootDisk).size / 2 ** 20) : NaN;
const rows: Record<string, unknown>[] = [];
for (const runtime of LANGUAGE_RUNTIMES) {
  rows.push({
    runtime,
    perKindRootfsMb: duMb(perKind[runtime].path),
    perKindDiskMb: disk(perKind[runtime]),
    perKindColdMs: await coldStarts((r) => perKind[r], runtime),
    allColdMs: await coldStarts(() => all, runtime),
  });
}
const summary = {
  nodeRootfsMb: duMb(node.path),
  nodeDiskMb: disk(node),
  allRootfsMb: duMb(all.path),
  allDiskMb: disk(all),
  repeat: REPEAT,
  rows,
};
writeFileSync(out, `${JSON.stringify(summary, null, 2)}\n`);
process.stdout.write(
  `node image: ${summary.nodeRootfsMb} MB rootfs, ${summary.nodeDiskMb} MB root disk; one image for all: ${summary.allRootfsMb} MB rootfs, ${summary.allDiskMb} MB root disk\n`,
);
process.stdout.write(
  '| runtime | own image: rootfs MB | own image: root disk MB | cold start, own image (ms) | cold start, image for all (ms) |\n|---|---|---|---|---|\n',
);
for (const r of rows)
  process.stdout.write(`| ${r.runtime} | ${r.perKindRootfsMb} | ${r.perKindDiskMb} | ${r.perKindColdMs} | ${r.allColdMs} |\n`);
