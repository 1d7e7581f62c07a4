// Shared by the AssemblyScript workloads: reading numeric parameters from the JSON Isola passes,
// returning a result, and the seeded generator every workload (JavaScript and WebAssembly) uses.

// The raw JSON text of a top-level field's value, without a JSON library: a small scanner that
// skips strings (escapes included) and nested values, so that a key inside them is never taken
// for a parameter. Null when the field is absent.
export function topLevelField(json: string, field: string): string | null {
  let i = skipSpace(json, 0);
  if (i >= json.length || json.charCodeAt(i) != 123) return null; // {
  i++;
  while (true) {
    i = skipSpace(json, i);
    if (i >= json.length || json.charCodeAt(i) != 34) return null; // "
    const keyEnd = skipString(json, i);
    if (keyEnd < 0) return null;
    const key = json.slice(i + 1, keyEnd - 1);
    i = skipSpace(json, keyEnd);
    if (i >= json.length || json.charCodeAt(i) != 58) return null; // :
    const valueStart = skipSpace(json, i + 1);
    const valueEnd = skipValue(json, valueStart);
    if (valueEnd < 0) return null;
    if (key == field) return json.slice(valueStart, valueEnd);
    i = skipSpace(json, valueEnd);
    if (i >= json.length || json.charCodeAt(i) != 44) return null; // ,
    i++;
  }
  return null;
}

function skipSpace(json: string, from: i32): i32 {
  let i = from;
  while (i < json.length) {
    const c = json.charCodeAt(i);
    if (c != 32 && c != 9 && c != 10 && c != 13) break;
    i++;
  }
  return i;
}

/** The index just after the string that starts at `from`, or -1. */
function skipString(json: string, from: i32): i32 {
  let i = from + 1;
  while (i < json.length) {
    const c = json.charCodeAt(i);
    if (c == 92) i += 2; // backslash
    else if (c == 34) return i + 1;
    else i++;
  }
  return -1;
}

/** The index just after the value that starts at `from`, or -1. */
function skipValue(json: string, from: i32): i32 {
  if (from >= json.length) return -1;
  const first = json.charCodeAt(from);
  if (first == 34) return skipString(json, from);
  let i = from;
  if (first == 123 || first == 91) {
    let depth = 0;
    while (i < json.length) {
      const c = json.charCodeAt(i);
      if (c == 34) {
        i = skipString(json, i);
        if (i < 0) return -1;
        continue;
      }
      if (c == 123 || c == 91) depth++;
      else if (c == 125 || c == 93) {
        depth--;
        if (depth == 0) return i + 1;
      }
      i++;
    }
    return -1;
  }
  while (i < json.length) {
    const c = json.charCodeAt(i);
    if (c == 44 || c == 125 || c == 93 || c == 32 || c == 9 || c == 10 || c == 13) break;
    i++;
  }
  return i;
}

/** Why the parameters cannot be used; empty when they can. Each invocation gets a fresh instance. */
export let paramError = '';

/**
 * A whole-number parameter from `min` to `max`; `fallback` when absent. Anything else (a string,
 * a fraction, out of range) records why in `paramError`, which the handler returns as its error.
 */
export function integerField(json: string, field: string, fallback: f64, min: f64, max: f64): f64 {
  const raw = topLevelField(json, field);
  if (raw === null) return fallback;
  let digits = raw.length > 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (i == 0 && c == 45))) digits = false;
  }
  const value = digits ? parseFloat(raw) : NaN;
  if (!digits || value < min || value > max) {
    if (paramError.length == 0) {
      const shown = raw.length > 40 ? raw.slice(0, 40) : raw;
      paramError = `${field} must be a whole number from ${<i64>min} to ${<i64>max}; got ${shown}.`;
    }
    return fallback;
  }
  return value;
}

/** Text made safe inside a JSON string. */
export function jsonEscape(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c == 34) out += '\\"';
    else if (c == 92) out += '\\\\';
    else if (c < 32) out += '\\u00' + (c < 16 ? '0' : '') + c.toString(16);
    else out += String.fromCharCode(c);
  }
  return out;
}

/** The error result for `paramError`: an application error with the reason. */
export function paramErrorResult(): u64 {
  return result(`{"error":"${jsonEscape(paramError)}"}`);
}

/** The reactor ABI's return value: (pointer << 32) | length of the UTF-8 result. */
export function result(json: string): u64 {
  const bytes = String.UTF8.encode(json);
  return (<u64>changetype<usize>(bytes) << 32) | <u64>bytes.byteLength;
}

/** A linear congruential generator, the same as the JavaScript workloads' prng(seed). */
export class Prng {
  state: u32;
  constructor(seed: u32) {
    this.state = seed == 0 ? 1 : seed;
  }
  next(): f64 {
    this.state = this.state * 1664525 + 1013904223;
    return <f64>this.state / 4294967296.0;
  }
}

export function isola_alloc(size: i32): usize {
  return heap.alloc(<usize>size);
}
