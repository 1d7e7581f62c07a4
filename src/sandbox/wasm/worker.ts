/**
 * A worker thread that runs WebAssembly functions: every invocation gets a fresh instance of the
 * compiled module, WASI preview 1 with stdin/stdout/stderr in memory, no preopened directories
 * and no sockets. Bundled into a single file, like the guest agent.
 */
import { parentPort } from 'node:worker_threads';
import { ConsoleStdout, File, OpenFile, WASI, WASIProcExit } from '@bjorn3/browser_wasi_shim';
import { PAGE_BYTES } from './binary.js';
import { REACTOR_ALLOC, REACTOR_HANDLE, type RunMessage, type WorkerMessage, type WorkerOutcome } from './messages.js';

const port = parentPort;
if (!port) throw new Error('the wasm worker must run in a worker thread');
const MODULE_CACHE_SIZE = 64;
const modules = new Map<string, WebAssembly.Module>();
const decoder = new TextDecoder('utf-8');

function send(message: WorkerMessage): void {
  port?.postMessage(message);
}

class TrapError extends Error {}

/** AssemblyScript strings: UTF-16, byte length in the 4 bytes before the pointer. */
function readAssemblyScriptString(memory: WebAssembly.Memory | undefined, pointer: number): string {
  if (!memory || pointer === 0) return '';
  const view = new DataView(memory.buffer);
  const length = view.getUint32(pointer - 4, true);
  return new TextDecoder('utf-16le').decode(new Uint8Array(memory.buffer, pointer, length));
}

function run(message: RunMessage): WorkerOutcome {
  let module = modules.get(message.key);
  if (message.module) {
    module = message.module;
    modules.set(message.key, module);
    if (modules.size > MODULE_CACHE_SIZE) modules.delete(modules.keys().next().value as string);
  }
  if (!module) return { kind: 'crash', reason: 'The worker does not have the compiled module.' };

  const log = (stream: 'stdout' | 'stderr') =>
    ConsoleStdout.lineBuffered((line) => send({ type: 'log', id: message.id, stream, text: `${line}\n` }));
  const stdoutChunks: Uint8Array[] = [];
  const stdout =
    message.abi === 'command'
      ? new ConsoleStdout((chunk) => {
          stdoutChunks.push(chunk.slice());
        })
      : log('stdout');
  const stdin = new OpenFile(new File(message.abi === 'command' ? new TextEncoder().encode(message.input) : new Uint8Array()));
  const env = Object.entries(message.env).map(([k, v]) => `${k}=${v}`);
  // The shim turns its debug printing on unless told otherwise: it would go to the server's stdout.
  const wasi = new WASI(['function.wasm'], env, [stdin, stdout, log('stderr')], { debug: false });

  let memory: WebAssembly.Memory | undefined = message.importedMemory
    ? new WebAssembly.Memory(message.importedMemory)
    : undefined;
  const envImports: Record<string, WebAssembly.ImportValue> = {
    abort(messagePtr: number, filePtr: number, line: number, column: number) {
      const text = readAssemblyScriptString(memory, messagePtr);
      const file = readAssemblyScriptString(memory, filePtr);
      throw new TrapError(`abort: ${text || 'no message'}${file ? ` at ${file}:${line}:${column}` : ''}`);
    },
    trace(messagePtr: number, n: number, ...args: number[]) {
      send({
        type: 'log',
        id: message.id,
        stream: 'stdout',
        text: `trace: ${readAssemblyScriptString(memory, messagePtr)} ${args.slice(0, n).join(', ')}\n`,
      });
    },
    seed: () => crypto.getRandomValues(new Uint32Array(1))[0] as number,
    ...(memory ? { memory } : {}),
  };

  try {
    const instance = new WebAssembly.Instance(module, { wasi_snapshot_preview1: wasi.wasiImport, env: envImports });
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
  }
}

port.on('message', (message: RunMessage) => {
  if (message.type !== 'run') return;
  const outcome = run(message);
  send({ type: 'done', id: message.id, outcome });
});
send({ type: 'ready' });
