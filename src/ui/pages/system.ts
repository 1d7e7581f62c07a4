import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { notFound } from '../../core/errors.js';
import type { Platform } from '../../platform/platform.js';
import { chartSeries } from '../charts.js';
import { html } from '../html.js';
import { annotationOf, page, time } from '../layout.js';
import { sendHtml, sessionOf } from '../routes.js';

const CHART_SPAN_MS = 60 * 60 * 1000;
const CHART_STEP_MS = 60 * 1000;
/** The most runs a chart reads: beyond, the busiest minutes are what it shows. */
const CHART_RUNS = 100_000;

/** Benchmark reports under the data dir (`isola bench --out <data dir>/bench/<name>`), newest first. */
function benchmarkReports(dataDir: string): { id: string; path: string; name: string; modified: number }[] {
  const root = join(dataDir, 'bench');
  if (!existsSync(root)) return [];
  const found: { id: string; path: string; name: string; modified: number }[] = [];
  const walk = (dir: string, depth: number) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory() && depth < 3) walk(path, depth + 1);
      else if (entry.isFile() && entry.name === 'report.html') {
        const name = relative(root, dir) || '.';
        found.push({
          id: createHash('sha256').update(name).digest('hex').slice(0, 16),
          path,
          name,
          modified: statSync(path).mtimeMs,
        });
      }
    }
  };
  walk(root, 0);
  return found.sort((a, b) => b.modified - a.modified);
}

export function registerSystemPages(app: FastifyInstance, platform: Platform): void {
  const cluster = platform.cluster !== undefined;

  app.get<{ Querystring: { function?: string; backend?: string } }>('/charts/series', async (request) => {
    const session = sessionOf(request);
    const now = Date.now();
    const name = request.query.function?.slice(0, 300) || undefined;
    const backend = request.query.backend?.slice(0, 40) || undefined;
    const runs = (await platform.activations.timings(session.namespace, now - CHART_SPAN_MS, name, CHART_RUNS)).filter(
      (run) => backend === undefined || annotationOf(run, 'isolation') === backend,
    );
    return chartSeries(runs, now, CHART_SPAN_MS, CHART_STEP_MS);
  });

  app.get('/instances', async (request, reply) => {
    const session = sessionOf(request);
    const stats = platform.scheduler.stats();
    const functions = platform.scheduler.instancesOfNamespace(session.namespace);
    const clusterRows = platform.clusterInstances(session.namespace);
    const byBackend = new Map<string, Map<string, number>>();
    for (const fn of functions)
      for (const instance of fn.instances) {
        const states = byBackend.get(instance.isolation) ?? new Map<string, number>();
        states.set(instance.state, (states.get(instance.state) ?? 0) + 1);
        byBackend.set(instance.isolation, states);
      }
    const STATES = ['starting', 'idle', 'busy', 'stopping'];
    const usedShare = stats.memoryBudgetMb > 0 ? Math.round((stats.memoryUsedMb / stats.memoryBudgetMb) * 100) : 0;
    return sendHtml(
      reply,
      page(
        { title: 'Instances', section: 'instances', session, cluster, charts: true },
        html`<h1>Instances</h1>
${
  cluster
    ? html`<h2>Across the cluster</h2>
<p class="muted">As the invokers said in their last heartbeats (every 3.3 s); each invoker's own page lists the details.</p>
${
  clusterRows.length === 0
    ? html`<p class="muted">No instances of ${session.namespace}'s functions on any invoker.</p>`
    : html`<table class="list cluster-instances"><thead><tr><th scope="col">Function</th><th scope="col">Version</th><th scope="col">Invoker</th><th scope="col">Live</th><th scope="col">Started</th></tr></thead>
<tbody>${clusterRows.map((r) => html`<tr><td><a href="/ui/functions/${encodeURIComponent(r.name)}">${r.name}</a></td><td>${r.version}</td><td>${r.invoker}</td><td>${r.live}</td><td>${r.ready}</td></tr>`)}</tbody></table>`
}
<h2>On this server</h2>`
    : ''
}
<dl class="facts">
<div><dt>Memory in use</dt><dd><meter min="0" max="${stats.memoryBudgetMb}" value="${stats.memoryUsedMb}" aria-label="Memory in use">${usedShare}%</meter> ${stats.memoryUsedMb} of ${stats.memoryBudgetMb} MB (every namespace)</dd></div>
<div><dt>Stem cells ready</dt><dd>${stats.stemCells}</dd></div>
<div><dt>Calls waiting for memory</dt><dd>${stats.queued}</dd></div>
</dl>
<h2>Yours, by backend</h2>
${
  byBackend.size === 0
    ? html`<p class="muted">No instances of ${session.namespace}'s functions are live on this server.</p>`
    : html`<table class="list"><thead><tr><th scope="col">Backend</th>${STATES.map((s) => html`<th scope="col">${s}</th>`)}</tr></thead>
<tbody>${[...byBackend].map(([isolation, states]) => html`<tr><th scope="row">${isolation}</th>${STATES.map((s) => html`<td>${states.get(s) ?? 0}</td>`)}</tr>`)}</tbody></table>`
}
<h2>Yours, by function</h2>
${
  functions.length === 0
    ? html`<p class="muted">None.</p>`
    : functions.map(
        (fn) => html`<section class="fn-instances" aria-label="${fn.name}">
<h3><a href="/ui/functions/${encodeURIComponent(fn.name)}">${fn.name}</a></h3>
${fn.prewarmAt !== undefined ? html`<p class="plan">Unloaded; the keep-alive policy prewarms an instance at ${time(fn.prewarmAt)}.</p>` : ''}
${
  fn.instances.length === 0
    ? ''
    : html`<table class="list"><thead><tr><th scope="col">Instance</th><th scope="col">Version</th><th scope="col">Backend</th><th scope="col">State</th><th scope="col">Started for</th><th scope="col">Memory</th><th scope="col">Calls now</th><th scope="col">Next</th></tr></thead>
<tbody>${fn.instances.map(
        (
          i,
        ) => html`<tr><td>${i.id}</td><td>${i.version}</td><td>${i.isolation}</td><td><span class="badge state-${i.state}">${i.state}</span></td><td>${i.origin}</td><td>${i.memoryMb} MB</td><td>${i.inflight} of ${i.concurrency}</td>
<td>${i.unloadAt !== undefined ? html`unload at ${time(i.unloadAt)}` : i.origin === 'provisioned' ? 'kept (provisioned)' : '—'}</td></tr>`,
      )}</tbody></table>`
}
</section>`,
      )
}
<h2>The last hour, by backend</h2>
${[...new Set(platform.backendStatuses.filter((s) => s.available).map((s) => s.isolation))].map(
  (isolation) => html`<h3>${isolation}</h3><div class="charts" data-series="/ui/charts/series?backend=${isolation}"></div>`,
)}`,
      ),
    );
  });

  app.get('/backends', async (request, reply) => {
    const session = sessionOf(request);
    return sendHtml(
      reply,
      page(
        { title: 'Backends', section: 'backends', session, cluster },
        html`<h1>Backends</h1>
<p>What <code>isola doctor</code> reports for this server.</p>
<table class="list"><thead><tr><th scope="col">Backend</th><th scope="col">Status</th><th scope="col">What was found</th><th scope="col">Kinds</th></tr></thead>
<tbody>${platform.backendStatuses.map(
          (s) => html`<tr><th scope="row">${s.isolation}</th>
<td><span class="badge ${s.available ? 'status-ok' : s.probing ? 'status-warn' : 'status-bad'}">${s.available ? 'ready' : s.probing ? 'probing' : 'unavailable'}</span></td>
<td>${s.detail}${s.fix ? html`<br><span class="muted">${s.fix}</span>` : ''}</td>
<td>${(s.kinds ?? [])
            .filter((k) => k.available)
            .map((k) => k.kind)
            .join(', ')}</td></tr>`,
        )}</tbody></table>`,
      ),
    );
  });

  app.get('/benchmarks', async (request, reply) => {
    const session = sessionOf(request);
    const reports = benchmarkReports(platform.config.dataDir);
    return sendHtml(
      reply,
      page(
        { title: 'Benchmarks', section: 'benchmarks', session, cluster },
        html`<h1>Benchmarks</h1>
${
  reports.length === 0
    ? html`<p>No reports yet. The harness writes one with <code>isola bench --out ${join(platform.config.dataDir, 'bench', '&lt;name&gt;')}</code> (after <code>npm run bench:install</code>).</p>`
    : html`<ul class="reports">${reports.map((r) => html`<li><a href="/ui/benchmarks/${r.id}">${r.name}</a> ${time(r.modified)}</li>`)}</ul>`
}`,
      ),
    );
  });

  app.get<{ Params: { id: string } }>('/benchmarks/:id', async (request, reply) => {
    const session = sessionOf(request);
    const report = benchmarkReports(platform.config.dataDir).find((r) => r.id === request.params.id);
    if (!report) throw notFound('There is no such report.');
    return sendHtml(
      reply,
      page(
        { title: `Benchmark ${report.name}`, section: 'benchmarks', session, cluster },
        html`<h1>Benchmark: ${report.name}</h1><p>Written ${time(report.modified)}.</p>
<iframe class="report" title="Benchmark report ${report.name}" src="/ui/benchmarks/${report.id}/report.html" sandbox></iframe>`,
      ),
    );
  });

  app.get<{ Params: { id: string } }>('/benchmarks/:id/report.html', async (request, reply) => {
    sessionOf(request);
    const report = benchmarkReports(platform.config.dataDir).find((r) => r.id === request.params.id);
    if (!report) throw notFound('There is no such report.');
    // The report is a page of its own (inline styles and SVG): shown sandboxed in the dashboard's frame, no scripts.
    reply.header(
      'content-security-policy',
      "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox",
    );
    reply.header('x-frame-options', 'SAMEORIGIN');
    return reply.type('text/html; charset=utf-8').send(readFileSync(report.path));
  });

  app.get('/cluster', async (request, reply) => {
    const session = sessionOf(request);
    const invokers = await platform.invokers();
    return sendHtml(
      reply,
      page(
        { title: 'Cluster', section: 'cluster', session, cluster },
        html`<h1>Cluster</h1>
<table class="list"><thead><tr><th scope="col">Invoker</th><th scope="col">Host</th><th scope="col">Backends</th><th scope="col">Memory in use</th><th scope="col">Instances</th><th scope="col">Health</th><th scope="col">Last heartbeat</th></tr></thead>
<tbody>${invokers.map(
          (i) => html`<tr><th scope="row">${i.id}</th><td>${i.host}</td><td>${i.backends.join(', ')}</td>
<td><meter min="0" max="${i.memoryBudgetMb}" value="${i.memoryInUseMb}" aria-label="Memory in use on ${i.id}"></meter> ${i.memoryInUseMb} of ${i.memoryBudgetMb} MB</td>
<td>${i.instances}</td><td><span class="badge ${i.health === 'healthy' ? 'status-ok' : 'status-warn'}">${i.health}</span></td><td>${Math.round(i.heartbeatAgeMs / 100) / 10} s ago</td></tr>`,
        )}</tbody></table>`,
      ),
    );
  });
}
