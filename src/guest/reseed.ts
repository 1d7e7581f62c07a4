/**
 * Randomness that can be reseeded. A sandbox restored from a memory snapshot carries the RNG
 * state of the moment the snapshot was taken, so every clone would draw the same "random" values
 * (the same crypto.randomUUID(), the same Math.random()). At start-up, before any function code
 * loads, the agent puts wrappers in front of every source of randomness a function can reach;
 * until a reseed they pass through to Node.js, after it they draw from an AES-256-CTR keystream
 * keyed with fresh entropy from the host. Functions that captured a reference at load time (say
 * `const { randomUUID } = require('crypto')`) captured the wrapper.
 */
import { type ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import { closeSync, constants, existsSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Where the images carry the helper that reseeds the guest kernel's generator and sets its clock. */
export const RESEED_KERNEL_PATH = '/usr/lib/isola/reseed-kernel';

/**
 * After a microVM restore: the kernel's generator and clock resume in the snapshot's state, and
 * every runtime but the agent's own (Python, Java, Go...) reads them. Root in the guest can reset
 * both; anywhere else (a container) the helper fails and nothing changes, which is what it means.
 */
export function reseedKernel(entropyBase64: string, hostNow: number): boolean {
  if (!existsSync(RESEED_KERNEL_PATH)) return false;
  const result = spawnSync(RESEED_KERNEL_PATH, [String(Math.round(hostNow))], {
    input: Buffer.from(entropyBase64, 'base64'),
    stdio: ['pipe', 'ignore', 'ignore'],
    timeout: 2000,
  });
  return result.status === 0;
}

/**
 * The helper kept running (`--serve`), started by the agent at start-up in a microVM guest, so
 * that it is in the snapshot and a clone's reseed is a write to a process already there. Starting
 * a process from Node.js in a clone (fork of a large process, exec) was most of a restore's first
 * answer under an emulated CPU, where every path of it is translated afresh. It is spoken to
 * through two FIFOs with blocking reads and writes: no stream or event loop round trip, whose
 * paths would be translated afresh too. The helper answers within microseconds; one that is gone
 * is seen by its exit (a reseed then starts a helper as before).
 */
export class KernelReseeder {
  private exited = false;

  private constructor(
    private readonly child: ChildProcess,
    private readonly requests: number,
    private readonly answers: number,
  ) {
    child.once('exit', () => this.gone());
    child.once('error', () => this.gone());
    // It never keeps the agent alive.
    child.unref();
  }

  /** Only for root (a VM guest's agent): anywhere else the helper could change nothing. */
  static start(helper = RESEED_KERNEL_PATH): KernelReseeder | undefined {
    if (process.getuid?.() !== 0 || !existsSync(helper) || !MKFIFO) return undefined;
    const dir = mkdtempSync(join(tmpdir(), 'isola-reseed-'));
    const fds: number[] = [];
    try {
      const [requests, answers] = [join(dir, 'requests'), join(dir, 'answers')];
      execFileSync(MKFIFO, ['-m', '600', requests, answers]);
      // Read-write: opening one end of a FIFO alone would wait for the other; the helper gets its
      // own descriptors, so that it never reads its own answers.
      for (const path of [requests, answers, requests, answers]) fds.push(openSync(path, constants.O_RDWR));
      const [agentRequests, agentAnswers, helperRequests, helperAnswers] = fds as [number, number, number, number];
      const child = spawn(helper, ['--serve'], { stdio: [helperRequests, helperAnswers, 'ignore'] });
      closeSync(helperRequests);
      closeSync(helperAnswers);
      return new KernelReseeder(child, agentRequests, agentAnswers);
    } catch {
      for (const fd of fds) closeQuietly(fd);
      return undefined;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  get running(): boolean {
    return !this.exited;
  }

  /** Ends the helper (tests; in a guest it lives as long as the agent). */
  stop(): void {
    this.child.kill();
  }

  /** True once the kernel has reseeded and its clock is set; false if the helper failed or is gone. */
  reseed(entropyBase64: string, hostNow: number): boolean {
    if (this.exited) return false;
    const entropy = Buffer.from(entropyBase64, 'base64');
    const header = Buffer.alloc(12);
    header.writeUInt32LE(entropy.length, 0);
    header.writeBigInt64LE(BigInt(Math.round(hostNow)), 4);
    try {
      writeSync(this.requests, Buffer.concat([header, entropy]));
      const status = Buffer.alloc(1);
      return readSync(this.answers, status, 0, 1, null) === 1 && status[0] === 0;
    } catch {
      return false;
    }
  }

  private gone(): void {
    this.exited = true;
    closeQuietly(this.requests);
    closeQuietly(this.answers);
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}

const MKFIFO = ['/usr/bin/mkfifo', '/bin/mkfifo'].find((path) => existsSync(path));

type Source = (length: number) => Buffer;

let source: Source | undefined;

function take(length: number): Buffer {
  return source ? source(length) : crypto.randomBytes(length);
}

/**
 * The cipher is made at the first draw, not at the reseed: right after a restore the guest runs
 * every code path for the first time (under TCG each must be translated again), and the reseed
 * answer is what a cold start waits for, while many functions never draw at all.
 */
function keystream(seedOf: () => Buffer): Source {
  let cipher: crypto.Cipher | undefined;
  // Small blocks: under an emulated CPU a large first block is a noticeable wait.
  const zeros = Buffer.alloc(1024);
  let pool = Buffer.alloc(0);
  let offset = 0;
  return (length) => {
    if (!cipher) {
      const seed = seedOf();
      cipher = crypto.createCipheriv('aes-256-ctr', seed.subarray(0, 32), seed.subarray(32, 48));
    }
    const out = Buffer.allocUnsafe(length);
    let filled = 0;
    while (filled < length) {
      if (offset >= pool.length) {
        pool = (cipher as crypto.Cipher).update(zeros);
        offset = 0;
      }
      const n = Math.min(length - filled, pool.length - offset);
      pool.copy(out, filled, offset, offset + n);
      filled += n;
      offset += n;
    }
    return out;
  };
}

function uuid(): string {
  const b = take(16);
  b[6] = ((b[6] as number) & 0x0f) | 0x40;
  b[8] = ((b[8] as number) & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function fillView<T extends NodeJS.ArrayBufferView>(view: T, offset = 0, size?: number): T {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  const length = size ?? bytes.length - offset;
  bytes.set(take(length), offset);
  return view;
}

/** Installs the wrappers; call before any function code is loaded. */
export function installReseedableRandomness(): void {
  const original = {
    randomBytes: crypto.randomBytes,
    randomFillSync: crypto.randomFillSync,
    randomFill: crypto.randomFill,
    randomUUID: crypto.randomUUID,
    randomInt: crypto.randomInt,
    getRandomValues: crypto.webcrypto.getRandomValues.bind(crypto.webcrypto),
    mathRandom: Math.random,
  };
  const mutable = crypto as unknown as Record<string, unknown>;
  mutable.randomBytes = (size: number, callback?: (error: Error | null, buffer: Buffer) => void) => {
    if (!source) return callback ? original.randomBytes(size, callback) : original.randomBytes(size);
    const buffer = take(size);
    if (callback) {
      process.nextTick(callback, null, buffer);
      return undefined;
    }
    return buffer;
  };
  mutable.randomFillSync = (view: NodeJS.ArrayBufferView, offset?: number, size?: number) =>
    source ? fillView(view, offset, size) : original.randomFillSync(view, offset, size);
  mutable.randomFill = (view: NodeJS.ArrayBufferView, ...rest: unknown[]) => {
    const callback = rest.pop() as (error: Error | null, view: NodeJS.ArrayBufferView) => void;
    if (!source) return (original.randomFill as (...a: unknown[]) => void)(view, ...rest, callback);
    const [offset, size] = rest as [number | undefined, number | undefined];
    process.nextTick(callback, null, fillView(view, offset, size));
    return undefined;
  };
  mutable.randomUUID = (options?: crypto.RandomUUIDOptions) => (source ? uuid() : original.randomUUID(options));
  mutable.randomInt = (...args: unknown[]) => {
    if (!source) return (original.randomInt as (...a: unknown[]) => number)(...args);
    const callback = typeof args.at(-1) === 'function' ? (args.pop() as (e: Error | null, n: number) => void) : undefined;
    const [min, max] = args.length === 1 ? [0, args[0] as number] : (args as [number, number]);
    const value = min + Math.floor((take(6).readUIntBE(0, 6) / 2 ** 48) * (max - min));
    if (callback) {
      process.nextTick(callback, null, value);
      return undefined;
    }
    return value;
  };
  const getRandomValues = <T extends ArrayBufferView | null>(array: T): T =>
    source && array
      ? (fillView(array as NodeJS.ArrayBufferView) as unknown as T)
      : (original.getRandomValues(array as never) as T);
  // crypto.getRandomValues is an accessor that reads webcrypto's, and webcrypto is globalThis.crypto.
  const web = crypto.webcrypto as unknown as Record<string, unknown>;
  web.getRandomValues = getRandomValues;
  web.randomUUID = () => (source ? uuid() : original.randomUUID());
  Math.random = () => {
    if (!source) return original.mathRandom();
    const b = take(8);
    return (b.readUInt32BE(0) * 2 ** 21 + (b.readUInt32BE(4) >>> 11)) / 2 ** 53;
  };
}

let clockOffsetMs = 0;
// Below this the guest's clock is considered right: no need to correct jitter.
const CLOCK_TOLERANCE_MS = 50;

/**
 * A restored sandbox's wall clock can be as old as its snapshot, and the agent may not set the
 * system clock. Like the randomness, Date is wrapped before function code loads, so that an
 * offset learned at the reseed moves `Date.now()` and `new Date()` to the host's time.
 */
export function installRestorableClock(): void {
  const OriginalDate = Date;
  const PatchedDate = function (this: unknown, ...args: unknown[]) {
    if (!new.target) return new OriginalDate(OriginalDate.now() + clockOffsetMs).toString();
    return Reflect.construct(OriginalDate, args.length > 0 ? args : [OriginalDate.now() + clockOffsetMs], new.target);
  } as unknown as DateConstructor;
  Object.setPrototypeOf(PatchedDate, OriginalDate);
  Object.defineProperty(PatchedDate, 'prototype', { value: OriginalDate.prototype });
  PatchedDate.now = () => OriginalDate.now() + clockOffsetMs;
  globalThis.Date = PatchedDate;
}

/**
 * From now on, randomness comes from a keystream keyed with these 48 bytes of host entropy, and
 * the clock follows the host's. Returns the clock offset applied, in ms.
 */
export function reseed(entropyBase64: string, hostNow: number): number {
  // 48 bytes are 64 base64 characters; decoded at the first draw.
  if (entropyBase64.length < 64) throw new Error('reseeding needs 48 bytes of entropy');
  source = keystream(() => Buffer.from(entropyBase64, 'base64'));
  const skew = hostNow - (Date.now() - clockOffsetMs);
  clockOffsetMs = Math.abs(skew) > CLOCK_TOLERANCE_MS ? skew : 0;
  return clockOffsetMs;
}
