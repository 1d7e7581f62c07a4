/**
 * Linear memories kept for the next run on the same thread. A new memory per instance is the
 * largest part of a short run here: the engine reserves its address space, and every page the run
 * touches is then a page fault in a fresh mapping (measured on these hosts: about 0.6 ms for the
 * 192 KB a `scratch` run touches, against 0.003 ms to zero and touch a kept one), and the mapping
 * is unmapped again after a garbage collection. A memory is given back only by a run that ended
 * (never by one abandoned mid-way) and is zeroed before it is kept, so the next run sees what a
 * new memory holds: zeros, then its own data segments, written when it is instantiated.
 *
 * What differs from a new memory: a kept one may start larger than the module's minimum (it
 * keeps the size an earlier run grew it to, at most MAX_KEPT_BYTES), as any imported memory may;
 * its maximum, the function's limit, is the same.
 */
/** Memories larger than this are left to the garbage collector: zeroing them costs more, and they hold host memory. */
export const MAX_KEPT_BYTES = 8 * 1024 * 1024;
/** At most this many bytes of kept memories per thread, all limits together. */
export const MAX_POOL_BYTES = 16 * 1024 * 1024;

export interface MemoryLimits {
  /** Pages. */
  initial: number;
  /** Pages. */
  maximum: number;
}

/**
 * One kept memory per set of limits at most: a thread makes one run at a time, which takes the
 * memory and gives it back when it ends.
 */
export class MemoryPool {
  /** Kept memories by their limits, the most recently given last. */
  private readonly kept = new Map<string, WebAssembly.Memory>();
  private keptBytes = 0;

  constructor(
    private readonly maxKeptBytes = MAX_KEPT_BYTES,
    private readonly maxPoolBytes = MAX_POOL_BYTES,
  ) {}

  /** Bytes held by kept memories. */
  get bytes(): number {
    return this.keptBytes;
  }

  /** A zeroed memory with these limits: the kept one, or a new one. */
  take(limits: MemoryLimits): WebAssembly.Memory {
    const name = key(limits);
    const memory = this.kept.get(name);
    if (!memory) return new WebAssembly.Memory(limits);
    this.kept.delete(name);
    this.keptBytes -= memory.buffer.byteLength;
    return memory;
  }

  /**
   * Takes back the memory of a run that ended: zeroed and kept if it is small enough, otherwise
   * dropped. The least recently given make room.
   */
  give(limits: MemoryLimits, memory: WebAssembly.Memory): void {
    const bytes = memory.buffer.byteLength;
    if (bytes > this.maxKeptBytes || bytes > this.maxPoolBytes) return;
    new Uint8Array(memory.buffer).fill(0);
    const name = key(limits);
    const previous = this.kept.get(name);
    if (previous) {
      this.kept.delete(name);
      this.keptBytes -= previous.buffer.byteLength;
    }
    for (const [oldest, kept] of this.kept) {
      if (this.keptBytes + bytes <= this.maxPoolBytes) break;
      this.kept.delete(oldest);
      this.keptBytes -= kept.buffer.byteLength;
    }
    this.kept.set(name, memory);
    this.keptBytes += bytes;
  }
}

function key(limits: MemoryLimits): string {
  return `${limits.initial}:${limits.maximum}`;
}
