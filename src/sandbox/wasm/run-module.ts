/**
 * One wasm invocation: a fresh instance of the compiled module on a zeroed linear memory (a kept
 * one, see memory-pool.ts), WASI preview 1 with stdin/stdout/stderr in memory, an empty in-memory
 * scratch directory at /tmp, no other files and no sockets. Used by the worker threads and by the
 * server thread's fast path alike, so it has no effect outside the run: it can be abandoned at any
 * point and made again (an abandoned run's memory is never kept).
 */
import {
  ConsoleStdout,
  Directory,
  File,
  type Inode,
  OpenFile,
  PreopenDirectory,
  WASI,
  WASIProcExit,
} from '@bjorn3/browser_wasi_shim';
import { PAGE_BYTES, REFUEL_IMPORT } from './binary.js';
import { MemoryPool } from './memory-pool.js';
import { REACTOR_ALLOC, REACTOR_HANDLE, type RunMessage, type WorkerOutcome } from './messages.js';
import { ScratchOpenFile } from './scratch-file.js';

const decoder = new TextDecoder('utf-8');
/** Files and directories a run may create in its scratch directory. */
const SCRATCH_ENTRIES = 1024;
const ERRNO_NOSPC = 51;
const OFLAGS_CREAT = 1;

/** This thread's kept memories: each worker thread and the server's thread (the fast path) has its own. */
export const memoryPool = new MemoryPool();

export type RunLog = (stream: 'stdout' | 'stderr', text: string) => void;

class TrapError extends Error {}

/** AssemblyScript strings: UTF-16, byte length in the 4 bytes before the pointer. */
function readAssemblyScriptString(memory: WebAssembly.Memory | undefined, pointer: number): string {
  if (!memory || pointer === 0) return '';
  const view = new DataView(memory.buffer);
  const length = view.getUint32(pointer - 4, true);
  return new TextDecoder('utf-16le').decode(new Uint8Array(memory.buffer, pointer, length));
}

/**
 * The scratch directory's bytes and entries, as a container's /tmp: at most a quarter of the
 * memory limit (the container backend sizes its /tmp tmpfs the same way), refused with ENOSPC
 * before the shim grows a file past it.
 */
function scratchUsage(directory: Directory): { bytes: number; entries: number } {
  let bytes = 0;
  let entries = 0;
  const walk = (dir: Directory) => {
    for (const inode of dir.contents.values()) {
      entries++;
      if (inode instanceof File) bytes += inode.data.byteLength;
      else if (inode instanceof Directory) walk(inode);
    }
  };
  walk(directory);
  return { bytes, entries };
}

/** Wraps the shim's calls that grow files or add entries so that the scratch directory stays bounded. */
function boundScratch(wasi: WASI, scratch: PreopenDirectory, capBytes: number, memory: () => WebAssembly.Memory | undefined) {
  const imports = wasi.wasiImport as Record<string, (...args: never[]) => unknown>;
  const fits = (growth: number) => scratchUsage(scratch.dir).bytes + growth <= capBytes;
  const isScratchFile = (fd: number) => {
    const open = wasi.fds[fd];
    return open instanceof OpenFile && open !== wasi.fds[0];
  };
  const iovBytes = (iovs: number, count: number) => {
    const view = new DataView((memory() as WebAssembly.Memory).buffer);
    let total = 0;
    for (let i = 0; i < count; i++) total += view.getUint32(iovs + i * 8 + 4, true);
    return total;
  };
  const guard = <A extends unknown[]>(name: string, growth: (...args: A) => number | undefined) => {
    const original = imports[name] as unknown as (...args: A) => number;
    imports[name] = ((...args: A) => {
      const bytes = growth(...args);
      if (bytes !== undefined && !fits(bytes)) return ERRNO_NOSPC;
      return original(...args);
    }) as never;
  };
  guard('fd_write', (fd: number, iovs: number, count: number) => (isScratchFile(fd) ? iovBytes(iovs, count) : undefined));
  guard('fd_pwrite', (fd: number, iovs: number, count: number, offset: bigint) =>
    isScratchFile(fd) ? Number(offset) + iovBytes(iovs, count) : undefined,
  );
  guard('fd_allocate', (fd: number, offset: bigint, length: bigint) => (isScratchFile(fd) ? Number(offset + length) : undefined));
  guard('fd_filestat_set_size', (fd: number, size: bigint) => (isScratchFile(fd) ? Number(size) : undefined));
  const entries = (create: boolean) => (create && scratchUsage(scratch.dir).entries >= SCRATCH_ENTRIES ? capBytes + 1 : 0);
  guard('path_open', (_fd: number, _flags: number, _path: number, _length: number, oflags: number) =>
    entries((oflags & OFLAGS_CREAT) !== 0),
  );
  guard('path_create_directory', () => entries(true));
  // Files opened in the scratch directory get the open file that grows geometrically, in place
  // of the shim's (at the same position: the end, for one opened to append).
  const open = imports.path_open as unknown as (...args: unknown[]) => number;
  // path_open(dirfd, dirflags, path, pathLength, oflags, rightsBase, rightsInheriting, fdflags, openedFd)
  imports.path_open = ((...args: unknown[]) => {
    const errno = open(...args);
    if (errno !== 0) return errno;
    const fd = new DataView((memory() as WebAssembly.Memory).buffer).getUint32(args[8] as number, true);
    const opened = wasi.fds[fd];
    if (opened instanceof OpenFile && !(opened instanceof ScratchOpenFile)) {
      const file = new ScratchOpenFile(opened.file, capBytes);
      file.file_pos = opened.file_pos;
      wasi.fds[fd] = file;
    }
    return errno;
  }) as never;
}

/**
 * One run in a fresh instance. `refuel` is the host's side of a metered module (see metering.ts):
 * called when its fuel is spent, it gives more, or -1 to stop it.
 */
export function runModule(message: RunMessage, module: WebAssembly.Module, onLog: RunLog, refuel?: () => number): WorkerOutcome {
  const log = (stream: 'stdout' | 'stderr') => ConsoleStdout.lineBuffered((line) => onLog(stream, `${line}\n`));
  const stdoutChunks: Uint8Array[] = [];
  const stdout =
    message.abi === 'command'
      ? new ConsoleStdout((chunk) => {
          stdoutChunks.push(chunk.slice());
        })
      : log('stdout');
  const stdin = new OpenFile(new File(message.abi === 'command' ? new TextEncoder().encode(message.input) : new Uint8Array()));
  const scratch = new PreopenDirectory('/tmp', new Map<string, Inode>());
  const env = Object.entries(message.env).map(([k, v]) => `${k}=${v}`);
  // The shim turns its debug printing on unless told otherwise: it would go to the server's stdout.
  const wasi = new WASI(['function.wasm'], env, [stdin, stdout, log('stderr'), scratch], { debug: false });

  const limits = message.importedMemory;
  const imported = limits ? memoryPool.take(limits) : undefined;
  let memory: WebAssembly.Memory | undefined = imported;
  boundScratch(wasi, scratch, Math.floor((message.maxPages * PAGE_BYTES) / 4), () => memory);
  const envImports: Record<string, WebAssembly.ImportValue> = {
    abort(messagePtr: number, filePtr: number, line: number, column: number) {
      const text = readAssemblyScriptString(memory, messagePtr);
      const file = readAssemblyScriptString(memory, filePtr);
      throw new TrapError(`abort: ${text || 'no message'}${file ? ` at ${file}:${line}:${column}` : ''}`);
    },
    trace(messagePtr: number, n: number, ...args: number[]) {
      onLog('stdout', `trace: ${readAssemblyScriptString(memory, messagePtr)} ${args.slice(0, n).join(', ')}\n`);
    },
    seed: () => crypto.getRandomValues(new Uint32Array(1))[0] as number,
    ...(memory ? { memory } : {}),
  };

  try {
    const instance = new WebAssembly.Instance(module, {
      wasi_snapshot_preview1: wasi.wasiImport,
      env: envImports,
      ...(refuel ? { [REFUEL_IMPORT.module]: { [REFUEL_IMPORT.name]: refuel } } : {}),
    });
    const exports = instance.exports as Record<string, WebAssembly.ExportValue>;
    memory ??= exports.memory instanceof WebAssembly.Memory ? exports.memory : undefined;
    if (message.abi === 'command') {
      const code = wasi.start(instance as unknown as Parameters<WASI['start']>[0]);
      const text = decoder.decode(Buffer.concat(stdoutChunks)).trim();
      if (code !== 0) return { kind: 'error', error: `The module exited with code ${code}.` };
      return { kind: 'json', text, source: 'The module wrote output' };
    }
    wasi.initialize(instance as unknown as Parameters<WASI['initialize']>[0]);
    const alloc = exports[REACTOR_ALLOC] as (size: number) => number;
    const handle = exports[REACTOR_HANDLE] as (pointer: number, length: number) => bigint;
    const input = new TextEncoder().encode(message.input);
    const pointer = alloc(input.length);
    if (!memory) return { kind: 'crash', reason: 'The module has no memory export.' };
    new Uint8Array(memory.buffer, pointer, input.length).set(input);
    const packed = BigInt.asUintN(64, BigInt(handle(pointer, input.length)));
    const resultPointer = Number(packed >> 32n);
    const resultLength = Number(packed & 0xffffffffn);
    if (resultPointer + resultLength > memory.buffer.byteLength) {
      return { kind: 'error', error: 'isola_handle returned a result outside the module memory.' };
    }
    const text = decoder.decode(new Uint8Array(memory.buffer, resultPointer, resultLength));
    return { kind: 'json', text, source: 'isola_handle returned text' };
  } catch (error) {
    if (error instanceof WASIProcExit) return { kind: 'error', error: `The module exited with code ${error.code}.` };
    // A trap with the memory at its maximum is the module running out of memory: its allocator
    // failed to grow and gave up.
    const atLimit = memory !== undefined && memory.buffer.byteLength + 16 * PAGE_BYTES > message.maxPages * PAGE_BYTES;
    if (error instanceof RangeError && /memory/i.test(error.message)) return { kind: 'oom' };
    if ((error instanceof WebAssembly.RuntimeError || error instanceof TrapError) && atLimit) return { kind: 'oom' };
    if (error instanceof WebAssembly.RuntimeError || error instanceof TrapError) {
      return { kind: 'error', error: `${error instanceof TrapError ? '' : 'RuntimeError: '}${error.message}` };
    }
    return { kind: 'error', error: error instanceof Error ? error.message : String(error) };
  } finally {
    // Reached only by a run that ended: a run stopped by the fast path's timeout is terminated
    // without running this, and its memory, in whatever state, is never kept.
    if (limits && imported) memoryPool.give(limits, imported);
  }
}
