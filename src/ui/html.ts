import escapeHtml from 'escape-html';

/** HTML that is already safe to put in a page: markup built by `html`, never text from outside. */
export class SafeHtml {
  constructor(readonly value: string) {}
  toString(): string {
    return this.value;
  }
}

type Part = SafeHtml | string | number | boolean | null | undefined | readonly Part[];

function render(part: Part): string {
  if (part === null || part === undefined || part === false) return '';
  if (part instanceof SafeHtml) return part.value;
  if (Array.isArray(part)) return part.map(render).join('');
  return escapeHtml(String(part));
}

/**
 * Markup with its interpolations escaped: `html\`<td>${name}</td>\``. Text from users (names,
 * code, logs, results) can never become markup; nested `html` fragments and arrays of them are
 * kept as they are; null, undefined and false render as nothing.
 */
export function html(strings: TemplateStringsArray, ...parts: Part[]): SafeHtml {
  let out = strings[0] ?? '';
  for (let i = 0; i < parts.length; i++) out += render(parts[i] as Part) + (strings[i + 1] ?? '');
  return new SafeHtml(out);
}

/** Markup the code itself wrote (a constant), to be kept as it is. */
export function trusted(markup: string): SafeHtml {
  return new SafeHtml(markup);
}
