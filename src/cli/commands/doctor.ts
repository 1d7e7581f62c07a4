import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { EGRESS_ISOLATIONS } from '../../core/network-policy.js';
import type { BackendStatus } from '../../sandbox/backend.js';
import type { HardwareFeature } from '../../sandbox/hardware.js';
import { printJson, printTable, printWrapped } from '../output.js';
import { globals } from './common.js';

export function printBackendStatuses(statuses: readonly BackendStatus[]): void {
  printTable(
    ['backend', 'status', 'detail'],
    statuses.map((s) => [s.isolation, s.available ? 'available' : 'unavailable', s.detail + (s.fix ? `\nfix: ${s.fix}` : '')]),
  );
}

/** Per working backend: the kinds it runs here, and why not the others. */
export function printKindSupport(statuses: readonly BackendStatus[]): void {
  const rows: string[][] = [];
  for (const status of statuses) {
    if (!status.available || !status.kinds) continue;
    const runs = status.kinds.filter((k) => k.available).map((k) => k.kind);
    // Kinds that are missing for the same reason, on one line.
    const byReason = new Map<string, string[]>();
    for (const k of status.kinds.filter((k) => !k.available)) {
      const why = k.why ?? 'not here';
      byReason.set(why, [...(byReason.get(why) ?? []), k.kind]);
    }
    const not = [...byReason].map(([why, kinds]) => `${kinds.join(', ')}: ${why}`);
    rows.push([status.isolation, runs.join(', ') || 'none', not.join('\n')]);
  }
  if (rows.length === 0) return;
  process.stdout.write('\nKinds:\n');
  printTable(['backend', 'runs', 'not here, and why'], rows);
}

/** What the CPU offers for hardware-assisted isolation, and whether Isola uses it. */
export function printHardware(features: readonly HardwareFeature[]): void {
  process.stdout.write('\nHardware isolation:\n');
  printTable(
    ['feature', 'here', 'used', 'found, and how it is used or why not'],
    features.map((f) => [f.name, f.offered ? 'offered' : 'not offered', f.used ? 'used' : 'not used', `${f.found}\n${f.use}`]),
  );
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('check which isolation backends work on this host, and how to fix the others')
    .action(async (_options: unknown, command: Command) => {
      const { egressSupported, probeBackends, probeContainerRuntimes } = await import('../../sandbox/registry.js');
      const { resolveBackendSettings, resolveKernelCacheDir, resolveServerConfig } = await import('../../config.js');
      const { liveServer } = await import('../../platform/data-dir-lock.js');
      const { probeHardwareIsolation } = await import('../../sandbox/hardware.js');
      const { specialisedKernelStatus } = await import('../../images/specialised-kernel.js');
      const { dataDir: named, json } = globals(command);
      // Probing builds runtime files (the microVM guest image takes seconds): use the data dir a
      // server started here would use, where they are cached, when it exists or is named; else a
      // scratch one. A server may be running on it: doctor never takes the data dir's lock and
      // only adds files that are named by their content.
      const serverDir = resolveServerConfig({ ...(named ? { dataDir: named } : {}) }).dataDir;
      const dataDir = named || existsSync(serverDir) ? serverDir : undefined;
      const dir = dataDir ?? mkdtempSync(join(tmpdir(), 'isola-doctor-'));
      const server = dataDir ? liveServer(dir) : undefined;
      try {
        // The server's settings for the backends (a forced accelerator, the wasm workers), so
        // that what doctor finds is what a server started here would find; the slow steps are
        // named on stderr as they begin.
        const { backends, statuses } = await probeBackends({
          dataDir: dir,
          ...resolveBackendSettings({}),
          onProgress: (isolation, message) => process.stderr.write(`${isolation}: ${message} ...\n`),
        });
        await Promise.all([...backends.values()].map((b) => b.close()));
        const runtimes = await probeContainerRuntimes({ dataDir: dir });
        const egress = egressSupported();
        const hardware = probeHardwareIsolation(statuses.find((s) => s.available && s.accelerator)?.accelerator);
        const specialisedKernel = specialisedKernelStatus(resolveKernelCacheDir());
        if (json)
          printJson({
            backends: statuses,
            containerRuntimes: runtimes,
            egress,
            hardware,
            specialisedKernel,
            ...(server ? { server } : {}),
          });
        else {
          if (server) {
            printWrapped(
              `A server runs on this data dir (pid ${server.pid}${server.url ? `, ${server.url}` : ''}); it was left alone.\n`,
            );
          }
          printBackendStatuses(statuses);
          printKindSupport(statuses);
          process.stdout.write('\nOCI runtimes:\n');
          printTable(
            ['runtime', 'status', 'detail'],
            runtimes.map((r) => [r.runtime, r.works ? 'works' : 'does not work', r.detail]),
          );
          printHardware(hardware);
          printWrapped(`\nThe microVM's specialised guest kernel (ISOLA_MICROVM_GUEST=specialised): ${specialisedKernel.detail}`);
          printWrapped(
            `\nEgress (annotation network: egress): ${egress.ok ? `available on ${EGRESS_ISOLATIONS.slice(0, -1).join(', ')} and ${EGRESS_ISOLATIONS.at(-1)}` : `not available: ${egress.reason}`}.`,
          );
          const working = statuses.filter((s) => s.available).map((s) => s.isolation);
          printWrapped(`\n${working.length} of ${statuses.length} backends work here: ${working.join(', ') || 'none'}.`);
        }
      } finally {
        if (!dataDir) rmSync(dir, { recursive: true, force: true });
      }
    });
}
