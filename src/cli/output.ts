import Table from 'cli-table3';

export interface OutputOptions {
  json?: boolean;
}

/** Narrowest a column is squeezed to when a table does not fit. */
const MIN_COLUMN = 4;
const GAP = 2;

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** The terminal's width; COLUMNS or 80 when the output is not a terminal (a pipe, a file). */
export function terminalWidth(): number {
  const fromEnv = Number(process.env.COLUMNS);
  return process.stdout.isTTY && process.stdout.columns
    ? process.stdout.columns
    : Number.isInteger(fromEnv) && fromEnv > 0
      ? fromEnv
      : 80;
}

/**
 * Column widths that fit `width`: columns narrower than a fair share keep their width, the wider
 * ones share what is left (and wrap).
 */
export function fitColumns(natural: readonly number[], width: number): number[] {
  const available = Math.max(width - GAP * (natural.length - 1), natural.length * MIN_COLUMN);
  if (natural.reduce((a, b) => a + b, 0) <= available) return [...natural];
  const widths = [...natural];
  let open = natural.map((_, i) => i);
  let left = available;
  for (;;) {
    const share = Math.floor(left / open.length);
    const fitting = open.filter((i) => (natural[i] as number) <= share);
    if (fitting.length === 0) {
      open.forEach((i, k) => {
        widths[i] = Math.max(MIN_COLUMN, share + (k < left - share * open.length ? 1 : 0));
      });
      return widths;
    }
    for (const i of fitting) left -= natural[i] as number;
    open = open.filter((i) => !fitting.includes(i));
    if (open.length === 0) return widths;
  }
}

/** Wraps text at spaces to lines of at most `width` characters; longer words are cut. */
export function wrapText(text: string, width: number): string {
  const out: string[] = [];
  for (const paragraph of text.split('\n')) {
    let line = '';
    for (const word of paragraph.split(' ')) {
      const candidate = line ? `${line} ${word}` : word;
      if (candidate.length <= width) {
        line = candidate;
        continue;
      }
      if (line) out.push(line);
      let rest = word;
      while (rest.length > width) {
        out.push(rest.slice(0, width));
        rest = rest.slice(width);
      }
      line = rest;
    }
    out.push(line);
  }
  return out.join('\n');
}

/** Prose, wrapped to the terminal's width. */
export function printWrapped(text: string, width = terminalWidth()): void {
  process.stdout.write(`${wrapText(text, width)}\n`);
}

/** A plain table, wrapped to the terminal's width. */
export function printTable(head: string[], rows: (string | number | boolean)[][], width = terminalWidth()): void {
  const cells = rows.map((row) => row.map(String));
  const natural = head.map((title, column) =>
    Math.max(title.length, ...cells.flatMap((row) => (row[column] ?? '').split('\n').map((line) => line.length))),
  );
  const widths = fitColumns(natural, width);
  const table = new Table({
    head: head.map((title, column) => wrapText(title, widths[column] as number)),
    colWidths: widths,
    style: { head: [], border: [], 'padding-left': 0, 'padding-right': 0 },
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: ' '.repeat(GAP),
    },
  });
  for (const row of cells) table.push(row.map((cell, column) => wrapText(cell, widths[column] as number)));
  // Trailing spaces pad the last column; they only make lines wrap in narrow terminals.
  process.stdout.write(`${table.toString().replace(/ +$/gm, '')}\n`);
}

/** A full page may not be the last: say so on stderr, with the command for the next one. */
export function notePage(what: 'action' | 'activation', shown: number, page: { limit: number; skip: number }): void {
  if (shown < page.limit) return;
  process.stderr.write(
    `note: showing ${shown} ${what}s (--limit ${page.limit}${page.skip ? `, --skip ${page.skip}` : ''}); there may be more: ` +
      `add --skip ${page.skip + shown} for the next page, or raise --limit (up to 200).\n`,
  );
}

export function formatTime(ms: number): string {
  return new Date(ms)
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, '');
}
