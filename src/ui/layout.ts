import type { ActivationRecord, KeyValue } from '../core/types.js';
import type { UiSession } from '../platform/ui-sessions.js';
import { assetUrl } from './assets.js';
import { html, type SafeHtml } from './html.js';

export type Section = 'functions' | 'activations' | 'instances' | 'backends' | 'benchmarks' | 'cluster';

const SECTIONS: readonly [Section, string][] = [
  ['functions', 'Functions'],
  ['activations', 'Activations'],
  ['instances', 'Instances'],
  ['backends', 'Backends'],
  ['benchmarks', 'Benchmarks'],
];

export interface PageOptions {
  title: string;
  section?: Section;
  session?: UiSession;
  /** The cluster's section is shown only in a cluster. */
  cluster?: boolean;
  /** Pages with charts load uPlot. */
  charts?: boolean;
}

/** A whole page: the head, the navigation (when signed in), and `body` as the main content. */
export function page(options: PageOptions, body: SafeHtml): SafeHtml {
  const { session } = options;
  const sections = options.cluster ? [...SECTIONS, ['cluster', 'Cluster'] as [Section, string]] : SECTIONS;
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${options.title} · Isola</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${assetUrl('ui.css')}">
${options.charts ? html`<link rel="stylesheet" href="${assetUrl('uPlot.min.css')}"><script src="${assetUrl('uPlot.iife.min.js')}" defer></script>` : ''}
<script src="${assetUrl('htmx.min.js')}" defer></script>
<script src="${assetUrl('ui.js')}" defer></script>
</head>
<body${session ? html` data-csrf="${session.csrfToken}"` : ''}>
<a class="skip" href="#main">Skip to the content</a>
<header class="top">
<a class="brand" href="/ui/">Isola</a>
${
  session
    ? html`<nav aria-label="Sections"><ul>${sections.map(
        ([id, label]) =>
          html`<li><a href="/ui/${id}"${options.section === id ? html` aria-current="page"` : ''}>${label}</a></li>`,
      )}</ul></nav>
<form class="signout" method="post" action="/ui/signout"><span class="who" title="Signed in to this namespace">${session.namespace}</span><input type="hidden" name="_csrf" value="${session.csrfToken}"><button type="submit">Sign out</button></form>`
    : ''
}
</header>
<main id="main" tabindex="-1">
${body}
</main>
</body>
</html>`;
}

/** A time the browser shows in its own time zone (ui.js); UTC until then. */
export function time(ms: number | undefined): SafeHtml {
  if (ms === undefined || !Number.isFinite(ms) || ms <= 0) return html`<span class="muted">—</span>`;
  const iso = new Date(ms).toISOString();
  return html`<time datetime="${iso}">${iso.replace('T', ' ').slice(0, 19)} UTC</time>`;
}

export function duration(ms: number | undefined): string {
  if (ms === undefined || !Number.isFinite(ms)) return '—';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  return `${(ms / 60_000).toFixed(1)} min`;
}

export function annotationOf(record: Pick<ActivationRecord, 'annotations'>, key: string): unknown {
  return (record.annotations as KeyValue[]).find((a) => a.key === key)?.value;
}

/** How the run found its instance: cold, restored from a snapshot, or warm. */
export function startKind(record: Pick<ActivationRecord, 'annotations'>): 'cold' | 'restored' | 'warm' | undefined {
  const cold = annotationOf(record, 'coldStart');
  if (cold === undefined) return undefined;
  if (annotationOf(record, 'restoredFromSnapshot') === true) return 'restored';
  return cold === true ? 'cold' : 'warm';
}

export function startBadge(record: Pick<ActivationRecord, 'annotations'>): SafeHtml {
  const kind = startKind(record);
  return kind ? html`<span class="badge start-${kind}">${kind}</span>` : html``;
}

export function statusBadge(status: string): SafeHtml {
  const tone = status === 'success' ? 'ok' : status === 'application error' ? 'warn' : 'bad';
  return html`<span class="badge status-${tone}">${status}</span>`;
}

/** Pretty JSON for a `<pre>`: the value as it was stored. */
export function json(value: unknown): string {
  try {
    return JSON.stringify(value, null, 2) ?? 'undefined';
  } catch {
    return String(value);
  }
}
