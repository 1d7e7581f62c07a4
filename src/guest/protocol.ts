/**
 * The framed protocol between the platform and the guest agent. Every frame is a 4-byte
 * big-endian length followed by that many bytes of UTF-8 JSON. The same frames travel over a
 * child's stdio, a container's stdio or a microVM's virtio-serial port.
 */

export const AGENT_PROTOCOL_VERSION = 2;
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;
/** OpenWhisk's limit on a result: the agent refuses to send a larger one. */
export const MAX_RESULT_BYTES = 1024 * 1024;
/** Log bytes an activation may print when the platform does not say. */
export const DEFAULT_LOG_LIMIT_BYTES = 10 * 1024 * 1024;

/**
 * A function that is more than one CommonJS source: what the platform made of the user's upload at
 * deploy (a zip unpacked and checked, a source compiled, a launcher added), as one zip the agent
 * unpacks into a directory of its own before loading it.
 */
export interface FunctionPackage {
  /** Base64 of a zip holding the function's directory. */
  zip: string;
  /** Node.js kinds: the module the agent requires in its own process, relative to the directory. */
  module?: string;
  /**
   * Every other kind: the argv of the process that speaks OpenWhisk's ActionLoop protocol (one JSON
   * line per activation on stdin, one JSON line result on fd 3), run in the directory. An argument
   * `{{memoryMb}}` is replaced by the sandbox's memory limit in MB.
   */
  command?: string[];
  /** Entries to mark executable once unpacked (a zip entry carries no reliable mode). */
  executables?: string[];
  /** The process writes `{"ok":true}` on fd 3 once it is ready (our launchers do, as OpenWhisk's do when `__OW_WAIT_FOR_ACK` is set). */
  ack?: boolean;
  /**
   * `command` is a Lambda custom runtime's `bootstrap`: it speaks AWS Lambda's Runtime API (served
   * by the agent on 127.0.0.1) rather than ActionLoop, and `main` is its `_HANDLER`.
   */
  lambdaRuntime?: boolean;
  /**
   * The runtime (`RuntimeStart.id`) that can load this package when it was started ahead, and
   * the arguments it is then given in place of those after the launcher in `command`.
   */
  runtime?: { id: string; args: string[] };
}

/**
 * A kind's launcher, started in a blank sandbox before its function is known (OpenWhisk's
 * prewarmed runtimes): it waits for a `load` line naming the function's directory, so that a
 * cold start on that sandbox does not wait for the interpreter to start.
 */
export interface RuntimeStart {
  /** The kind and its launcher's version: only a package naming the same id loads into it. */
  id: string;
  /** Base64 of a zip of the launcher's files, unpacked into a directory of the agent's own. */
  zip: string;
  /** argv, run in that directory; `{{memoryMb}}` is replaced as in a package's command. */
  command: string[];
}

export type HostMessage =
  | {
      type: 'init';
      code: string;
      main: string;
      binary: boolean;
      env: Record<string, string>;
      /** The name stack traces and syntax errors give the function's file. */
      filename?: string;
      /** Log bytes one activation (or the initialisation) may print; the rest is dropped. */
      logLimitBytes?: number;
      /** When present, the function is this package and `code` is not used. */
      package?: FunctionPackage;
      /** The sandbox's memory limit, for runtimes that must be told (a JVM's heap). */
      memoryMb?: number;
      /** How many activations may run at once (the action's concurrency limit). */
      concurrency?: number;
    }
  | {
      type: 'run';
      id: string;
      params: unknown;
      deadline: number;
      env: Record<string, string>;
      /** The run's time budget; its deadline counts from when the agent begins it. */
      timeoutMs?: number;
      /** Asks for a `started` frame when the agent begins the run. */
      ack?: boolean;
      /** Lambda's client context (JSON), handed to a Lambda custom runtime with the event. */
      clientContext?: string;
    }
  | { type: 'ping'; id: string }
  /** Starts a kind's runtime ahead (a blank sandbox made for the pool); `init` may then load into it. */
  | { type: 'prestart'; runtime: RuntimeStart; memoryMb: number }
  /** After a snapshot restore: fresh entropy (48 bytes, base64) and the host's time (ms). */
  | {
      type: 'reseed';
      entropy: string;
      now: number;
      /** Reseed the kernel by starting its helper, not through the one kept running (a benchmark's baseline). */
      startKernelHelper?: boolean;
    };

export type GuestMessage =
  | { type: 'hello'; protocol: number; pid: number; node: string }
  | { type: 'ready' }
  | { type: 'initError'; error: string }
  | { type: 'log'; id?: string; stream: 'stdout' | 'stderr'; text: string }
  /** The agent began this run (sent only when the run frame asked for it). */
  | { type: 'started'; id: string }
  | { type: 'result'; id: string; result: unknown }
  /**
   * The function threw or rejected; `outOfMemory` when what it threw says memory ran out,
   * `timedOut` when the agent stopped it at its deadline.
   */
  | { type: 'error'; id: string; error: unknown; outOfMemory?: boolean; timedOut?: boolean }
  | { type: 'pong'; id: string }
  | {
      type: 'reseeded';
      now: number;
      skewMs: number;
      /** How long the agent took, from the message to its answer; `kernel` of it reseeding the kernel. */
      guestMs?: { kernel: number; total: number };
    }
  /**
   * The processes the agent started to run the function (ActionLoop launchers), sent whenever
   * that set changes: they live between runs, unlike anything else the function leaves running.
   * `trees`: those among them whose children live on too (a Lambda bootstrap's, which may be in
   * the middle of asking for its next event).
   */
  | { type: 'processes'; pids: number[]; trees?: number[] };

export function encodeFrame(message: HostMessage | GuestMessage): Buffer {
  return encodeJsonFrame(JSON.stringify(message));
}

/** A frame around JSON text that is already serialised (a message built by hand). */
export function encodeJsonFrame(json: string): Buffer {
  const length = Buffer.byteLength(json, 'utf8');
  const frame = Buffer.allocUnsafe(4 + length);
  frame.writeUInt32BE(length, 0);
  frame.write(json, 4, 'utf8');
  return frame;
}

export class FrameError extends Error {
  /** The messages of the same chunk that came whole before the corrupt frame: they were sent before it. */
  decoded: unknown[] = [];
}

/** Reassembles frames from a byte stream; throws FrameError on a corrupt or oversized frame. */
export class FrameDecoder<T> {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;

  push(chunk: Buffer): T[] {
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    const messages: T[] = [];
    try {
      this.decodeInto(messages);
    } catch (error) {
      if (error instanceof FrameError) error.decoded = messages;
      throw error;
    }
    return messages;
  }

  private decodeInto(messages: T[]): void {
    while (this.bufferedBytes >= 4) {
      const head = this.peek(4);
      const length = head.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) throw new FrameError(`frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
      if (this.bufferedBytes < 4 + length) break;
      const frame = this.take(4 + length);
      let message: unknown;
      try {
        message = JSON.parse(frame.subarray(4).toString('utf8'));
      } catch {
        throw new FrameError('frame is not valid JSON');
      }
      if (typeof message !== 'object' || message === null || typeof (message as { type?: unknown }).type !== 'string') {
        throw new FrameError('frame is not a message');
      }
      messages.push(message as T);
    }
  }

  private peek(bytes: number): Buffer {
    if (this.buffered[0] && this.buffered[0].length >= bytes) return this.buffered[0];
    const joined = Buffer.concat(this.buffered);
    this.buffered = [joined];
    return joined;
  }

  private take(bytes: number): Buffer {
    const joined = this.buffered.length === 1 ? (this.buffered[0] as Buffer) : Buffer.concat(this.buffered);
    const frame = joined.subarray(0, bytes);
    const rest = joined.subarray(bytes);
    this.buffered = rest.length > 0 ? [rest] : [];
    this.bufferedBytes = rest.length;
    return frame;
  }
}
