import type { FastifyInstance } from 'fastify';
import { draftFromPut } from '../../api/action-draft.js';
import { ActionPutSchema, parseOrThrow } from '../../api/schemas.js';
import { badRequest, notFound } from '../../core/errors.js';
import { ISOLATIONS, KINDS } from '../../core/kinds.js';
import type { ActionVersion, ActivationRecord, KeyValue } from '../../core/types.js';
import type { InvokeOutcome } from '../../platform/invoke.js';
import type { Platform } from '../../platform/platform.js';
import { html, type SafeHtml } from '../html.js';
import { annotationOf, duration, json, page, startBadge, statusBadge, time } from '../layout.js';
import { formOf, fromHtmx, sendHtml, sessionOf } from '../routes.js';

/** What the editor holds for a new function. */
const STARTER = "function main(params) {\n  return { greeting: 'Hello, ' + (params.name || 'world') + '!' };\n}\n";

/** The sparkline's span and step: the last hour, by 5 minutes. */
const ACTIVITY_SPAN_MS = 60 * 60 * 1000;
const ACTIVITY_STEP_MS = 5 * 60 * 1000;
const LIST_LIMIT = 200;

const functionUrl = (name: string) => `/ui/functions/${encodeURIComponent(name)}`;

/** Calls per step as a small inline SVG (no script): the last hour of a function. */
export function sparkline(counts: readonly number[], label: string): SafeHtml {
  const width = 96;
  const height = 20;
  const most = Math.max(1, ...counts);
  const step = counts.length > 1 ? width / (counts.length - 1) : width;
  const points = counts
    .map((c, i) => `${(i * step).toFixed(1)},${(height - 1 - (c / most) * (height - 2)).toFixed(1)}`)
    .join(' ');
  return html`<svg class="spark" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${label}"><polyline points="${points}" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>`;
}

export function registerFunctionPages(app: FastifyInstance, platform: Platform): void {
  const cluster = platform.cluster !== undefined;

  app.get('/functions', async (request, reply) => {
    const session = sessionOf(request);
    const now = Date.now();
    const [actions, activity, last] = await Promise.all([
      platform.actions.list(session.namespace, { skip: 0, limit: LIST_LIMIT }),
      platform.activations.activity(session.namespace, now - ACTIVITY_SPAN_MS, ACTIVITY_STEP_MS),
      platform.activations.lastCalls(session.namespace),
    ]);
    const firstBucket = Math.floor((now - ACTIVITY_SPAN_MS) / ACTIVITY_STEP_MS);
    const steps = ACTIVITY_SPAN_MS / ACTIVITY_STEP_MS + 1;
    const calls = new Map<string, number[]>();
    for (const row of activity) {
      const series = calls.get(row.name) ?? new Array<number>(steps).fill(0);
      const index = row.bucket - firstBucket;
      if (index >= 0 && index < steps) series[index] = (series[index] ?? 0) + row.calls;
      calls.set(row.name, series);
    }
    const rows = actions.map((action) => {
      const series = calls.get(action.name) ?? new Array<number>(steps).fill(0);
      const total = series.reduce((a, b) => a + b, 0);
      return html`<tr>
<th scope="row"><a href="${functionUrl(action.name)}">${action.name}</a></th>
<td>${action.sequence ? 'sequence' : action.exec.kind}</td>
<td>${action.sequence ? '—' : action.isolation}</td>
<td>${action.version}</td>
<td>${time(last.get(action.name))}</td>
<td>${sparkline(series, `${total} calls in the last hour`)} <span class="muted">${total}</span></td>
</tr>`;
    });
    return sendHtml(
      reply,
      page(
        { title: 'Functions', section: 'functions', session, cluster },
        html`<div class="heading"><h1>Functions</h1><a class="button" href="/ui/functions/new">New function</a></div>
${
  actions.length === 0
    ? html`<p>No functions in <strong>${session.namespace}</strong> yet. <a href="/ui/functions/new">Deploy one</a>, or with the CLI: <code>isola action create hello hello.js</code>.</p>`
    : html`<table class="list">
<caption class="visually-hidden">Functions of ${session.namespace}</caption>
<thead><tr><th scope="col">Name</th><th scope="col">Kind</th><th scope="col">Isolation</th><th scope="col">Version</th><th scope="col">Last call</th><th scope="col">Calls, last hour</th></tr></thead>
<tbody>${rows}</tbody>
</table>${actions.length === LIST_LIMIT ? html`<p class="muted">The first ${LIST_LIMIT} functions, by name.</p>` : ''}`
}`,
      ),
    );
  });

  app.get('/functions/new', async (request, reply) => {
    const session = sessionOf(request);
    return sendHtml(
      reply,
      page(
        { title: 'New function', section: 'functions', session, cluster },
        html`<h1>New function</h1>${editor(platform, undefined, session.csrfToken)}`,
      ),
    );
  });

  app.post('/functions', async (request, reply) => {
    const session = sessionOf(request);
    const form = formOf(request);
    const name = (form.name ?? '').trim();
    if (!name) throw badRequest('The function needs a name.');
    const current = await platform.actions.get(session.namespace, name);
    if (form.create === 'true' && current) throw badRequest(`There is already a function named "${name}".`);
    const stored = await platform.deploy(draftFromPut(session.namespace, name, actionPutFromForm(form), current), true);
    const target = functionUrl(stored.name);
    if (fromHtmx(request)) return reply.header('hx-redirect', target).code(204).send();
    return reply.redirect(target, 303);
  });

  app.get<{ Params: { name: string } }>('/functions/:name', async (request, reply) => {
    const session = sessionOf(request);
    const action = await platform.actions.get(session.namespace, request.params.name);
    if (!action) throw notFound(`There is no function named "${request.params.name}".`);
    const [versions, rules, recent] = await Promise.all([
      platform.actions.versions(session.namespace, action.name),
      platform.rules.list(session.namespace, { skip: 0, limit: 10_000 }),
      platform.activations.list(session.namespace, { name: action.name, skip: 0, limit: 10 }),
    ]);
    const pointing = rules.filter((rule) => rule.action === action.name);
    return sendHtml(
      reply,
      page(
        { title: action.name, section: 'functions', session, cluster, charts: true },
        html`<div class="heading"><h1>${action.name}</h1>
<form method="post" action="${functionUrl(action.name)}/delete" class="inline" data-confirm="Delete ${action.name} and every version of it?">
<input type="hidden" name="_csrf" value="${session.csrfToken}"><button type="submit" class="danger">Delete</button></form></div>
<dl class="facts">
<div><dt>Kind</dt><dd>${action.sequence ? 'sequence' : action.exec.kind}</dd></div>
<div><dt>Isolation</dt><dd>${action.sequence ? '—' : action.isolation}</dd></div>
<div><dt>Version</dt><dd>${action.version}</dd></div>
<div><dt>Memory</dt><dd>${action.limits.memory} MB</dd></div>
<div><dt>Timeout</dt><dd>${duration(action.limits.timeout)}</dd></div>
<div><dt>Concurrency</dt><dd>${action.limits.concurrency}</dd></div>
<div><dt>Updated</dt><dd>${time(action.updated)}</dd></div>
</dl>

<section aria-labelledby="invoke-h"><h2 id="invoke-h">Invoke</h2>
<form class="invoke" hx-post="${functionUrl(action.name)}/invoke" hx-target="#invoke-result" hx-disabled-elt="find button">
<label for="params">Parameters (a JSON object)</label>
<textarea id="params" name="params" rows="4" spellcheck="false">{}</textarea>
<fieldset class="row"><legend>Wait for the result?</legend>
<label><input type="radio" name="mode" value="sync" checked> Blocking</label>
<label><input type="radio" name="mode" value="async"> Asynchronous</label></fieldset>
<button type="submit">Invoke</button>
</form>
<div id="invoke-result" aria-live="polite"></div>
</section>

<section aria-labelledby="charts-h"><h2 id="charts-h">The last hour</h2>
<div class="charts" data-series="/ui/charts/series?function=${encodeURIComponent(action.name)}"></div>
</section>

<section aria-labelledby="recent-h"><h2 id="recent-h">Recent activations</h2>
${activationTable(recent)}
<p><a href="/ui/activations?function=${encodeURIComponent(action.name)}">All activations of ${action.name}</a></p>
</section>

<section aria-labelledby="versions-h"><h2 id="versions-h">Versions</h2>
<table class="list"><thead><tr><th scope="col">Version</th><th scope="col">Kind</th><th scope="col">Isolation</th><th scope="col">Stored</th></tr></thead>
<tbody>${versions.map((v) => html`<tr><td>${v.version}</td><td>${v.sequence ? 'sequence' : v.exec.kind}</td><td>${v.sequence ? '—' : v.isolation}</td><td>${time(v.updated)}</td></tr>`)}</tbody></table>
</section>

<section aria-labelledby="rules-h"><h2 id="rules-h">Triggers and rules</h2>
${
  pointing.length === 0
    ? html`<p class="muted">No rule starts ${action.name}.</p>`
    : html`<ul>${pointing.map((rule) => html`<li>Rule <strong>${rule.name}</strong> (${rule.status}): trigger <strong>${rule.trigger}</strong></li>`)}</ul>`
}
</section>

<section aria-labelledby="code-h"><h2 id="code-h">Code</h2>
${codeView(action)}
</section>

<section aria-labelledby="edit-h"><h2 id="edit-h">Deploy a new version</h2>
${editor(platform, action, session.csrfToken)}
</section>`,
      ),
    );
  });

  app.post<{ Params: { name: string } }>('/functions/:name/delete', async (request, reply) => {
    const session = sessionOf(request);
    await platform.deleteAction(session.namespace, request.params.name);
    if (fromHtmx(request)) return reply.header('hx-redirect', '/ui/functions').code(204).send();
    return reply.redirect('/ui/functions', 303);
  });

  app.post<{ Params: { name: string } }>('/functions/:name/invoke', async (request, reply) => {
    const session = sessionOf(request);
    const form = formOf(request);
    const params = parseJsonField(form.params ?? '{}', 'The parameters');
    if (params === null || typeof params !== 'object' || Array.isArray(params))
      throw badRequest('The parameters must be a JSON object, such as {"name": "Ada"}.');
    const outcome = await platform.invoke({
      function: { namespace: session.namespace, name: request.params.name },
      params: params as Record<string, unknown>,
      mode: form.mode === 'async' ? 'async' : 'sync',
      door: 'ui',
      caller: { kind: 'namespace', namespace: session.namespace },
    });
    return sendHtml(reply, invokeResult(outcome));
  });
}

function invokeResult(outcome: InvokeOutcome): SafeHtml {
  switch (outcome.kind) {
    case 'completed':
      return activationSummary(outcome.record);
    case 'accepted':
      return html`<p class="note" role="status">${outcome.late ? 'Still running after the blocking wait' : 'Accepted'}: activation
<a href="/ui/activations/${outcome.activationId}">${outcome.activationId}</a>. Its record is stored when it ends.</p>`;
    case 'dry-run':
      return html`<p>The function can be called.</p>`;
    case 'not-found':
      return html`<p class="error" role="alert">${outcome.message}</p>`;
    case 'rejected':
      return html`<p class="error" role="alert">${outcome.message}</p>`;
  }
}

/** A finished activation in brief: badges, times, the result and the logs. */
export function activationSummary(record: ActivationRecord): SafeHtml {
  const init = annotationOf(record, 'initTime');
  const wait = annotationOf(record, 'waitTime');
  return html`<article class="activation" aria-label="Activation ${record.activationId}">
<p class="badges">${statusBadge(record.response.status)} ${startBadge(record)}
<span class="badge">${String(annotationOf(record, 'isolation') ?? '')}</span></p>
<dl class="facts">
<div><dt>Duration</dt><dd>${duration(record.duration)}</dd></div>
<div><dt>Init time</dt><dd>${typeof init === 'number' ? duration(init) : '—'}</dd></div>
<div><dt>Wait time</dt><dd>${typeof wait === 'number' ? duration(wait) : '—'}</dd></div>
<div><dt>Started</dt><dd>${time(record.start)}</dd></div>
<div><dt>Activation</dt><dd><a href="/ui/activations/${record.activationId}">${record.activationId}</a></dd></div>
</dl>
<h3>Result</h3>
<pre class="result" tabindex="0" aria-label="Result">${json(record.response.result)}</pre>
<h3>Logs</h3>
${record.logs.length === 0 ? html`<p class="muted">No logs.</p>` : html`<pre class="logs" tabindex="0" aria-label="Logs">${record.logs.join('\n')}</pre>`}
</article>`;
}

export function activationTable(records: readonly ActivationRecord[], options: { showName?: boolean } = {}): SafeHtml {
  if (records.length === 0) return html`<p class="muted">No activations.</p>`;
  return html`<table class="list activations">
<thead><tr>${options.showName ? html`<th scope="col">Function</th>` : ''}<th scope="col">Activation</th><th scope="col">Status</th><th scope="col">Start</th><th scope="col">Duration</th><th scope="col">Started</th></tr></thead>
<tbody>${records.map((r) => activationRow(r, options))}</tbody></table>`;
}

export function activationRow(r: ActivationRecord, options: { showName?: boolean } = {}): SafeHtml {
  return html`<tr data-id="${r.activationId}">${options.showName ? html`<td><a href="${functionUrl(r.name)}">${r.name}</a></td>` : ''}
<td><a href="/ui/activations/${r.activationId}"><code>${r.activationId.slice(0, 12)}</code></a></td>
<td>${statusBadge(r.response.status)}</td><td>${startBadge(r)}</td><td>${duration(r.duration)}</td><td>${time(r.start)}</td></tr>`;
}

function codeView(action: ActionVersion): SafeHtml {
  if (action.sequence) return html`<p>A sequence of: ${action.sequence.join(' → ')}</p>`;
  if (action.exec.binary)
    return html`<p class="muted">A ${action.exec.kind} package (zip or binary, ${Math.round(action.exec.code.length * 0.75)} bytes): not shown.</p>`;
  return html`<pre class="code" tabindex="0" aria-label="Code of ${action.name}">${action.exec.code}</pre>`;
}

/** The deploy form: a new function, or a new version of `action` with its current settings filled in. */
function editor(platform: Platform, action: ActionVersion | undefined, csrf: string): SafeHtml {
  const kind = action && !action.sequence ? action.exec.kind : 'nodejs:20';
  const isolation = action && !action.sequence ? action.isolation : '';
  const editable = !action || (!action.sequence && !action.exec.binary);
  const available = platform.backendStatuses.filter((s) => s.available).map((s) => s.isolation);
  const userAnnotations = (action?.annotations ?? []).filter((a) => !['exec', 'isolation'].includes(a.key));
  if (!editable) return html`<p class="muted">Deploy packages and sequences with the CLI or the API.</p>`;
  return html`<form class="editor" method="post" action="/ui/functions">
<input type="hidden" name="_csrf" value="${csrf}">
${
  action
    ? html`<input type="hidden" name="name" value="${action.name}">`
    : html`<input type="hidden" name="create" value="true"><label for="fn-name">Name</label><input id="fn-name" name="name" required maxlength="256" spellcheck="false">`
}
<div class="row">
<label>Kind <select name="kind">${KINDS.filter((k) => k !== 'wasm' && k !== 'native').map((k) => html`<option${k === kind ? html` selected` : ''}>${k}</option>`)}</select></label>
<label>Isolation <select name="isolation"><option value="">default</option>${ISOLATIONS.filter((i) => i !== 'wasm').map(
    (i) =>
      html`<option value="${i}"${i === isolation ? html` selected` : ''}${available.includes(i) ? '' : html` disabled`}>${i}${available.includes(i) ? '' : ' (not available)'}</option>`,
  )}</select></label>
<label>Memory (MB) <input name="memory" type="number" min="1" value="${action?.limits.memory ?? 256}"></label>
<label>Timeout (ms) <input name="timeout" type="number" min="1" value="${action?.limits.timeout ?? 60000}"></label>
<label>Concurrency <input name="concurrency" type="number" min="1" value="${action?.limits.concurrency ?? 1}"></label>
</div>
<label for="fn-code">Code</label>
<textarea id="fn-code" name="code" rows="14" spellcheck="false" required class="code">${action && !action.sequence ? action.exec.code : STARTER}</textarea>
<label for="fn-main">Entry point <span class="muted">(optional: the function to call, <code>main</code> by default)</span></label>
<input id="fn-main" name="main" value="${action && !action.sequence ? (action.exec.main ?? '') : ''}" spellcheck="false">
<label for="fn-params">Default parameters (a JSON object)</label>
<textarea id="fn-params" name="parameters" rows="3" spellcheck="false">${json(objectOf(action?.parameters ?? []))}</textarea>
<label for="fn-annotations">Annotations (a JSON object)</label>
<textarea id="fn-annotations" name="annotations" rows="3" spellcheck="false">${json(objectOf(userAnnotations))}</textarea>
<button type="submit">${action ? 'Deploy a new version' : 'Deploy'}</button>
</form>`;
}

function objectOf(entries: readonly KeyValue[]): Record<string, unknown> {
  const object: Record<string, unknown> = {};
  for (const { key, value } of entries)
    Object.defineProperty(object, key, { value, enumerable: true, writable: true, configurable: true });
  return object;
}

function parseJsonField(text: string, what: string): unknown {
  try {
    return JSON.parse(text.trim() === '' ? '{}' : text);
  } catch (error) {
    throw badRequest(`${what} are not JSON: ${(error as Error).message}`);
  }
}

function entriesOf(text: string | undefined, what: string): KeyValue[] {
  const value = parseJsonField(text ?? '{}', what);
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw badRequest(`${what} must be a JSON object.`);
  return Object.entries(value).map(([key, v]) => ({ key, value: v }));
}

/** The editor's fields as the body of an OpenWhisk action PUT: checked by the same schema and rules. */
function actionPutFromForm(form: Record<string, string>) {
  const number = (field: string) => {
    const text = form[field]?.trim();
    if (!text) return undefined;
    const value = Number(text);
    if (!Number.isFinite(value)) throw badRequest(`${field} must be a number.`);
    return value;
  };
  const annotations = entriesOf(form.annotations, 'The annotations').filter((a) => a.key !== 'isolation');
  if (form.isolation) annotations.push({ key: 'isolation', value: form.isolation });
  const limits = { memory: number('memory'), timeout: number('timeout'), concurrency: number('concurrency') };
  return parseOrThrow(
    ActionPutSchema,
    {
      exec: { kind: form.kind ?? 'nodejs:20', code: form.code ?? '', ...(form.main?.trim() ? { main: form.main.trim() } : {}) },
      limits: Object.fromEntries(Object.entries(limits).filter(([, v]) => v !== undefined)),
      parameters: entriesOf(form.parameters, 'The default parameters'),
      annotations,
    },
    'function',
  );
}
