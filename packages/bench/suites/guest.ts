/**
 * The microVM's two guests side by side, after Lupine Linux's question (is a kernel specialised
 * for the function worth a unikernel's start-up without its developer experience?): Debian's cloud
 * kernel with its modules in an initramfs, against a kernel built from linux-source with only what
 * a function needs built in, no modules, no initramfs (ISOLA_MICROVM_GUEST=specialised). The same
 * microvm machine, root disk, agent and hello function through the API; a server per guest, the
 * two taken in turns: a cold start that boots the guest, one restored from the base snapshot, a
 * warm call, QEMU's memory per idle instance, the memory the guest itself uses, and the kernel's
 * and snapshot's sizes. Writes packages/bench/results/guest.{json,md}.
 *
 *   npm run bench:guest [-- --quick]
 */

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../../../src/core/types.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { round } from '../src/pss.js';
import { ratio, summarize, time } from '../src/stats.js';
import { plainColdStarts, qemuPssMb } from '../src/vm-figures.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const N = { restore: quick ? 3 : 10, boot: quick ? 2 : 5, warm: quick ? 30 : 100 };
const GUESTS = ['debian', 'specialised'] as const;
type Guest = (typeof GUESTS)[number];
const HELLO = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';
// What the guest's kernel and everything in it use, read from inside: MemTotal - MemAvailable.
const MEMINFO =
  'function main() { const m = Object.fromEntries(require("fs").readFileSync("/proc/meminfo", "utf8").trim().split("\\n").map((l) => { const [k, v] = l.split(/:\\s+/); return [k, parseInt(v, 10)]; })); return { totalKb: m.MemTotal, availableKb: m.MemAvailable, release: require("os").release() }; }';
const log = (message: string) => process.stderr.write(`${message}\n`);

let functions = 0;

function serverFor(guest: Guest, start: 'snapshot' | 'boot'): Promise<ServerProcess> {
  return ServerProcess.start({
    env: {
      ISOLA_BACKENDS: 'microvm',
      ISOLA_PREWARM: 'microvm:0',
      ISOLA_LOG_LEVEL: 'error',
      ISOLA_MICROVM_GUEST: guest,
      ISOLA_MICROVM_START: start,
    },
  });
}

async function deploy(server: ServerProcess, name: string, code: string): Promise<void> {
  const deployed = await server.deploy(name, code, {
    limits: { memory: 256 },
    annotations: [{ key: 'isolation', value: 'microvm' }],
  });
  if (deployed.status !== 200) throw new Error(`deploy ${name}: ${JSON.stringify(deployed.body)}`);
}

async function call(server: ServerProcess, name: string, params: object = {}): Promise<ActivationRecord> {
  const record = (await server.invokeToEnd<ActivationRecord>(name, params, 300_000)).body;
  if (record?.response.status !== 'success') throw new Error(`${name}: ${JSON.stringify(record?.response)}`);
  return record;
}

/**
 * A new function, and the time of its first (cold) call through the API. The function goes once
 * measured, and its VM with it: idle guests left behind tick on the same two cores.
 */
async function coldStart(server: ServerProcess, guest: Guest): Promise<number> {
  const name = `${guest}-cold-${++functions}`;
  await deploy(server, name, HELLO);
  const ms = await time(() => call(server, name, { name: 'cold' }));
  await server.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
  return ms;
}

/** The kernel a server's VMs boot (its QEMU command line's -kernel) and its size. */
function kernelOf(server: ServerProcess): { path: string; mb: number } {
  const vms = join(server.dataDir, 'microvm', 'vms');
  for (const dir of readdirSync(vms)) {
    try {
      const pid = Number(readFileSync(join(vms, dir, 'qemu.pid'), 'utf8'));
      const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      const path = args[args.indexOf('-kernel') + 1] as string;
      return { path, mb: round(statSync(path).size / 2 ** 20) };
    } catch {
      // that VM is gone
    }
  }
  return { path: '', mb: Number.NaN };
}

/** The base snapshot's RAM file: how much of it is written (its allocated blocks), MB. */
function snapshotRamMb(server: ServerProcess): number {
  const root = join(server.dataDir, 'microvm');
  for (const dir of readdirSync(root).filter((d) => d.startsWith('snapshots-'))) {
    const ram = join(root, dir, 'base-256', 'ram');
    if (existsSync(ram)) return Number(execFileSync('du', ['-m', ram], { encoding: 'utf8' }).split('\t')[0]);
  }
  return Number.NaN;
}

interface Samples {
  restore: number[];
  boot: number[];
  warm: number[];
  pssMb?: number;
  guestUsedMb?: number;
  release?: string;
  kernelMb?: number;
  snapshotRamMb?: number;
}

async function main() {
  const started = Date.now();
  const samples: Record<Guest, Samples> = {
    debian: { restore: [], boot: [], warm: [] },
    specialised: { restore: [], boot: [], warm: [] },
  };
  const bootsAhead: Record<Guest, number> = { debian: 0, specialised: 0 };
  // Restored cold starts, warm calls and memory: instances restore the base snapshot (made on
  // first use, before the measured calls).
  log('starting a server per guest (the specialised kernel is built first if this host has none: minutes)');
  const restoring: Record<Guest, ServerProcess> = {
    debian: await serverFor('debian', 'snapshot'),
    specialised: await serverFor('specialised', 'snapshot'),
  };
  try {
    for (const guest of GUESTS) {
      log(`${guest}: the base snapshot (a boot, once)`);
      await coldStart(restoring[guest], guest);
    }
    for (let i = 0; i < N.restore; i++) {
      for (const guest of i % 2 === 0 ? GUESTS : [...GUESTS].reverse()) {
        const ms = await coldStart(restoring[guest], guest);
        samples[guest].restore.push(ms);
        log(`${guest} restore ${i + 1}: ${Math.round(ms)} ms`);
      }
    }
    for (const guest of GUESTS) {
      const server = restoring[guest];
      await deploy(server, `${guest}-warm`, HELLO);
      await call(server, `${guest}-warm`);
      await deploy(server, `${guest}-meminfo`, MEMINFO);
      const meminfo = (await call(server, `${guest}-meminfo`)).response.result as {
        totalKb: number;
        availableKb: number;
        release: string;
      };
      samples[guest].guestUsedMb = round((meminfo.totalKb - meminfo.availableKb) / 1024);
      samples[guest].release = meminfo.release;
      await server.request('DELETE', `/api/v1/namespaces/_/actions/${guest}-meminfo`);
    }
    for (const guest of GUESTS) {
      const server = restoring[guest];
      // Only the warm function's VM is left once the others have stopped.
      for (let i = 0; i < 100 && readdirSync(join(server.dataDir, 'microvm', 'vms')).length > 1; i++)
        await new Promise((resolve) => setTimeout(resolve, 100));
      samples[guest].pssMb = qemuPssMb(server, 'microvm');
      samples[guest].kernelMb = kernelOf(server).mb;
      samples[guest].snapshotRamMb = snapshotRamMb(server);
    }
    for (let i = 0; i < N.warm; i++) {
      for (const guest of GUESTS) {
        samples[guest].warm.push(await time(() => restoring[guest].invoke(`${guest}-warm`, { name: 'warm' })));
      }
    }
  } finally {
    await Promise.all(GUESTS.map((guest) => restoring[guest].dispose()));
  }
  // Boots: every instance boots its guest (ISOLA_MICROVM_START=boot), nothing restored.
  const booting: Record<Guest, ServerProcess> = {
    debian: await serverFor('debian', 'boot'),
    specialised: await serverFor('specialised', 'boot'),
  };
  try {
    for (let i = 0; i < N.boot * 3 && GUESTS.some((g) => samples[g].boot.length < N.boot); i++) {
      for (const guest of i % 2 === 0 ? GUESTS : [...GUESTS].reverse()) {
        if (samples[guest].boot.length >= N.boot) continue;
        const before = await plainColdStarts(booting[guest], 'microvm');
        const ms = await coldStart(booting[guest], guest);
        const booted = (await plainColdStarts(booting[guest], 'microvm')) > before;
        if (booted) samples[guest].boot.push(ms);
        else bootsAhead[guest]++;
        log(`${guest} boot ${i + 1}: ${Math.round(ms)} ms${booted ? '' : ' (a VM made ahead: not counted)'}`);
      }
    }
  } finally {
    await Promise.all(GUESTS.map((guest) => booting[guest].dispose()));
  }
  const figuresOf = (g: Guest) => ({
    release: samples[g].release,
    coldBootMs: summarize(samples[g].boot),
    coldRestoredMs: summarize(samples[g].restore),
    warmMs: summarize(samples[g].warm),
    qemuPssMb: samples[g].pssMb ?? Number.NaN,
    guestUsedMb: samples[g].guestUsedMb ?? Number.NaN,
    kernelMb: samples[g].kernelMb ?? Number.NaN,
    snapshotRamMb: samples[g].snapshotRamMb ?? Number.NaN,
  });
  const figures = { debian: figuresOf('debian'), specialised: figuresOf('specialised') };
  const host = hostInfo();
  const tookS = Math.round((Date.now() - started) / 1000);
  writeFileSync(
    join(outDir, 'guest.json'),
    `${JSON.stringify({ host, quick, tookS, n: N, figures, samples, bootsAhead }, null, 2)}\n`,
  );
  const { debian: d, specialised: s } = figures;
  const row = (label: string, a: string, b: string, r: string) => `| ${label} | ${a} | ${b} | ${r} |`;
  const md = [
    "# The microVM's guests: Debian's kernel against a specialised one (npm run bench:guest)",
    '',
    `Host: ${JSON.stringify(host)}. Took ${tookS} s. The same microvm machine, root disk, agent and hello function through the API, 256 MB; a server per guest, the two taken in turns.`,
    '',
    `| | Debian cloud kernel (${d.release}) | specialised (${s.release}) | specialised / Debian |`,
    '| --- | ---: | ---: | ---: |',
    row(
      `cold start booting the guest, p50 / p99 ms (n=${N.boot})`,
      `${d.coldBootMs.p50} / ${d.coldBootMs.p99}`,
      `${s.coldBootMs.p50} / ${s.coldBootMs.p99}`,
      `${ratio(s.coldBootMs.p50, d.coldBootMs.p50)}`,
    ),
    row(
      `cold start restored from the snapshot, p50 / p99 ms (n=${N.restore})`,
      `${d.coldRestoredMs.p50} / ${d.coldRestoredMs.p99}`,
      `${s.coldRestoredMs.p50} / ${s.coldRestoredMs.p99}`,
      `${ratio(s.coldRestoredMs.p50, d.coldRestoredMs.p50)}`,
    ),
    row(
      `warm call, p50 / p99 ms (n=${N.warm})`,
      `${d.warmMs.p50} / ${d.warmMs.p99}`,
      `${s.warmMs.p50} / ${s.warmMs.p99}`,
      `${ratio(s.warmMs.p50, d.warmMs.p50)}`,
    ),
    row('QEMU PSS per idle restored instance, MB', `${d.qemuPssMb}`, `${s.qemuPssMb}`, `${ratio(s.qemuPssMb, d.qemuPssMb)}`),
    row(
      'memory used inside the guest (MemTotal - MemAvailable), MB',
      `${d.guestUsedMb}`,
      `${s.guestUsedMb}`,
      `${ratio(s.guestUsedMb, d.guestUsedMb)}`,
    ),
    row(
      "base snapshot's RAM written, MB",
      `${d.snapshotRamMb}`,
      `${s.snapshotRamMb}`,
      `${ratio(s.snapshotRamMb, d.snapshotRamMb)}`,
    ),
    row('kernel (uncompressed ELF), MB', `${d.kernelMb}`, `${s.kernelMb}`, `${ratio(s.kernelMb, d.kernelMb)}`),
    '',
  ].join('\n');
  writeFileSync(join(outDir, 'guest.md'), md);
  log(md);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
