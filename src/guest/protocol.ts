/**
 * The framed protocol between the platform and the guest agent. Every frame is a 4-byte
 * big-endian length followed by that many bytes of UTF-8 JSON. The same frames travel over a
 * child's stdio, a container's stdio or a microVM's virtio-serial port.
 */

export const AGENT_PROTOCOL_VERSION = 1;
export const MAX_FRAME_BYTES = 64 * 1024 * 1024;

export type HostMessage =
  | { type: 'init'; code: string; main: string; binary: boolean; env: Record<string, string> }
  | { type: 'run'; id: string; params: unknown; deadline: number; env: Record<string, string> }
  | { type: 'ping'; id: string }
  /** After a snapshot restore: fresh entropy (48 bytes, base64) and the host's time (ms). */
  | { type: 'reseed'; entropy: string; now: number };

export type GuestMessage =
  | { type: 'hello'; protocol: number; pid: number; node: string }
  | { type: 'ready' }
  | { type: 'initError'; error: string }
  | { type: 'log'; id?: string; stream: 'stdout' | 'stderr'; text: string }
  | { type: 'result'; id: string; result: unknown }
  | { type: 'error'; id: string; error: unknown }
  | { type: 'pong'; id: string }
  | { type: 'reseeded'; now: number; skewMs: number };

export function encodeFrame(message: HostMessage | GuestMessage): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32BE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

export class FrameError extends Error {}

/** Reassembles frames from a byte stream; throws FrameError on a corrupt or oversized frame. */
export class FrameDecoder<T> {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;

  push(chunk: Buffer): T[] {
    this.buffered.push(chunk);
    this.bufferedBytes += chunk.length;
    const messages: T[] = [];
    while (this.bufferedBytes >= 4) {
      const head = this.peek(4);
      const length = head.readUInt32BE(0);
      if (length > MAX_FRAME_BYTES) throw new FrameError(`frame of ${length} bytes exceeds ${MAX_FRAME_BYTES}`);
      if (this.bufferedBytes < 4 + length) break;
      const frame = this.take(4 + length);
      try {
        messages.push(JSON.parse(frame.subarray(4).toString('utf8')) as T);
      } catch {
        throw new FrameError('frame is not valid JSON');
      }
    }
    return messages;
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
