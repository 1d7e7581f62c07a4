/**
 * Keep-alive policies on a generated Azure-format day: cold starts and idle memory for fixed
 * keep-alives and the hybrid histogram policy, from the simulator; then a scaled-down replay of
 * part of the same trace against a live server under each policy, next to the simulator's
 * prediction for exactly that part. Writes packages/bench/results/policies.json and policies.md.
 *
 *   node --no-node-snapshot --import tsx packages/bench/suites/policies.ts [--quick]
 */

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { IsolaClient } from '../../../src/cli/client.js';
import { parsePolicy } from '../../../src/scheduler/policy.js';
import { replay } from '../../../src/simulator/replay.js';
import { scalePolicy } from '../../../src/simulator/scale.js';
import { simulate, simulateApp } from '../../../src/simulator/simulate.js';
import { generateTrace } from '../../../src/simulator/trace.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const APPS = quick ? 200 : 1000;
const REPLAY = { apps: quick ? 6 : 12, minutes: quick ? 120 : 240, minuteMs: 50 };
const POLICIES = ['fixed:10m', 'hybrid', 'fixed:5m', 'fixed:20m', 'fixed:60m'];
const log = (message: string) => process.stderr.write(`${message}\n`);

async function main() {
  const started = Date.now();
  const traceDir = mkdtempSync(join(tmpdir(), 'isola-trace-'));
  const results: Record<string, unknown> = { benchmark: 'policies', quick, host: hostInfo() };
  try {
    log(`generating a day of ${APPS} apps in the Azure Functions 2019 format...`);
    const apps = generateTrace(traceDir, { apps: APPS, days: 1, seed: 2020 });
    const reports = POLICIES.map((p) => simulate(apps, parsePolicy(p)));
    results.trace = { apps: APPS, days: 1, seed: 2020, generator: 'src/simulator/trace.ts generateTrace' };
    results.policies = reports;

    log('choosing apps for the live replay...');
    const window = apps.map((app) => ({ ...app, perMinute: app.perMinute.slice(0, REPLAY.minutes) }));
    const fixed = parsePolicy('fixed:10m');
    const hybrid = parsePolicy('hybrid');
    // Apps that call at least ten times in the window, those where the policies differ most first.
    const chosen = window
      .filter((app) => app.perMinute.filter(Boolean).length >= 10)
      .map((app) => ({ app, difference: simulateApp(app, fixed).coldStarts - simulateApp(app, hybrid).coldStarts }))
      .sort((a, b) => b.difference - a.difference)
      .slice(0, REPLAY.apps)
      .map((c) => c.app);

    const server = await ServerProcess.start({ env: { ISOLA_BACKENDS: 'isolate', ISOLA_PREWARM: 'isolate:0' } });
    const client = new IsolaClient({ apihost: server.url, auth: server.auth });
    const replays = [];
    try {
      for (const [i, policy] of ['fixed:10m', 'hybrid'].entries()) {
        const scaled = scalePolicy(policy, REPLAY.minuteMs);
        log(
          `live replay under ${policy} (${scaled}): ${chosen.length} apps, ${REPLAY.minutes} minutes at ${REPLAY.minuteMs} ms each...`,
        );
        const live = await replay({ client, apps: chosen, policy: scaled, minuteMs: REPLAY.minuteMs, prefix: `replay-${i}` });
        const predicted = simulate(chosen, parsePolicy(scaled), REPLAY.minuteMs);
        replays.push({
          policy,
          scaled,
          live: { invocations: live.invocations, coldStarts: live.coldStarts, coldStartPct: live.coldStartPct },
          simulated: {
            invocations: predicted.invocations,
            coldStarts: predicted.coldStarts,
            coldStartPct: predicted.coldStartPct,
          },
        });
      }
    } finally {
      await server.dispose();
    }
    results.replay = { ...REPLAY, runs: replays };
    const byName = Object.fromEntries(reports.map((r) => [r.policy, r]));
    const f = byName['fixed:10m'];
    const h = byName.hybrid;
    results.target = {
      claim: 'hybrid has fewer cold starts than fixed-10-minute while wasting no more idle memory',
      coldStartPct: { fixed10m: f?.coldStartPct, hybrid: h?.coldStartPct },
      wastedMemoryGbSeconds: { fixed10m: f?.wastedMemoryGbSeconds, hybrid: h?.wastedMemoryGbSeconds },
      met: Boolean(f && h && h.coldStartPct < f.coldStartPct && h.wastedMemoryGbSeconds <= f.wastedMemoryGbSeconds),
      confirmedLive: replays.every(
        (r) => Math.abs(r.live.coldStarts - r.simulated.coldStarts) <= Math.max(2, r.simulated.coldStarts * 0.1),
      ),
    };
    results.durationSeconds = Math.round((Date.now() - started) / 1000);
    mkdirSync(outDir, { recursive: true });
    const suffix = quick ? '-quick' : '';
    writeFileSync(join(outDir, `policies${suffix}.json`), `${JSON.stringify(results, null, 2)}\n`);
    const table = [
      "| policy | cold starts | cold start % | p75 of apps' cold start % | idle memory (GB-s) | apps on the histogram |",
      '|---|---|---|---|---|---|',
      ...reports.map(
        (r) =>
          `| ${r.policy} | ${r.coldStarts} | ${r.coldStartPct} | ${r.appColdStartPctP75} | ${r.wastedMemoryGbSeconds} | ${r.appsOnHistogramPct}% |`,
      ),
      '',
      `Live replay (${chosen.length} apps, ${REPLAY.minutes} trace minutes at ${REPLAY.minuteMs} ms each):`,
      '',
      '| policy | live cold starts | simulated cold starts | invocations |',
      '|---|---|---|---|',
      ...replays.map(
        (r) => `| ${r.policy} (${r.scaled}) | ${r.live.coldStarts} | ${r.simulated.coldStarts} | ${r.live.invocations} |`,
      ),
    ].join('\n');
    writeFileSync(join(outDir, `policies${suffix}.md`), `${table}\n`);
    process.stdout.write(`${table}\n`);
  } finally {
    rmSync(traceDir, { recursive: true, force: true });
  }
}

await main();
