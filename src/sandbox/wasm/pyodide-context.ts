/**
 * CPython on WebAssembly (Pyodide) the way an isolate runtime hosts it: inside a V8 context of its
 * own on the worker thread, with no Node.js API in it and code generation from strings turned off,
 * so that Python's `js` module (and every JavaScript object Python can reach) leads nowhere: no
 * `process`, no `require`, and no `Function("...")` back into a realm that has them. What the
 * interpreter needs from outside (its own files, a clock, randomness, timers, text codecs, output)
 * comes through small functions made inside the context that call the host's, so that no object of
 * the host's realm is ever reachable from it.
 */
import { randomFillSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import vm from 'node:vm';

/** Emscripten's ENOSPC: a scratch file that would grow past the sandbox's share of memory. */
const ERRNO_NOSPC = 51;

/**
 * The Python side of a sandbox: the function is loaded by its package's own launcher.py (what the
 * process backend runs), imported as a module; this runs one activation as the launcher's loop does.
 */
const RUNNER = `
import json, os, sys, traceback

_isola_function = None
_isola_launcher = None

def _isola_load(here, name):
    global _isola_function, _isola_launcher
    os.chdir(here)
    sys.path.insert(0, here)
    try:
        import launcher
        _isola_launcher = launcher
        _isola_function = launcher.load(name, here)
        return ''
    except BaseException as error:
        traceback.print_exc()
        return '%s: %s' % (type(error).__name__, error)

def _isola_run(text):
    request = json.loads(text)
    os.environ.update(request['env'])
    args = request['value']
    try:
        result = _isola_function(args if isinstance(args, dict) else {})
        line = json.dumps(result, ensure_ascii=False, allow_nan=False)
    except BaseException as error:
        traceback.print_exc()
        line = json.dumps({'error': _isola_launcher.message_of(error)}, ensure_ascii=False)
    sys.stdout.flush()
    sys.stderr.flush()
    return line
`;

/** What the code inside the context calls: each a plain function of the host's. */
interface HostFunctions {
  read(name: string, into: (length: number) => Uint8Array): Uint8Array;
  now(): number;
  random(into: Uint8Array): void;
  decode(bytes: Uint8Array, fatal: boolean): string;
  encode(text: string, into: (length: number) => Uint8Array): Uint8Array;
  output(stream: 'stdout' | 'stderr', text: string): void;
  setTimer(callback: () => void, ms: number): number;
  clearTimer(id: number): void;
}

/**
 * Runs inside the context. `host` is a closure variable only, never a property: the context's code
 * cannot name it. Bytes cross by the host writing into arrays made here, and errors are made again
 * here, so that nothing the context holds has the host's prototypes.
 */
const PRELUDE = String.raw`(function (host, heapMax, scratchBytes) {
  'use strict';
  const bytes = (length) => new Uint8Array(length);
  const guard = (f) => function (...args) {
    try { return f(...args); } catch (error) { throw new Error(String(error && error.message)); }
  };
  const define = (name, value) => Object.defineProperty(globalThis, name, { value, writable: false, configurable: false });
  // Pyodide's loader takes a shell for a worker without Node.js: read and load mark one.
  globalThis.read = () => { throw new Error('no files'); };
  globalThis.load = () => { throw new Error('no scripts'); };
  globalThis.readbuffer = guard((path) => host.read(String(path), bytes).buffer);
  // A worker, for Emscripten's runtime: its shell mode would ask d8 for randomness.
  globalThis.WorkerGlobalScope = function WorkerGlobalScope() {};
  const now = guard(() => host.now());
  globalThis.performance = { now, timeOrigin: Date.now() - now() };
  const setTimer = guard((callback, ms) => host.setTimer(callback, ms));
  const clearTimer = guard((id) => host.clearTimer(id));
  globalThis.setTimeout = (callback, ms, ...args) => setTimer(() => callback(...args), Number(ms) || 0);
  globalThis.clearTimeout = (id) => { if (typeof id === 'number') clearTimer(id); };
  globalThis.queueMicrotask = (callback) => { Promise.resolve().then(callback); };
  const random = guard((view) => host.random(view));
  globalThis.crypto = {
    getRandomValues(array) {
      random(new Uint8Array(array.buffer, array.byteOffset, array.byteLength));
      return array;
    },
  };
  const decode = guard((view, fatal) => host.decode(view, fatal));
  const encode = guard((text) => host.encode(text, bytes));
  globalThis.TextDecoder = class TextDecoder {
    constructor(label, options) { this.fatal = Boolean(options && options.fatal); }
    get encoding() { return 'utf-8'; }
    decode(input) {
      if (input === undefined) return '';
      const view = input instanceof ArrayBuffer ? new Uint8Array(input) : new Uint8Array(input.buffer, input.byteOffset, input.byteLength);
      return decode(view, this.fatal);
    }
  };
  globalThis.TextEncoder = class TextEncoder {
    get encoding() { return 'utf-8'; }
    encode(text = '') { return encode(String(text)); }
    encodeInto(text, into) {
      const encoded = encode(String(text));
      const written = Math.min(encoded.length, into.length);
      into.set(encoded.subarray(0, written));
      return { read: String(text).length, written };
    }
  };
  const output = guard((stream, text) => host.output(stream, text));
  const format = (args) => args.map(String).join(' ');
  globalThis.console = {
    log: (...args) => output('stderr', format(args) + '\n'),
    info: (...args) => output('stderr', format(args) + '\n'),
    warn: (...args) => output('stderr', format(args) + '\n'),
    error: (...args) => output('stderr', format(args) + '\n'),
    debug() {},
  };
  // The interpreter's linear memory stops growing here (a MemoryError in Python), whatever it asks.
  define('__isolaHeapMax', heapMax);
  globalThis.__isolaOutput = output;
  /**
   * Bounds the bytes in the interpreter's in-memory files (its scratch space) from now on: a write
   * or a truncation that would grow them past the bound fails with ENOSPC, before the bytes exist.
   */
  globalThis.__isolaBoundFiles = (FS) => {
    const MEMFS = FS.filesystems.MEMFS;
    let used = 0;
    const size = (node) => (node && node.usedBytes) || 0;
    const grow = (node, to, change) => {
      const before = size(node);
      if (to > before && used + to - before > scratchBytes) throw new FS.ErrnoError(${ERRNO_NOSPC});
      const result = change();
      used = Math.max(0, used + size(node) - before);
      return result;
    };
    // Files' operations are copied into MEMFS's table when its first node is made: bound both.
    const write = MEMFS.stream_ops.write;
    const boundedWrite = function (stream, buffer, offset, length, position, canOwn) {
      return grow(stream.node, position + length, () => write.call(this, stream, buffer, offset, length, position, canOwn));
    };
    MEMFS.stream_ops.write = boundedWrite;
    if (MEMFS.ops_table) MEMFS.ops_table.file.stream.write = boundedWrite;
    const resize = MEMFS.resizeFileStorage;
    MEMFS.resizeFileStorage = function (node, newSize) {
      return grow(node, newSize, () => resize.call(this, node, newSize));
    };
    const unlink = FS.unlink;
    FS.unlink = function (path) {
      let freed = 0;
      try { freed = size(FS.lookupPath(path).node); } catch {}
      unlink.call(this, path);
      used = Math.max(0, used - freed);
    };
  };
  /** Writes a file of the function's into the interpreter's file system. */
  globalThis.__isolaWriteFile = (FS, path, length, fill) => {
    const data = new Uint8Array(length);
    fill(data);
    FS.mkdirTree(path.slice(0, path.lastIndexOf('/')) || '/');
    FS.writeFile(path, data);
  };
})`;

/**
 * What an interpreter is made from, read once by the server and handed to every worker: Pyodide's
 * binary files (in shared memory: no copy per worker), its two scripts, and V8's code cache of the
 * runtime's script once a worker has made one (a new thread otherwise compiles its functions again).
 */
export interface PyodideFiles {
  version: string;
  wasm: Uint8Array;
  stdlib: Uint8Array;
  lock: string;
  asm: string;
  loader: string;
  asmCache?: Uint8Array;
}

/** A copy in shared memory: handed to worker threads without being copied again. */
export function sharedCopy(bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(new SharedArrayBuffer(bytes.length));
  copy.set(bytes);
  return copy;
}

/**
 * Pyodide's ES modules as scripts for a context: its runtime's one `export default` and its
 * `import.meta.url` (only read under Node.js, which the context is not) have no meaning in a
 * script, and its heap limit is read from the context (see the prelude).
 */
export function readPyodide(dir: string): PyodideFiles {
  const text = (name: string) => readFileSync(join(dir, name), 'utf8');
  const replaceOnce = (source: string, pattern: RegExp | string, replacement: string, what: string) => {
    const next = source.replace(pattern, replacement);
    if (next === source) throw new Error(`This Pyodide release has no ${what} where Isola expects it.`);
    return next;
  };
  let asm = text('pyodide.asm.mjs').replaceAll('import.meta.url', '"file:///pyodide/pyodide.asm.mjs"');
  asm = replaceOnce(asm, /export\s+default\s+(\w+)\s*;?\s*$/, 'globalThis.__createPyodideModule = $1;', 'export of its runtime');
  asm = replaceOnce(asm, 'getHeapMax=()=>4294901760', 'getHeapMax=()=>globalThis.__isolaHeapMax', 'heap limit');
  let loader = text('pyodide.mjs').replace(/\/\/# sourceMappingURL=.*$/m, '');
  loader = replaceOnce(
    loader,
    /export\s*\{\s*(\w+) as loadPyodide\s*,\s*(\w+) as version\s*\};?/,
    'globalThis.__loadPyodide = $1;',
    'loader',
  );
  return {
    version: (JSON.parse(text('package.json')) as { version: string }).version,
    wasm: sharedCopy(readFileSync(join(dir, 'pyodide.asm.wasm'))),
    stdlib: sharedCopy(readFileSync(join(dir, 'python_stdlib.zip'))),
    lock: text('pyodide-lock.json'),
    asm,
    loader,
  };
}

/** The two scripts, compiled once per thread (from the code cache when there is one). */
interface CompiledScripts {
  asm: vm.Script;
  loader: vm.Script;
}

let compiled: CompiledScripts | undefined;

function compileScripts(files: PyodideFiles): CompiledScripts {
  compiled ??= {
    asm: new vm.Script(files.asm, {
      filename: 'pyodide.asm.js',
      ...(files.asmCache
        ? { cachedData: Buffer.from(files.asmCache.buffer, files.asmCache.byteOffset, files.asmCache.byteLength) }
        : {}),
    }),
    loader: new vm.Script(files.loader, { filename: 'pyodide.js' }),
  };
  return compiled;
}

/** The Pyodide API object, as far as the host uses it (it lives in the context). */
interface PyodideApi {
  runPython(code: string): unknown;
  makeMemorySnapshot(): Uint8Array;
  FS: unknown;
  globals: { get(name: string): unknown };
}

export interface InterpreterOptions {
  files: PyodideFiles;
  /** Linear memory the interpreter may grow to, in bytes. */
  heapBytes: number;
  /** Bytes its in-memory files (its scratch space) may hold. */
  scratchBytes: number;
  /** Restores this memory snapshot instead of starting the interpreter from nothing. */
  snapshot?: Uint8Array;
  /** Starts from nothing so as to take a snapshot (see `snapshot()`). */
  forSnapshot?: boolean;
  output(stream: 'stdout' | 'stderr', text: string): void;
}

/** The prelude's helpers the host calls, taken off the context's global object once loaded. */
interface ContextHelpers {
  boundFiles(fs: unknown): void;
  writeFile(fs: unknown, path: string, length: number, fill: (into: Uint8Array) => void): void;
}

const timers = new Map<number, NodeJS.Timeout>();
let nextTimer = 1;

/** One CPython interpreter in a context of its own. */
export class PyodideInterpreter {
  private constructor(
    private readonly api: PyodideApi,
    private readonly helpers: ContextHelpers,
  ) {}

  static async start(options: InterpreterOptions): Promise<PyodideInterpreter> {
    const { files } = options;
    const scripts = compileScripts(files);
    const packageFiles = new Map([
      ['pyodide.asm.wasm', files.wasm],
      ['python_stdlib.zip', files.stdlib],
    ]);
    const context = vm.createContext({}, { codeGeneration: { strings: false, wasm: true } });
    const copyInto = (source: Uint8Array, into: (length: number) => Uint8Array) => {
      const target = into(source.length);
      Buffer.from(target.buffer, target.byteOffset, target.byteLength).set(source);
      return target;
    };
    const host: HostFunctions = {
      read(name, into) {
        const file = packageFiles.get(name.slice(name.lastIndexOf('/') + 1));
        if (!file) throw new Error(`no file ${name}`);
        return copyInto(file, into);
      },
      now: () => performance.now(),
      random: (into) => {
        randomFillSync(Buffer.from(into.buffer, into.byteOffset, into.byteLength));
      },
      decode: (view, fatal) =>
        new TextDecoder('utf-8', { fatal }).decode(Buffer.from(view.buffer, view.byteOffset, view.byteLength)),
      encode: (text, into) => copyInto(Buffer.from(text, 'utf8'), into),
      output: (stream, text) => options.output(stream === 'stderr' ? 'stderr' : 'stdout', String(text)),
      setTimer(callback, ms) {
        const id = nextTimer++;
        timers.set(
          id,
          setTimeout(() => {
            timers.delete(id);
            callback();
          }, ms),
        );
        return id;
      },
      clearTimer(id) {
        clearTimeout(timers.get(id));
        timers.delete(id);
      },
    };
    (vm.runInContext(PRELUDE, context) as (h: HostFunctions, heapMax: number, scratch: number) => void)(
      host,
      Math.floor(options.heapBytes / 65536) * 65536,
      options.scratchBytes,
    );
    scripts.asm.runInContext(context);
    scripts.loader.runInContext(context);
    context.__isolaLock = files.lock;
    if (options.snapshot) {
      const snapshot = options.snapshot;
      context.__isolaSnapshot = vm.runInContext('(length) => new Uint8Array(length)', context)(snapshot.length);
      Buffer.from(context.__isolaSnapshot.buffer).set(snapshot);
    }
    const api = (await vm.runInContext(
      `(() => {
        const lock = globalThis.__isolaLock, snapshot = globalThis.__isolaSnapshot;
        delete globalThis.__isolaLock; delete globalThis.__isolaSnapshot;
        return __loadPyodide({
          indexURL: '/pyodide/', lockFileContents: lock, createPyodideModule: __createPyodideModule,
          jsglobals: globalThis, env: { HOME: '/tmp' },
          stdout: (line) => __isolaOutput('stdout', line + '\\n'), stderr: (line) => __isolaOutput('stderr', line + '\\n'),
          ${options.forSnapshot ? '_makeSnapshot: true,' : ''} ...(snapshot ? { _loadSnapshot: snapshot } : {}),
        });
      })()`,
      context,
    )) as PyodideApi;
    // What only the loader needed goes (the rest of the prelude's globals are harmless to Python),
    // and so does its copy of the snapshot, which its configuration would otherwise keep: the
    // interpreter's memory holds it now.
    const helpers: ContextHelpers = {
      boundFiles: context.__isolaBoundFiles,
      writeFile: context.__isolaWriteFile,
    };
    vm.runInContext(
      'for (const name of ["read", "load", "readbuffer", "__loadPyodide", "__createPyodideModule", "__isolaBoundFiles", "__isolaWriteFile"]) delete globalThis[name];',
      context,
    );
    const config = (api as unknown as { _api?: { config?: Record<string, unknown> } })._api?.config;
    if (config) delete config._loadSnapshot;
    const interpreter = new PyodideInterpreter(api, helpers);
    if (!options.snapshot) api.runPython(RUNNER);
    return interpreter;
  }

  /** V8's code cache of the runtime's script, with the functions this thread has compiled so far. */
  static codeCache(): Uint8Array | undefined {
    return compiled ? new Uint8Array(compiled.asm.createCachedData()) : undefined;
  }

  /** The interpreter's memory, to restore later (only before any JavaScript object entered Python). */
  snapshot(): Uint8Array {
    return new Uint8Array(this.api.makeMemorySnapshot());
  }

  /** Writes the function's files under `dir` and imports it; an empty string, or what went wrong. */
  load(dir: string, files: [string, Uint8Array][], main: string): string {
    for (const [name, data] of files) {
      this.helpers.writeFile(this.api.FS, `${dir}/${name}`, data.length, (into) => {
        Buffer.from(into.buffer, into.byteOffset, into.byteLength).set(data);
      });
    }
    // From here on the scratch space is bounded: the function's own files do not count.
    this.helpers.boundFiles(this.api.FS);
    const loadFunction = this.api.globals.get('_isola_load') as (dir: string, main: string) => string;
    return String(loadFunction(dir, main));
  }

  /** One activation: the request's JSON in, the result's JSON out. */
  run(request: string): string {
    const run = this.api.globals.get('_isola_run') as (text: string) => string;
    return String(run(request));
  }
}
