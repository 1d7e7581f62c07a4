/**
 * The dashboard's budgets, measured in one run on this machine:
 *
 * 1. JavaScript: every script a dashboard page loads (htmx, uPlot, the UI's own), gzipped as the
 *    server sends it; the budget is 100 KB for the whole UI.
 * 2. Server render time with 10,000 activations in the store: the activations page (its first 50),
 *    the functions list (with each function's calls of the last hour), a function's page and its
 *    chart data, each fetched sequentially over HTTP keep-alive; the budget is 200 ms. Beside
 *    them, as the baseline of the same run, the same 50 records as JSON from the OpenWhisk API.
 *
 * A real `isola serve` (SQLite, isolate backend) fills its store with real invocations first.
 * Writes packages/bench/results/ui.json and ui.md (ui-quick.* with --quick).
 *
 *   npm run bench:ui [-- --quick] [-- --out=DIR]
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { KeepAliveClient } from '../src/http.js';
import { percentile } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));

const ACTIVATIONS = 10_000;
const FUNCTIONS = 20;
const CLIENTS = 8;
const SAMPLES = quick ? 20 : 100;
const JS_BUDGET_BYTES = 100 * 1024;
const RENDER_BUDGET_MS = 200;
const log = (message: string) => process.stderr.write(`${message}\n`);
const round2 = (x: number) => Math.round(x * 100) / 100;

/** The gzipped size of an asset as the server sends it to a browser. */
function gzippedSize(url: string, path: string): Promise<{ bytes: number; encoding: string }> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { headers: { 'accept-encoding': 'gzip' } }, (res) => {
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
      });
      res.on('end', () => resolve({ bytes, encoding: String(res.headers['content-encoding'] ?? 'identity') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function signIn(url: string, auth: string): Promise<string> {
  const response = await fetch(`${url}/ui/signin`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ key: auth }),
    redirect: 'manual',
  });
  const cookie = response.headers.get('set-cookie')?.split(';')[0];
  if (response.status !== 303 || !cookie) throw new Error(`sign-in: ${response.status}`);
  return cookie;
}

async function timed(client: KeepAliveClient, path: string, samples: number) {
  const times: number[] = [];
  let bytes = 0;
  for (let i = 0; i < samples + 5; i++) {
    const start = performance.now();
    const response = await client.send('GET', path);
    const elapsed = performance.now() - start;
    if (response.status !== 200) throw new Error(`${path}: ${response.status} ${response.body.slice(0, 200)}`);
    bytes = Buffer.byteLength(response.body);
    if (i >= 5) times.push(elapsed);
  }
  times.sort((a, b) => a - b);
  return {
    path,
    bytes,
    p50Ms: round2(percentile(times, 50)),
    p95Ms: round2(percentile(times, 95)),
    maxMs: round2(times.at(-1) ?? 0),
  };
}

async function main() {
  const started = Date.now();
  const loadAtStart = loadavg().map(round2);
  const server = await ServerProcess.start({ env: { ISOLA_BACKENDS: 'isolate', ISOLA_PREWARM: '' } });
  try {
    const api = new KeepAliveClient(server.url, { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` });
    log(`deploying ${FUNCTIONS} functions and making ${ACTIVATIONS} activations...`);
    for (let f = 0; f < FUNCTIONS; f++) {
      const deployed = await server.deploy(
        `fn${f}`,
        "function main(p) { console.log('call', p.n); if (p.n % 17 === 0) throw new Error('every 17th fails'); return { n: p.n }; }",
      );
      if (deployed.status !== 200) throw new Error(`deploy: ${deployed.status}`);
    }
    let next = 0;
    await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        while (next < ACTIVATIONS) {
          const n = next++;
          const res = await api.send('POST', `/api/v1/namespaces/_/actions/fn${n % FUNCTIONS}?blocking=true`, { n });
          if (res.status !== 200 && res.status !== 502) throw new Error(`invoke: ${res.status} ${res.body.slice(0, 200)}`);
        }
      }),
    );
    const cookie = await signIn(server.url, server.auth);
    const ui = new KeepAliveClient(server.url, { cookie });

    log('measuring the pages...');
    const pages = [
      await timed(ui, '/ui/activations', SAMPLES),
      await timed(ui, '/ui/functions', SAMPLES),
      await timed(ui, '/ui/functions/fn0', SAMPLES),
      await timed(ui, '/ui/charts/series?function=fn0', SAMPLES),
      await timed(ui, '/ui/instances', SAMPLES),
    ];
    const baseline = await timed(api, '/api/v1/namespaces/_/activations?limit=50&docs=true', SAMPLES);

    const scripts = ['htmx.min.js', 'uPlot.iife.min.js', 'ui.js'];
    const styles = ['ui.css', 'uPlot.min.css'];
    const sizes = Object.fromEntries(
      await Promise.all(
        [...scripts, ...styles].map(async (name) => [name, await gzippedSize(server.url, `/ui/assets/${name}`)] as const),
      ),
    );
    const jsBytes = scripts.reduce((sum, name) => sum + (sizes[name]?.bytes ?? 0), 0);
    const slowest = Math.max(...pages.map((p) => p.p50Ms));
    const results = {
      measured: new Date().toISOString(),
      host: hostInfo(),
      loadAverage: { atStart: loadAtStart, atEnd: loadavg().map(round2) },
      store: { activations: ACTIVATIONS, functions: FUNCTIONS, database: 'SQLite' },
      javascript: {
        gzippedBytes: jsBytes,
        budgetBytes: JS_BUDGET_BYTES,
        met: jsBytes <= JS_BUDGET_BYTES,
        files: sizes,
      },
      render: {
        samples: SAMPLES,
        pages,
        baseline: { ...baseline, what: 'the same 50 records as JSON (OpenWhisk API)' },
        activationsPageVsBaseline: round2((pages[0]?.p50Ms ?? 0) / baseline.p50Ms),
        budgetMs: RENDER_BUDGET_MS,
        met: slowest <= RENDER_BUDGET_MS,
      },
      durationSeconds: Math.round((Date.now() - started) / 1000),
    };
    mkdirSync(outDir, { recursive: true });
    const base = quick ? 'ui-quick' : 'ui';
    writeFileSync(join(outDir, `${base}.json`), `${JSON.stringify(results, null, 2)}\n`);
    const md = [
      `Measured ${results.measured} (npm run bench:ui): a real isola serve (SQLite) with ${ACTIVATIONS} activations of ${FUNCTIONS} functions, ${SAMPLES} sequential requests per page over HTTP keep-alive.`,
      '',
      '| page | HTML bytes | p50 (ms) | p95 (ms) |',
      '|---|---|---|---|',
      ...pages.map((p) => `| \`${p.path}\` | ${p.bytes} | ${p.p50Ms} | ${p.p95Ms} |`),
      `| baseline: \`${baseline.path}\` | ${baseline.bytes} | ${baseline.p50Ms} | ${baseline.p95Ms} |`,
      '',
      `Render budget (each page under ${RENDER_BUDGET_MS} ms with ${ACTIVATIONS} activations): ${results.render.met ? 'met' : 'not met'}; the activations page takes ${results.render.activationsPageVsBaseline}x the JSON of the same records.`,
      '',
      '| asset | gzipped bytes |',
      '|---|---|',
      ...Object.entries(sizes).map(([name, size]) => `| ${name} | ${size.bytes} (${size.encoding}) |`),
      '',
      `JavaScript budget (100 KB gzipped for the whole UI): ${jsBytes} bytes, ${results.javascript.met ? 'met' : 'not met'}.`,
      '',
    ].join('\n');
    writeFileSync(join(outDir, `${base}.md`), md);
    process.stdout.write(md);
  } finally {
    await server.dispose();
  }
}

main().catch((error) => {
  process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
  process.exit(1);
});
