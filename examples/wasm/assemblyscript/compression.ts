// The compression workload in AssemblyScript: the same generated text and the same LZ77 with a
// hash of 3-byte prefixes as the JavaScript version, so the two return the same result.
//   build: npx asc compression.ts -o compression.wasm --runtime stub -O3 --noAssert
import { integerField, Prng, paramError, paramErrorResult, result } from './params';

export { isola_alloc } from './params';

const WORDS: string[] = ['function', 'serverless', 'isolation', 'container', 'snapshot', 'latency', 'memory', 'the', 'a', 'of'];

export function isola_handle(pointer: usize, length: i32): u64 {
  const params = String.UTF8.decodeUnsafe(pointer, <usize>length);
  const random = new Prng(<u32>integerField(params, 'seed', 1, 0, 4294967295));
  const wanted = <i32>integerField(params, 'bytes', 65536, 1, 16777216);
  if (paramError.length > 0) return paramErrorResult();
  // Words are appended whole, so the text may run past `wanted` by one word.
  const input = new Uint8Array(wanted + 16);
  let size = 0;
  while (size < wanted) {
    const word = WORDS[<i32>Math.floor(random.next() * <f64>WORDS.length)];
    for (let c = 0; c < word.length; c++) input[size++] = <u8>word.charCodeAt(c);
    input[size++] = random.next() < 0.1 ? 10 : 32;
  }
  const table = new Int32Array(1 << 15).fill(-1);
  let out = 0;
  let i = 0;
  while (i < size) {
    const h = i + 2 < size ? ((<i32>input[i] << 10) ^ (<i32>input[i + 1] << 5) ^ <i32>input[i + 2]) & 32767 : -1;
    const candidate = h >= 0 ? table[h] : -1;
    if (h >= 0) table[h] = i;
    let match = 0;
    if (candidate >= 0 && i - candidate < 65535) {
      while (match < 258 && i + match < size && input[candidate + match] == input[i + match]) match++;
    }
    if (match >= 4) {
      out += 4;
      i += match;
    } else {
      out++;
      i++;
    }
  }
  const ratio = Math.round((<f64>out / <f64>size) * 1000) / 1000;
  return result(`{"input":${size},"output":${out},"ratio":${ratio}}`);
}
