/**
 * The guest agent: runs one function inside a process, container, gVisor sandbox or microVM and
 * speaks the framed protocol with the platform. It is bundled into a single CommonJS file that
 * needs nothing but the node binary.
 *
 * Usage: node agent.cjs [--channel=stdio | --channel=/dev/virtio-ports/<name>]
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createReadStream, createWriteStream, openSync } from 'node:fs';
import { createRequire } from 'node:module';
import { format } from 'node:util';
import { compileFunction } from 'node:vm';
import { AGENT_PROTOCOL_VERSION, encodeFrame, FrameDecoder, type GuestMessage, type HostMessage } from './protocol.js';
import { installReseedableRandomness, installRestorableClock, reseed } from './reseed.js';

// Before any function code loads, so that everything it captures can be reseeded after a restore.
installReseedableRandomness();
installRestorableClock();

type Entry = (params: unknown) => unknown;

const currentActivation = new AsyncLocalStorage<string>();
const channelArg = process.argv.find((a) => a.startsWith('--channel='))?.slice('--channel='.length) ?? 'stdio';

let writeFrame: (frame: Buffer) => void;
/** Starts reading frames from the channel, calling `onChunk` with each chunk. */
let listen: (onChunk: (chunk: Buffer) => void) => void;

if (channelArg === 'stdio') {
  // stdout carries frames; whatever the function prints goes through the patched writers below.
  const rawWrite = process.stdout.write.bind(process.stdout);
  writeFrame = (frame) => {
    rawWrite(frame);
  };
  listen = (onChunk) => {
    process.stdin.on('data', onChunk);
    // The platform closed our stdin: it is done with this sandbox.
    process.stdin.on('end', () => process.exit(0));
  };
} else {
  const fd = openSync(channelArg, 'r+');
  const out = createWriteStream('', { fd, autoClose: false });
  writeFrame = (frame) => {
    out.write(frame);
  };
  // A virtio-serial port reads as ended while no host is connected to it (between a snapshot
  // restore and the host's connection, say): then wait and read again, never exit.
  listen = (onChunk) => {
    const read = () => {
      const stream = createReadStream('', { fd, autoClose: false, highWaterMark: 256 * 1024 });
      stream.on('data', (chunk) => onChunk(chunk as Buffer));
      stream.on('end', () => setTimeout(read, 5));
      stream.on('error', () => setTimeout(read, 5));
    };
    read();
  };
}

function send(message: GuestMessage): void {
  writeFrame(encodeFrame(message));
}

function log(stream: 'stdout' | 'stderr', text: string): void {
  const id = currentActivation.getStore();
  send(id === undefined ? { type: 'log', stream, text } : { type: 'log', id, stream, text });
}

// Route everything the function prints into log frames tagged with its activation.
function patchStream(stream: NodeJS.WriteStream, name: 'stdout' | 'stderr'): void {
  stream.write = ((chunk: unknown, encodingOrCallback?: unknown, callback?: unknown): boolean => {
    const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
    log(name, text);
    const done = typeof encodingOrCallback === 'function' ? encodingOrCallback : callback;
    if (typeof done === 'function') process.nextTick(done as () => void);
    return true;
  }) as typeof stream.write;
}
patchStream(process.stdout, 'stdout');
patchStream(process.stderr, 'stderr');
console.log = (...args: unknown[]) => log('stdout', `${format(...args)}\n`);
console.info = console.log;
console.debug = console.log;
console.warn = (...args: unknown[]) => log('stderr', `${format(...args)}\n`);
console.error = console.warn;
console.trace = (...args: unknown[]) => log('stderr', `${format(...args)}\n${new Error().stack ?? ''}\n`);

let entry: Entry | undefined;

function loadFunction(code: string, mainName: string): Entry {
  const filename = `${process.cwd()}/index.js`;
  const module = { exports: {} as unknown };
  // Scripts declare `function main` at top level; modules assign exports.main or module.exports.
  // The appended return hands back a top-level declaration when there is one.
  const body = `${code}\n;return typeof ${mainName} === 'function' ? ${mainName} : undefined;`;
  const compiled = compileFunction(body, ['exports', 'require', 'module', '__filename', '__dirname'], { filename });
  const local = compiled(module.exports, createRequire(filename), module, filename, process.cwd()) as unknown;
  const exported = module.exports as Record<string, unknown> | ((...a: unknown[]) => unknown);
  const candidates: unknown[] = [
    typeof exported === 'object' && exported !== null ? exported[mainName] : undefined,
    typeof exported === 'function' && mainName === 'main' ? exported : undefined,
    typeof exported === 'function' ? (exported as unknown as Record<string, unknown>)[mainName] : undefined,
    local,
  ];
  const found = candidates.find((c) => typeof c === 'function');
  if (!found) throw new Error(`The function has no entry point "${mainName}": define function ${mainName}(params) or export it.`);
  return found as Entry;
}

function describeError(error: unknown): unknown {
  if (error instanceof Error) return error.message || String(error);
  if (error === undefined) return 'The function rejected with undefined.';
  return error;
}

async function run(message: Extract<HostMessage, { type: 'run' }>): Promise<void> {
  Object.assign(process.env, message.env);
  try {
    if (!entry) throw new Error('The function has not been initialised.');
    const callEntry = entry;
    const result = await currentActivation.run(message.id, () => callEntry(message.params));
    try {
      send({ type: 'result', id: message.id, result: result === undefined ? null : result });
    } catch (error) {
      send({ type: 'error', id: message.id, error: `The function returned a value that is not JSON: ${describeError(error)}` });
    }
  } catch (error) {
    if (error instanceof Error && error.stack) currentActivation.run(message.id, () => log('stderr', `${error.stack}\n`));
    send({ type: 'error', id: message.id, error: describeError(error) });
  }
}

function handle(message: HostMessage): void {
  switch (message.type) {
    case 'init':
      try {
        Object.assign(process.env, message.env);
        entry = loadFunction(message.code, message.main);
        send({ type: 'ready' });
      } catch (error) {
        send({ type: 'initError', error: error instanceof Error ? `${error.name}: ${error.message}` : String(error) });
      }
      return;
    case 'run':
      void run(message);
      return;
    case 'ping':
      send({ type: 'pong', id: message.id });
      return;
    case 'reseed': {
      const offset = reseed(message.entropy, message.now);
      send({ type: 'reseeded', now: Date.now(), skewMs: offset });
      return;
    }
  }
}

const decoder = new FrameDecoder<HostMessage>();
listen((chunk: Buffer) => {
  let messages: HostMessage[];
  try {
    messages = decoder.push(chunk);
  } catch (error) {
    process.stderr.write(`isola agent: ${String(error)}\n`);
    process.exit(70);
  }
  for (const message of messages) handle(message);
});

process.on('uncaughtException', (error) => {
  log('stderr', `Uncaught exception: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
});
process.on('unhandledRejection', (reason) => {
  log('stderr', `Unhandled rejection: ${reason instanceof Error ? (reason.stack ?? reason.message) : String(reason)}\n`);
});

send({ type: 'hello', protocol: AGENT_PROTOCOL_VERSION, pid: process.pid, node: process.version });
