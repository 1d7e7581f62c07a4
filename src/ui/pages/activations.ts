import type { FastifyInstance } from 'fastify';
import { notFound } from '../../core/errors.js';
import type { ActivationRecord } from '../../core/types.js';
import type { Platform } from '../../platform/platform.js';
import type { ActivationQuery } from '../../store/records.js';
import { html } from '../html.js';
import { annotationOf, json, page, startKind, time } from '../layout.js';
import { SESSION_COOKIE, sendHtml, sessionOf } from '../routes.js';
import { activationRow, activationSummary, activationTable } from './functions.js';

const PAGE_SIZE = 50;
/** How far back a filter may reach, by its name in the form. */
const SPANS: Record<string, number> = { '15m': 15 * 60_000, '1h': 3_600_000, '24h': 86_400_000, '7d': 7 * 86_400_000 };
/** The live tail reads the store this often (any server of a cluster sees every invoker's records there). */
const TAIL_POLL_MS = 1000;
const ACTIVATION_ID = /^[0-9a-f]{32}$/;

interface Filters {
  function?: string;
  outcome?: 'success' | 'failure';
  start?: 'cold' | 'warm';
  span?: string;
  page: number;
}

function filtersOf(query: Record<string, string | undefined>): Filters {
  const pageNumber = Number(query.page ?? '1');
  return {
    ...(query.function ? { function: query.function.slice(0, 300) } : {}),
    ...(query.outcome === 'success' || query.outcome === 'failure' ? { outcome: query.outcome } : {}),
    ...(query.start === 'cold' || query.start === 'warm' ? { start: query.start } : {}),
    ...(query.span && SPANS[query.span] ? { span: query.span } : {}),
    page: Number.isInteger(pageNumber) && pageNumber >= 1 && pageNumber <= 10_000 ? pageNumber : 1,
  };
}

function storeQuery(filters: Filters, now: number): Omit<ActivationQuery, 'skip' | 'limit'> {
  return {
    ...(filters.function ? { name: filters.function } : {}),
    ...(filters.outcome ? { outcome: filters.outcome } : {}),
    ...(filters.span ? { since: now - (SPANS[filters.span] as number) } : {}),
  };
}

/** Cold or warm is in the record's annotations: that filter applies to the page read. */
function matchesStart(record: ActivationRecord, start: Filters['start']): boolean {
  if (!start) return true;
  const kind = startKind(record);
  return start === 'cold' ? kind === 'cold' || kind === 'restored' : kind === 'warm';
}

export function registerActivationPages(app: FastifyInstance, platform: Platform): void {
  const cluster = platform.cluster !== undefined;

  app.get<{ Querystring: Record<string, string | undefined> }>('/activations', async (request, reply) => {
    const session = sessionOf(request);
    const filters = filtersOf(request.query);
    const records = (
      await platform.activations.list(session.namespace, {
        ...storeQuery(filters, Date.now()),
        skip: (filters.page - 1) * PAGE_SIZE,
        limit: PAGE_SIZE,
      })
    ).filter((r) => matchesStart(r, filters.start));
    const link = (pageNumber: number) => {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries({ ...filters, page: String(pageNumber) }))
        if (value !== undefined && value !== '') params.set(key, String(value));
      return `/ui/activations?${params}`;
    };
    const option = (value: string, label: string, current: string | undefined) =>
      html`<option value="${value}"${value === (current ?? '') ? html` selected` : ''}>${label}</option>`;
    const tailQuery = new URLSearchParams(
      Object.entries({ function: filters.function, outcome: filters.outcome, start: filters.start }).filter(
        (entry): entry is [string, string] => entry[1] !== undefined,
      ),
    );
    return sendHtml(
      reply,
      page(
        { title: 'Activations', section: 'activations', session, cluster },
        html`<h1>Activations</h1>
<form class="filters row" method="get" action="/ui/activations">
<label>Function <input name="function" value="${filters.function ?? ''}" spellcheck="false"></label>
<label>Status <select name="outcome">${option('', 'any', filters.outcome)}${option('success', 'success', filters.outcome)}${option('failure', 'failed', filters.outcome)}</select></label>
<label>Start <select name="start">${option('', 'any', filters.start)}${option('cold', 'cold', filters.start)}${option('warm', 'warm', filters.start)}</select></label>
<label>Since <select name="span">${option('', 'any time', filters.span)}${option('15m', 'the last 15 minutes', filters.span)}${option('1h', 'the last hour', filters.span)}${option('24h', 'the last day', filters.span)}${option('7d', 'the last week', filters.span)}</select></label>
<button type="submit">Filter</button>
</form>
<section aria-labelledby="tail-h" class="tail">
<h2 id="tail-h">Live</h2>
<p><button type="button" class="tail-toggle" data-stream="/ui/activations/stream?${tailQuery.toString()}" aria-pressed="false">Follow new activations</button>
<span class="tail-state muted" role="status"></span></p>
<table class="list activations"><thead><tr><th scope="col">Function</th><th scope="col">Activation</th><th scope="col">Status</th><th scope="col">Start</th><th scope="col">Duration</th><th scope="col">Started</th></tr></thead>
<tbody class="tail-rows"></tbody></table>
</section>
<section aria-labelledby="list-h"><h2 id="list-h">Stored</h2>
${activationTable(records, { showName: true })}
<nav class="pages" aria-label="Pages">${filters.page > 1 ? html`<a href="${link(filters.page - 1)}" rel="prev">Newer</a>` : ''}
${records.length > 0 || filters.page > 1 ? html`<span>Page ${filters.page}</span>` : ''}
${records.length === PAGE_SIZE || (filters.start && records.length > 0) ? html`<a href="${link(filters.page + 1)}" rel="next">Older</a>` : ''}</nav>
</section>`,
      ),
    );
  });

  // Server-sent events: each new activation of the namespace (that the filters take) as a table
  // row, with its logs, as the store gets it. Reads the store, so that every invoker's records come.
  app.get<{ Querystring: Record<string, string | undefined> }>('/activations/stream', (request, reply) => {
    const session = sessionOf(request);
    const filters = filtersOf(request.query);
    reply.hijack();
    const out = reply.raw;
    out.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    out.write('retry: 2000\n\n');
    const seen = new Set<string>();
    let since = Date.now() - TAIL_POLL_MS;
    let stopped = false;
    let reading = false;
    const poll = async () => {
      if (stopped || reading) return;
      reading = true;
      try {
        const fresh = (
          await platform.activations.list(session.namespace, { ...storeQuery(filters, Date.now()), since, skip: 0, limit: 200 })
        )
          .filter((r) => !seen.has(r.activationId) && matchesStart(r, filters.start))
          .reverse();
        for (const record of fresh) {
          seen.add(record.activationId);
          const row = activationRow(record, { showName: true }).value.replaceAll('\n', ' ');
          out.write(`event: activation\ndata: ${row}\n\n`);
          if (record.logs.length > 0)
            out.write(
              `event: logs\ndata: ${JSON.stringify({ id: record.activationId, name: record.name, logs: record.logs })}\n\n`,
            );
        }
        // Records are stored when runs end, in any order of their starts: look back a little.
        if (fresh.length > 0) since = Math.max(since, Math.max(...fresh.map((r) => r.start)) - 60_000);
        if (seen.size > 5000) seen.clear();
      } catch (error) {
        request.log.warn({ err: error, requestId: String(request.id) }, 'live tail read failed');
      } finally {
        reading = false;
      }
    };
    const timer = setInterval(() => void poll(), TAIL_POLL_MS);
    const keepAlive = setInterval(() => out.write(': keep-alive\n\n'), 15_000);
    // Also ends when the session does: a signed-out tab stops receiving.
    const sessionCheck = setInterval(async () => {
      if (!(await platform.uiSessions.lookup(request.cookies[SESSION_COOKIE]).catch(() => undefined))) stop();
    }, 30_000);
    const stop = () => {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      clearInterval(keepAlive);
      clearInterval(sessionCheck);
      out.end();
    };
    request.raw.on('close', stop);
    void poll();
  });

  app.get<{ Params: { id: string } }>('/activations/:id', async (request, reply) => {
    const session = sessionOf(request);
    const id = request.params.id;
    const record = ACTIVATION_ID.test(id) ? await platform.activations.get(session.namespace, id) : undefined;
    if (!record) throw notFound(`There is no activation ${id} in ${session.namespace} (it may still be running).`);
    return sendHtml(
      reply,
      page(
        { title: `Activation ${id.slice(0, 12)}`, section: 'activations', session, cluster },
        html`<h1>Activation <code>${id}</code></h1>
<p>Of <a href="/ui/functions/${encodeURIComponent(record.name)}">${record.name}</a> version ${record.version}, by ${record.subject}.</p>
${activationSummary(record)}
<dl class="facts">
<div><dt>Ended</dt><dd>${time(record.end)}</dd></div>
<div><dt>Attempt</dt><dd>${String(annotationOf(record, 'attempt') ?? 1)}</dd></div>
${annotationOf(record, 'invoker') !== undefined ? html`<div><dt>Invoker</dt><dd>${String(annotationOf(record, 'invoker'))}</dd></div>` : ''}
</dl>
<h2>Annotations</h2>
<pre tabindex="0" aria-label="Annotations">${json(record.annotations)}</pre>`,
      ),
    );
  });
}
