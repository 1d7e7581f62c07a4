/**
 * Full VMs (isolation vm: QEMU q35 with SeaBIOS and PCI virtio devices) against microVMs
 * (isolation microvm: no firmware, no PCI), the same guest and agent, through the API in one
 * run, the two taken in turns: a cold start restored from the base snapshot, a cold start that
 * boots the guest from scratch, a warm call, and QEMU's memory per idle instance. Writes
 * packages/bench/results/vm.{json,md}.
 *
 *   npm run bench:vm [-- --quick]
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ActivationRecord } from '../../../src/core/types.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { ratio, summarize, time } from '../src/stats.js';
import { plainColdStarts, qemuPssMb } from '../src/vm-figures.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const N = { restore: quick ? 3 : 10, boot: quick ? 1 : 3, warm: quick ? 30 : 100 };
const MACHINES = ['microvm', 'vm'] as const;
type Machine = (typeof MACHINES)[number];
const HELLO = 'function main(params) { return { greeting: "Hello " + (params.name || "world") }; }';
const log = (message: string) => process.stderr.write(`${message}\n`);

let functions = 0;

/** A new function under the isolation, and the time of its first (cold) call through the API. */
async function coldStart(server: ServerProcess, isolation: Machine): Promise<number> {
  const name = `${isolation}-cold-${++functions}`;
  const deployed = await server.deploy(name, HELLO, {
    limits: { memory: 256 },
    annotations: [{ key: 'isolation', value: isolation }],
  });
  if (deployed.status !== 200) throw new Error(`deploy under ${isolation}: ${JSON.stringify(deployed.body)}`);
  let record: ActivationRecord | undefined;
  const ms = await time(async () => {
    record = (await server.invokeToEnd<ActivationRecord>(name, { name: 'cold' }, 300_000)).body;
  });
  if (record?.response.status !== 'success') throw new Error(`${isolation}: ${JSON.stringify(record?.response)}`);
  return ms;
}

async function main() {
  const started = Date.now();
  const bootsAhead: Record<Machine, number> = { microvm: 0, vm: 0 };
  const samples: Record<Machine, { restore: number[]; boot: number[]; warm: number[]; pssMb?: number }> = {
    microvm: { restore: [], boot: [], warm: [] },
    vm: { restore: [], boot: [], warm: [] },
  };
  // Restored cold starts and warm calls: instances restore the base snapshot (made on first use,
  // before the measured calls).
  const server = await ServerProcess.start({
    env: { ISOLA_BACKENDS: 'microvm,vm', ISOLA_PREWARM: 'microvm:0,vm:0', ISOLA_LOG_LEVEL: 'error' },
  });
  try {
    for (const isolation of MACHINES) {
      log(`${isolation}: the base snapshot (a boot, once)`);
      await coldStart(server, isolation);
    }
    for (let i = 0; i < N.restore; i++) {
      for (const isolation of i % 2 === 0 ? MACHINES : [...MACHINES].reverse()) {
        const ms = await coldStart(server, isolation);
        samples[isolation].restore.push(ms);
        log(`${isolation} restore ${i + 1}: ${Math.round(ms)} ms`);
      }
    }
    for (const isolation of MACHINES) {
      const name = `${isolation}-warm`;
      await server.deploy(name, HELLO, { limits: { memory: 256 }, annotations: [{ key: 'isolation', value: isolation }] });
      await server.invokeToEnd(name, {}, 300_000);
      samples[isolation].pssMb = qemuPssMb(server, isolation);
    }
    for (let i = 0; i < N.warm; i++) {
      for (const isolation of MACHINES) {
        samples[isolation].warm.push(await time(() => server.invoke(`${isolation}-warm`, { name: 'warm' })));
      }
    }
  } finally {
    await server.dispose();
  }
  // Boots: every instance boots the guest (ISOLA_MICROVM_START=boot), nothing restored.
  const booting = await ServerProcess.start({
    env: { ISOLA_BACKENDS: 'microvm,vm', ISOLA_PREWARM: 'microvm:0,vm:0', ISOLA_LOG_LEVEL: 'error', ISOLA_MICROVM_START: 'boot' },
  });
  try {
    // Only cold starts that booted a VM of their own count: the scheduler may have made one ahead.
    for (let i = 0; i < N.boot * 3 && MACHINES.some((m) => samples[m].boot.length < N.boot); i++) {
      for (const isolation of i % 2 === 0 ? MACHINES : [...MACHINES].reverse()) {
        if (samples[isolation].boot.length >= N.boot) continue;
        const before = await plainColdStarts(booting, isolation);
        const ms = await coldStart(booting, isolation);
        const booted = (await plainColdStarts(booting, isolation)) > before;
        if (booted) samples[isolation].boot.push(ms);
        else bootsAhead[isolation]++;
        log(`${isolation} boot ${i + 1}: ${Math.round(ms)} ms${booted ? '' : ' (a VM made ahead: not counted)'}`);
      }
    }
  } finally {
    await booting.dispose();
  }
  const figuresOf = (m: Machine) => ({
    coldRestoredMs: summarize(samples[m].restore),
    coldBootMs: summarize(samples[m].boot),
    warmMs: summarize(samples[m].warm),
    qemuPssMb: samples[m].pssMb ?? Number.NaN,
  });
  const figures = { microvm: figuresOf('microvm'), vm: figuresOf('vm') };
  const host = hostInfo();
  const tookS = Math.round((Date.now() - started) / 1000);
  writeFileSync(
    join(outDir, 'vm.json'),
    `${JSON.stringify({ host, quick, tookS, n: N, figures, samples, bootsAhead }, null, 2)}\n`,
  );
  const { microvm, vm } = figures;
  const row = (label: string, a: string, b: string, r: string) => `| ${label} | ${a} | ${b} | ${r} |`;
  const md = [
    '# Full VMs (q35) against microVMs (npm run bench:vm)',
    '',
    `Host: ${JSON.stringify(host)}. Took ${tookS} s. The same guest, agent and hello function through the API; the two machines taken in turns.`,
    '',
    '| | microvm | vm (q35) | vm / microvm |',
    '| --- | ---: | ---: | ---: |',
    row(
      `cold start restored from the snapshot, p50 / p99 ms (n=${N.restore})`,
      `${microvm.coldRestoredMs.p50} / ${microvm.coldRestoredMs.p99}`,
      `${vm.coldRestoredMs.p50} / ${vm.coldRestoredMs.p99}`,
      `${ratio(vm.coldRestoredMs.p50, microvm.coldRestoredMs.p50)}`,
    ),
    row(
      `cold start booting the guest, p50 ms (n=${N.boot})`,
      `${microvm.coldBootMs.p50}`,
      `${vm.coldBootMs.p50}`,
      `${ratio(vm.coldBootMs.p50, microvm.coldBootMs.p50)}`,
    ),
    row(
      `warm call, p50 / p99 ms (n=${N.warm})`,
      `${microvm.warmMs.p50} / ${microvm.warmMs.p99}`,
      `${vm.warmMs.p50} / ${vm.warmMs.p99}`,
      `${ratio(vm.warmMs.p50, microvm.warmMs.p50)}`,
    ),
    row(
      'QEMU PSS per idle restored instance, MB',
      `${microvm.qemuPssMb}`,
      `${vm.qemuPssMb}`,
      `${ratio(vm.qemuPssMb, microvm.qemuPssMb)}`,
    ),
    '',
  ].join('\n');
  writeFileSync(join(outDir, 'vm.md'), md);
  log(md);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
