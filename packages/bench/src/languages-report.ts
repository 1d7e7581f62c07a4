/** The languages dimension's part of the report: the same tables in summary.md and report.html. */
import type { Percentiles } from './harness.js';
import type { LanguageRow, LanguagesResults } from './languages-dimension.js';
import { fmt } from './report.js';

export interface Table {
  title: string;
  note?: string;
  head: string[];
  rows: string[][];
}

const p = (x: Percentiles | null | undefined) => (x ? `${fmt(x.p50)} / ${fmt(x.p99)}` : '–');
const met = (value: boolean | null) => (value === null ? 'not measured' : value ? 'yes' : '**no**');
const agrees = (matches: boolean | undefined) => (matches === undefined ? '–' : matches ? 'same' : '**differs**');

function pooled(r: LanguageRow): string {
  const bare = r.bareInTurns ? `; ${r.bareInTurns.name} in turns: ${p(r.bareInTurns.startMs)}` : '';
  if (r.pooledStartMs) return `${p(r.pooledStartMs)} (${r.pooledHits} from the pool${bare})`;
  return r.pooledHits ?? '–';
}

/** The tables, in the order the report shows them. */
export function languageTables(l: LanguagesResults): Table[] {
  const tables: Table[] = [];
  tables.push({
    title: 'Targets',
    note: 'Checked against the figures of this run (ratios of figures taken in the same run).',
    head: ['target', 'goal', 'measured', 'met', 'from'],
    rows: l.targets.map((t) => [
      t.name,
      t.target,
      t.measured === null ? '–' : t.target.includes('%') ? `${fmt(t.measured, 1)}%` : `${fmt(t.measured, 2)}x`,
      met(t.met),
      t.basis,
    ]),
  });
  tables.push({
    title: 'Fastest start per language',
    note: "Each kind's lowest hello cold start p50 on any backend (with or without a blank sandbox of the kind ready), against a JavaScript function's on the isolate backend.",
    head: ['kind', 'fastest', 'start p50 (ms)', 'vs a JavaScript isolate', 'from'],
    rows: l.headline.map((h) => [
      h.kind,
      h.fastest ?? '–',
      fmt(h.startMs),
      h.vsIsolate === null ? '–' : `${fmt(h.vsIsolate, 1)}x`,
      h.basis,
    ]),
  });
  tables.push({
    title: 'Results',
    note: "Latencies in ms as p50 / p99, through the API. Cold start: a deployed function with no instance, no blank sandbox made ahead; pool ready: one blank sandbox of the kind made ahead (ISOLA_PREWARM `<backend>:<kind>:1`); PSS: host memory per idle instance; result: the same as the JavaScript version's.",
    head: ['kind', 'backend', 'workload', 'cold start', 'cold init', 'cold, pool ready', 'warm', 'PSS MB', 'result'],
    rows: l.rows.map((r) =>
      r.skipped
        ? [r.kind, r.backend, r.workload, `skipped: ${r.skipped}`, '', '', '', '', '']
        : [
            r.kind,
            r.backend,
            `${r.workload}${r.error ? ` (failed: ${r.error.slice(0, 200)})` : ''}`,
            p(r.coldStartMs),
            p(r.coldInitMs),
            r.workload === 'hello' ? pooled(r) : '–',
            p(r.warmMs),
            fmt(r.pssMb, 1),
            agrees(r.matchesReference),
          ],
    ),
  });
  if (l.snapshots.length > 0) {
    tables.push({
      title: 'Function snapshots',
      note: 'A function annotated `snapshot: true`: cold starts restored from the snapshot the server took after its first initialisation, against the cold start that boots the runtime in a fresh clone (the Results row).',
      head: ['kind', 'backend', 'booting the runtime (p50 ms)', 'restored from its snapshot', 'faster'],
      rows: l.snapshots.map((s) => [
        s.kind,
        s.backend,
        fmt(s.bootMs),
        s.error ? `failed: ${s.error.slice(0, 200)}` : `${p(s.restoreMs)} (${s.restored} restored)`,
        s.restoreMs && s.bootMs ? `${fmt(s.bootMs / s.restoreMs.p50, 1)}x` : '–',
      ]),
    });
  }
  if (l.sideBySide.length > 0) {
    tables.push({
      title: 'Container cold start beside the bare runtime CLI',
      note: 'Hello cold starts through the API and bare `<runtime> run` of the same image with the same agent and function, taken in turns with the same pause before each.',
      head: ['kind', 'backend', 'Isola', 'bare run', 'overhead', 'bundle'],
      rows: l.sideBySide.map((s) => [
        s.kind,
        s.backend,
        s.error ? `failed: ${s.error.slice(0, 200)}` : p(s.apiMs),
        p(s.bareMs),
        s.apiMs && s.bareMs ? `${fmt((s.apiMs.p50 / s.bareMs.p50 - 1) * 100, 1)}%` : '–',
        s.package,
      ]),
    });
  }
  tables.push({
    title: 'Bare runtimes',
    note: 'The same function started with no platform: the runtime spawned with a FIFO as fd 3, timed to its ack (the function loaded) and to its first result.',
    head: ['peer', 'workload', 'start', 'ack', 'result', 'what'],
    rows: l.peers.map((x) => [
      x.name,
      x.workload,
      p(x.startMs),
      p(x.ackMs),
      agrees(x.matchesReference),
      x.error ? `failed: ${x.error.slice(0, 300)}` : x.description,
    ]),
  });
  const unsupported = l.backends.flatMap((b) =>
    b.available
      ? Object.entries(b.unsupported).map(([kind, reason]) => [b.id, kind, reason ?? ''])
      : [[b.id, 'all', `not available: ${b.detail}`]],
  );
  if (unsupported.length > 0) tables.push({ title: 'Not measured here', head: ['backend', 'kind', 'why'], rows: unsupported });
  return tables;
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

export function languagesMarkdown(l: LanguagesResults): string[] {
  const lines = [
    '## Languages',
    '',
    `Kinds: ${l.kinds.join(', ')}; ${l.settings.cold} cold starts, ${l.settings.warm} warm calls and ${l.settings.pooled} starts with a pool per kind and backend (fewer on gVisor and microVMs), ${l.settings.peerStarts} starts per bare runtime. Took ${l.durationSeconds} s (${l.backends
      .filter((b) => b.seconds !== undefined)
      .map((b) => `${b.id} ${b.seconds} s`)
      .join(', ')}).`,
  ];
  for (const table of languageTables(l)) {
    lines.push('', `### ${table.title}`, '');
    if (table.note) lines.push(table.note, '');
    lines.push(`| ${table.head.join(' | ')} |`, `| ${table.head.map(() => '---').join(' | ')} |`);
    for (const row of table.rows) lines.push(`| ${row.map(cell).join(' | ')} |`);
  }
  if (l.warnings.length > 0) lines.push('', '### Warnings', '', ...l.warnings.map((w) => `- ${w}`));
  return lines;
}

export function languagesHtml(l: LanguagesResults, escapeHtml: (text: string) => string): string {
  const bold = (text: string) => escapeHtml(text).replace(/\*\*(.+?)\*\*/g, '<span class="bad">$1</span>');
  return [
    '<h2>Languages</h2>',
    ...languageTables(l).map(
      (t) =>
        `<h3>${escapeHtml(t.title)}</h3>${t.note ? `<p>${escapeHtml(t.note)}</p>` : ''}<table><thead><tr>${t.head
          .map((h) => `<th>${escapeHtml(h)}</th>`)
          .join(
            '',
          )}</tr></thead><tbody>${t.rows.map((r) => `<tr>${r.map((c) => `<td>${bold(c)}</td>`).join('')}</tr>`).join('')}</tbody></table>`,
    ),
    ...(l.warnings.length > 0 ? [`<ul>${l.warnings.map((w) => `<li class="bad">${escapeHtml(w)}</li>`).join('')}</ul>`] : []),
  ].join('\n');
}
