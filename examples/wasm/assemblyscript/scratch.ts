// A mixed CPU and I/O function in AssemblyScript, after the workload of the WebAssembly study the
// wasm backend answers: it generates `bytes` bytes from the seeded generator and hashes them
// `rounds` times (CPU), then writes them to a file in its scratch directory /tmp in `chunk`-byte
// writes and reads the file back the same way (I/O through WASI), checking what it read.
// The JavaScript twin (packages/bench/src/workloads.ts, SCRATCH_JS) returns the same result.
//   build: npx asc scratch.ts -o scratch.wasm --runtime stub -O3 --noAssert
// `{"seed":7,"rounds":20,"bytes":65536,"chunk":4096}` gives `{"bytes":65536,"hash":...,"readBack":true}`;
// a WASI error gives `{"error":"<call> failed with errno N"}` (51 is ENOSPC: the scratch space is full).
import { integerField, Prng, paramError, paramErrorResult, result } from './params';

export { isola_alloc } from './params';

@external('wasi_snapshot_preview1', 'path_open')
declare function path_open(
  dirFd: u32,
  dirFlags: u32,
  path: usize,
  pathLength: usize,
  openFlags: u16,
  rightsBase: u64,
  rightsInheriting: u64,
  fdFlags: u16,
  openedFd: usize,
): u16;
@external('wasi_snapshot_preview1', 'fd_write')
declare function fd_write(fd: u32, iovs: usize, iovsLength: u32, written: usize): u16;
@external('wasi_snapshot_preview1', 'fd_read')
declare function fd_read(fd: u32, iovs: usize, iovsLength: u32, read: usize): u16;
@external('wasi_snapshot_preview1', 'fd_close')
declare function fd_close(fd: u32): u16;

// The first preopened directory: Isola's scratch directory /tmp.
const SCRATCH_FD: u32 = 3;
const OFLAGS_CREAT: u16 = 1;
const OFLAGS_TRUNC: u16 = 8;
const ALL_RIGHTS: u64 = 0x1fffffff;

let failure = '';

function open(name: string, flags: u16): i32 {
  const path = String.UTF8.encode(name);
  const fd = heap.alloc(4);
  const errno = path_open(SCRATCH_FD, 0, changetype<usize>(path), <usize>path.byteLength, flags, ALL_RIGHTS, ALL_RIGHTS, 0, fd);
  if (errno != 0) {
    failure = `path_open failed with errno ${errno}`;
    return -1;
  }
  return load<u32>(fd);
}

/** FNV-1a over the bytes, continuing from `hash`. */
function fnv(data: Uint8Array, hash: u32): u32 {
  let h = hash;
  for (let i = 0; i < data.length; i++) h = (h ^ data[i]) * 16777619;
  return h;
}

export function isola_handle(pointer: usize, length: i32): u64 {
  const params = String.UTF8.decodeUnsafe(pointer, <usize>length);
  const random = new Prng(<u32>integerField(params, 'seed', 1, 0, 4294967295));
  const rounds = <i32>integerField(params, 'rounds', 20, 0, 100000);
  const bytes = <i32>integerField(params, 'bytes', 65536, 1, 16777216);
  const chunk = <i32>integerField(params, 'chunk', 4096, 1, 1048576);
  if (paramError.length > 0) return paramErrorResult();

  const data = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) data[i] = <u8>(random.next() * 256.0);
  let hash: u32 = 2166136261;
  for (let r = 0; r < rounds; r++) hash = fnv(data, hash);

  const iov = heap.alloc(12);
  const out = open('data.bin', OFLAGS_CREAT | OFLAGS_TRUNC);
  if (out < 0) return result(`{"error":"${failure}"}`);
  for (let offset = 0; offset < bytes; offset += chunk) {
    store<u32>(iov, changetype<usize>(data.buffer) + <usize>offset);
    store<u32>(iov, <u32>min(chunk, bytes - offset), 4);
    const errno = fd_write(<u32>out, iov, 1, iov + 8);
    if (errno != 0) return result(`{"error":"fd_write failed with errno ${errno}"}`);
  }
  fd_close(<u32>out);

  const back = new Uint8Array(bytes);
  const input = open('data.bin', 0);
  if (input < 0) return result(`{"error":"${failure}"}`);
  let read = 0;
  while (read < bytes) {
    store<u32>(iov, changetype<usize>(back.buffer) + <usize>read);
    store<u32>(iov, <u32>min(chunk, bytes - read), 4);
    const errno = fd_read(<u32>input, iov, 1, iov + 8);
    if (errno != 0) return result(`{"error":"fd_read failed with errno ${errno}"}`);
    const got = load<u32>(iov + 8);
    if (got == 0) break;
    read += <i32>got;
  }
  fd_close(<u32>input);
  const readBack = read == bytes && fnv(back, 2166136261) == fnv(data, 2166136261);
  return result(`{"bytes":${bytes},"hash":${hash},"readBack":${readBack ? 'true' : 'false'}}`);
}
