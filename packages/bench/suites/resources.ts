/**
 * Resources per backend, each against the same measurement run bare on the host in the same run
 * (the DESMET study's axes): CPU (a fixed integer kernel), memory bandwidth (copies of a 64 MiB
 * buffer, larger than the caches), file I/O in the sandbox's scratch directory (a sequential
 * write with fsync, random 4 KiB writes each followed by fdatasync) and the network to a receiver
 * on a test host in a network namespace, reached through the `egress` policy (throughput and
 * round trip). One Node.js function measures all of it, deployed under each backend (the full VM
 * among them) and run by a bare `node` on the host; the wasm backend runs the CPU and memory kernels written in C
 * (functions/resources/kernels.c, built with clang for wasm32-wasi), against the same file compiled
 * natively and run bare. Rounds taken in turns, medians. Writes
 * packages/bench/results/resources.{json,md,svg}.
 *
 *   npm run bench:resources [-- --quick]
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { resourcesChart, resourcesTable } from '../src/resources.js';
import { measureResources, resourcesNotes } from '../src/resources-run.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const log = (message: string) => process.stderr.write(`${message}\n`);

async function main() {
  const results = await measureResources({
    quick,
    log,
    groups: [
      {
        targets: (['process', 'container', 'gvisor', 'microvm', 'vm', 'isolate', 'wasm'] as const).map((isolation) => ({
          name: isolation === 'container' ? 'container:runc' : isolation,
          isolation,
        })),
        start: () =>
          ServerProcess.start({
            env: {
              ISOLA_BACKENDS: 'isolate,wasm,process,container,gvisor,microvm,vm',
              ISOLA_CONTAINER_RUNTIME: 'runc',
              // No blank sandboxes made ahead (an empty setting would mean the default pool).
              ISOLA_PREWARM: 'isolate:0,wasm:0,process:0,container:0,gvisor:0,microvm:0,vm:0',
              ISOLA_LOG_LEVEL: 'error',
            },
          }),
        stop: (server) => server.dispose(),
      },
    ],
  });
  const host = hostInfo();
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, 'resources.json'), `${JSON.stringify({ host, ...results }, null, 2)}\n`);
  writeFileSync(join(outDir, 'resources.svg'), resourcesChart(results.rows));
  const [how, what, wasm] = resourcesNotes(results);
  const md = [
    '# Resources per backend against bare (npm run bench:resources)',
    '',
    `Host: ${JSON.stringify(host)}. Took ${results.tookS} s. ${how}`,
    '',
    what,
    '',
    resourcesTable(results.rows),
    '',
    wasm,
    ...(results.unavailable.length > 0
      ? ['', 'Not measured here:', ...results.unavailable.map((u) => `- ${u.target}: ${u.why}`)]
      : []),
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
