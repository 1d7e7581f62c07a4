// A reactor-ABI function in AssemblyScript: Isola writes the parameters as JSON into memory from
// isola_alloc, calls isola_handle(pointer, length) and reads the JSON result it points to.
//   build: npx asc greet.ts -o greet.wasm --runtime stub -O3 --noAssert

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

/** The string value of a top-level field, without a JSON library: enough for an example. */
function stringField(json: string, field: string): string {
  const key = `"${field}"`;
  const at = json.indexOf(key);
  if (at < 0) return '';
  const colon = json.indexOf(':', at + key.length);
  const open = json.indexOf('"', colon + 1);
  const close = json.indexOf('"', open + 1);
  return open < 0 || close < 0 ? '' : json.slice(open + 1, close);
}

export function isola_alloc(size: i32): usize {
  return heap.alloc(<usize>size);
}

export function isola_handle(pointer: usize, length: i32): u64 {
  const input = String.UTF8.decodeUnsafe(pointer, <usize>length);
  const name = stringField(input, 'name');
  log(`greeting ${name.length > 0 ? name : 'the world'}`);
  const result = `{"greeting":"Hello ${name.length > 0 ? name : 'world'}","language":"AssemblyScript"}`;
  const bytes = String.UTF8.encode(result);
  return (<u64>changetype<usize>(bytes) << 32) | <u64>bytes.byteLength;
}
