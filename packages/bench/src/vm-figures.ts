import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ServerProcess } from '../../../test/helpers/server-process.js';
import { pssMib, round } from './pss.js';

/** Cold starts under an isolation that started a new sandbox (not one made ahead, not a restore of a function snapshot). */
export async function plainColdStarts(server: ServerProcess, isolation: 'microvm' | 'vm'): Promise<number> {
  const metrics = await server.metrics();
  const pattern = new RegExp(`^isola_starts_total\\{[^}]*isolation="${isolation}"[^}]*start="cold"[^}]*\\} (\\d+)`, 'gm');
  let total = 0;
  for (const match of metrics.matchAll(pattern)) total += Number(match[1]);
  return total;
}

/** QEMU's PSS per VM of a server's data dir, MB. */
export function qemuPssMb(server: ServerProcess, isolation: 'microvm' | 'vm'): number {
  const vms = join(server.dataDir, isolation, 'vms');
  const pids = readdirSync(vms)
    .map((d) => {
      try {
        return Number(readFileSync(join(vms, d, 'qemu.pid'), 'utf8'));
      } catch {
        return 0;
      }
    })
    .filter((pid) => pid > 0);
  const total = pids.reduce((sum, pid) => sum + pssMib(pid), 0);
  return pids.length > 0 ? round(total / pids.length) : Number.NaN;
}
