/**
 * Time from `isola serve` to a healthy /healthz, on a fresh data dir and on one used before,
 * plus the time until every backend's probe has ended and the longest silence in the server's
 * output meanwhile. Usage: npm run bench:startup -- [--runs N] [--out file] [--label text]
 * [--backends list] [--bin path/to/isola.js] [--entry main.js] (`--entry`: run a compiled CLI
 * entry with plain Node.js instead of bin/isola.js; `--bin`: another checkout's bin/isola.js)
 * [--fresh-host] (a temporary directory of its own, so that the KVM probe's kept answer is not found).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { freePort } from '../../../test/helpers/server-process.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    out: { type: 'string', default: join(ROOT, 'packages/bench/results/startup.json') },
    label: { type: 'string', default: 'bin/isola.js' },
    backends: { type: 'string' },
    entry: { type: 'string' },
    bin: { type: 'string', default: join(ROOT, 'bin/isola.js') },
    'fresh-host': { type: 'boolean', default: false },
  },
});
const runs = Number(values.runs);
/** A line that ends a backend's probe: `  microvm: ready (...)` or `  gvisor: not available ...`. */
const PROBE_DONE = /^\s*(isolate|wasm|process|container|gvisor|microvm): (ready|not available)/;
/** The same in the table that servers printed before probes ran in the background. */
const TABLE_ROW = /^(isolate|wasm|process|container|gvisor|microvm)\s+(available|unavailable)\s/;
const ISOLATIONS = ['isolate', 'wasm', 'process', 'container', 'gvisor', 'microvm'];

interface Run {
  dataDir: 'fresh' | 'used';
  /** ms from spawn to the first 200 from /healthz. */
  healthyMs: number;
  /** ms from spawn to the line that says the last backend's probe ended. */
  settledMs: number;
  /** Longest time between two lines of output (or spawn and the first) up to settledMs. */
  longestSilenceMs: number;
  /**
   * The same, counting only the gaps in which no step was announced as under way (a line ending
   * in "..." whose end is not printed yet): how long the server was silent without saying why.
   */
  longestUnannouncedSilenceMs: number;
  backendsAtHealthy: string[];
  backendsAtEnd: string[];
}

async function health(url: string): Promise<string[] | undefined> {
  try {
    const response = await fetch(`${url}/healthz`);
    if (response.status !== 200) return undefined;
    return ((await response.json()) as { backends: string[] }).backends;
  } catch {
    return undefined;
  }
}

async function once(dataDir: string, kind: Run['dataDir']): Promise<Run> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith('ISOLA_')) delete env[name];
  if (values.backends) env.ISOLA_BACKENDS = values.backends;
  // A host seen for the first time: no KVM probe answer kept in the temporary directory.
  const freshTmp = values['fresh-host'] ? mkdtempSync(join(tmpdir(), 'isola-startup-tmp-')) : undefined;
  if (freshTmp) env.TMPDIR = freshTmp;
  const started = performance.now();
  const command = values.entry ? ['--no-node-snapshot', values.entry] : [values.bin];
  const child = spawn(process.execPath, [...command, 'serve', '--port', String(port), '--data-dir', dataDir], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lineTimes: number[] = [];
  /** For each line: whether some announced step ("... ...") was still under way after it. */
  const announcing: boolean[] = [];
  const underWay = new Set<string>();
  let output = '';
  let lastBackendLine = 0;
  const probed = new Set<string>();
  const enabled = values.backends ? values.backends.split(',') : ISOLATIONS;
  const onData = (chunk: Buffer) => {
    const now = performance.now() - started;
    for (const line of chunk.toString().split('\n')) {
      if (!line.trim()) continue;
      lineTimes.push(now);
      output += `${Math.round(now)} ${line}\n`;
      const step = /^\s*(?:(\w+): )?.*\.\.\.$/.exec(line);
      if (step) underWay.add(step[1] ?? 'server');
      if (/listening on/.test(line)) underWay.delete('server');
      const ended = /^\s*(\w+): (ready|not available)/.exec(line);
      if (ended) underWay.delete(ended[1] as string);
      announcing.push(underWay.size > 0);
      const done = PROBE_DONE.exec(line) ?? TABLE_ROW.exec(line);
      if (done) {
        probed.add(done[1] as string);
        lastBackendLine = now;
      }
    }
  };
  child.stdout.on('data', onData);
  child.stderr.on('data', onData);
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = started + 120_000;
  let backendsAtHealthy: string[] | undefined;
  let healthyMs = 0;
  while (!backendsAtHealthy) {
    if (performance.now() > deadline || child.exitCode !== null) throw new Error(`no healthy /healthz:\n${output}`);
    backendsAtHealthy = await health(url);
    healthyMs = performance.now() - started;
    if (!backendsAtHealthy) await new Promise((r) => setTimeout(r, 10));
  }
  // Until every enabled backend's probe has ended (a line says ready or not available), or the deadline.
  while (performance.now() < deadline && probed.size < enabled.length) await new Promise((r) => setTimeout(r, 100));
  const backendsAtEnd = (await health(url)) ?? backendsAtHealthy;
  child.kill('SIGTERM');
  await exited;
  if (freshTmp) rmSync(freshTmp, { recursive: true, force: true });
  const settledMs = Math.max(lastBackendLine, healthyMs);
  let longestSilenceMs = 0;
  let longestUnannouncedSilenceMs = 0;
  let previous = 0;
  for (const [i, t] of lineTimes.entries()) {
    if (t > settledMs) break;
    longestSilenceMs = Math.max(longestSilenceMs, t - previous);
    if (!(i > 0 && announcing[i - 1])) longestUnannouncedSilenceMs = Math.max(longestUnannouncedSilenceMs, t - previous);
    previous = t;
  }
  process.stderr.write(output);
  return {
    dataDir: kind,
    healthyMs: Math.round(healthyMs),
    settledMs: Math.round(settledMs),
    longestSilenceMs: Math.round(longestSilenceMs),
    longestUnannouncedSilenceMs: Math.round(longestUnannouncedSilenceMs),
    backendsAtHealthy,
    backendsAtEnd,
  };
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] ?? 0;
};

const results: Run[] = [];
for (let i = 0; i < runs; i++) {
  const dataDir = mkdtempSync(join(tmpdir(), 'isola-startup-'));
  try {
    results.push(await once(dataDir, 'fresh'));
    results.push(await once(dataDir, 'used'));
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}
const summary = (kind: Run['dataDir']) => {
  const these = results.filter((r) => r.dataDir === kind);
  return {
    runs: these.length,
    healthyMs: { median: median(these.map((r) => r.healthyMs)), max: Math.max(...these.map((r) => r.healthyMs)) },
    settledMs: { median: median(these.map((r) => r.settledMs)), max: Math.max(...these.map((r) => r.settledMs)) },
    longestSilenceMs: { max: Math.max(...these.map((r) => r.longestSilenceMs)) },
    longestUnannouncedSilenceMs: { max: Math.max(...these.map((r) => r.longestUnannouncedSilenceMs)) },
  };
};
const report = {
  label: values.label,
  when: new Date().toISOString(),
  node: process.version,
  backends: values.backends ?? 'all (default)',
  host: values['fresh-host'] ? 'fresh (no KVM probe answer kept)' : 'seen before (KVM probe answer kept)',
  command: values.entry ? `node --no-node-snapshot ${values.entry} serve` : `node ${values.bin} serve`,
  fresh: summary('fresh'),
  used: summary('used'),
  runs: results,
};
mkdirSync(dirname(values.out), { recursive: true });
writeFileSync(values.out, `${JSON.stringify(report, null, 2)}\n`);
process.stdout.write(`${JSON.stringify({ fresh: report.fresh, used: report.used }, null, 2)}\n`);
