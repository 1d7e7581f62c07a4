import { badRequest, IsolaError } from '../core/errors.js';
import { MAX_JSON_DEPTH } from '../core/limits.js';

/** Parses a JSON body; malformed JSON, nesting beyond MAX_JSON_DEPTH and `__proto__` keys are the caller's mistake (400). */
export function parseJson(text: string): unknown {
  // Checked before parsing: the reviver below recurses as deeply as the document does.
  const depth = jsonDepthOver(text, MAX_JSON_DEPTH);
  if (depth !== undefined) {
    throw badRequest(`The request content is nested more than ${MAX_JSON_DEPTH} levels deep (at offset ${depth}).`);
  }
  try {
    // A reviver makes parsing several times slower: only a text that could spell the key (plainly
    // or with \u escapes) needs one.
    if (!text.includes('__proto__') && !text.includes('\\u')) return JSON.parse(text);
    return JSON.parse(text, (key, value: unknown) => {
      // Merged into other objects, a `__proto__` key could replace a prototype.
      if (key === '__proto__') throw badRequest('The key "__proto__" is not allowed in JSON bodies.');
      return value;
    });
  } catch (error) {
    if (error instanceof IsolaError) throw error;
    throw badRequest(`The request content was malformed: ${(error as Error).message}`);
  }
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_BRACE = 0x7b;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACE = 0x7d;
const CLOSE_BRACKET = 0x5d;

/**
 * The offset at which a JSON text first nests deeper than `max` arrays and objects, or undefined.
 * A scan that jumps over strings (an action's code is one long string); it does not validate
 * (JSON.parse does), it only counts.
 */
export function jsonDepthOver(text: string, max: number): number | undefined {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) i = closingQuote(text, i);
    else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > max) return i;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) depth--;
  }
  return undefined;
}

/** The index of the quote that ends the string opened at `open` (the text's end when there is none). */
function closingQuote(text: string, open: number): number {
  let from = open + 1;
  for (;;) {
    const quote = text.indexOf('"', from);
    if (quote < 0) return text.length;
    let backslashes = 0;
    while (text.charCodeAt(quote - 1 - backslashes) === BACKSLASH) backslashes++;
    if (backslashes % 2 === 0) return quote;
    from = quote + 1;
  }
}
