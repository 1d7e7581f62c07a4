// A reactor-ABI function in AssemblyScript: Isola writes the parameters as JSON into memory from
// isola_alloc, calls isola_handle(pointer, length) and reads the JSON result it points to.
//   build: npx asc greet.ts -o greet.wasm --runtime stub -O3 --noAssert
// `{"name": "Ada"}` gives `{"greeting":"Hello Ada",...}`; without a name it greets the world; a
// name that is not a string is refused with an error result.

import { jsonEscape, result, topLevelField } from './params';

@external('wasi_snapshot_preview1', 'fd_write')
declare function fd_write(fd: u32, iovs: usize, iovsLength: u32, written: usize): u16;

/** Writes a line to stderr, which Isola records in the activation's logs. */
function log(line: string): void {
  const bytes = String.UTF8.encode(`${line}\n`);
  const iov = heap.alloc(12);
  store<u32>(iov, changetype<usize>(bytes));
  store<u32>(iov, bytes.byteLength, 4);
  fd_write(2, iov, 1, iov + 8);
}

export { isola_alloc } from './params';

export function isola_handle(pointer: usize, length: i32): u64 {
  const input = String.UTF8.decodeUnsafe(pointer, <usize>length);
  const raw = topLevelField(input, 'name');
  // `name` is optional; when given it must be a string. Its text stays as JSON escaped it, which
  // is what goes back inside the result's string.
  if (raw !== null && (raw.length < 2 || raw.charCodeAt(0) != 34)) {
    const shown = raw.length > 40 ? raw.slice(0, 40) : raw;
    return result(`{"error":"name must be a string; got ${jsonEscape(shown)}."}`);
  }
  const name = raw === null || raw.length == 2 ? 'world' : raw.slice(1, raw.length - 1);
  log(`greeting ${name}`);
  return result(`{"greeting":"Hello ${name}","language":"AssemblyScript"}`);
}
