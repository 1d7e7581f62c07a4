// Shared by the AssemblyScript workloads: reading numeric parameters from the JSON Isola passes,
// returning a result, and the seeded generator every workload (JavaScript and WebAssembly) uses.

/** The numeric value of a top-level field, without a JSON library; `fallback` if absent. */
export function numberField(json: string, field: string, fallback: f64): f64 {
  const key = `"${field}"`;
  const at = json.indexOf(key);
  if (at < 0) return fallback;
  let i = json.indexOf(':', at + key.length) + 1;
  while (i < json.length && json.charCodeAt(i) == 32) i++;
  let end = i;
  while (end < json.length) {
    const c = json.charCodeAt(end);
    if (!((c >= 48 && c <= 57) || c == 45 || c == 46 || c == 101 || c == 69 || c == 43)) break;
    end++;
  }
  return end > i ? parseFloat(json.slice(i, end)) : fallback;
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
