/**
 * Just enough of the WebAssembly binary format to read what a module imports and how much
 * linear memory it declares, and to turn the memory it defines into an import. The engine
 * validates everything else when it compiles the module.
 */

export const PAGE_BYTES = 65536;

export interface MemoryLimits {
  min: number;
  max?: number;
  shared: boolean;
  memory64: boolean;
}

export type ImportKind = 'function' | 'table' | 'memory' | 'global' | 'tag';

export interface ModuleImport {
  module: string;
  name: string;
  kind: ImportKind;
  memory?: MemoryLimits;
}

export interface ModuleInfo {
  imports: ModuleImport[];
  /** Memories the module defines itself (not imported). */
  memories: MemoryLimits[];
}

export class WasmFormatError extends Error {}

const CUSTOM_SECTION = 0;
const TYPE_SECTION = 1;
const IMPORT_SECTION = 2;
const MEMORY_SECTION = 5;
const IMPORT_KINDS: ImportKind[] = ['function', 'table', 'memory', 'global', 'tag'];

class Reader {
  offset = 0;
  constructor(readonly bytes: Uint8Array) {}

  byte(): number {
    if (this.offset >= this.bytes.length) throw new WasmFormatError('unexpected end of the module');
    return this.bytes[this.offset++] as number;
  }

  u32(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      const b = this.byte();
      result |= (b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result >>> 0;
      shift += 7;
      if (shift > 35) throw new WasmFormatError('malformed LEB128 integer');
    }
  }

  /** memory64 limits are u64; larger than 2^53 pages is nonsense anyway. */
  u64(): number {
    let result = 0;
    let factor = 1;
    for (;;) {
      const b = this.byte();
      result += (b & 0x7f) * factor;
      if ((b & 0x80) === 0) return result;
      factor *= 128;
      if (factor > 2 ** 70) throw new WasmFormatError('malformed LEB128 integer');
    }
  }

  name(): string {
    const length = this.u32();
    const end = this.offset + length;
    if (end > this.bytes.length) throw new WasmFormatError('name runs past the end of the module');
    const text = new TextDecoder('utf-8', { fatal: false }).decode(this.bytes.subarray(this.offset, end));
    this.offset = end;
    return text;
  }

  limits(): MemoryLimits {
    const flags = this.byte();
    if (flags > 0x07) throw new WasmFormatError(`unknown limits flags 0x${flags.toString(16)}`);
    const memory64 = (flags & 0x04) !== 0;
    const read = () => (memory64 ? this.u64() : this.u32());
    const min = read();
    const max = flags & 0x01 ? read() : undefined;
    return { min, ...(max !== undefined ? { max } : {}), shared: (flags & 0x02) !== 0, memory64 };
  }
}

interface Section {
  id: number;
  /** Offset of the section id byte. */
  start: number;
  contentStart: number;
  end: number;
}

function sections(bytes: Uint8Array): Section[] {
  if (bytes.length < 8 || bytes[0] !== 0 || bytes[1] !== 0x61 || bytes[2] !== 0x73 || bytes[3] !== 0x6d) {
    throw new WasmFormatError('not a WebAssembly module (the magic number \\0asm is missing)');
  }
  if (bytes[4] !== 1 || bytes[5] !== 0 || bytes[6] !== 0 || bytes[7] !== 0) {
    throw new WasmFormatError('unsupported WebAssembly binary version (only version 1 modules; components are not supported)');
  }
  const reader = new Reader(bytes);
  reader.offset = 8;
  const result: Section[] = [];
  while (reader.offset < bytes.length) {
    const start = reader.offset;
    const id = reader.byte();
    const size = reader.u32();
    const contentStart = reader.offset;
    const end = contentStart + size;
    if (end > bytes.length) throw new WasmFormatError(`section ${id} runs past the end of the module`);
    result.push({ id, start, contentStart, end });
    reader.offset = end;
  }
  return result;
}

export function parseModule(bytes: Uint8Array): ModuleInfo {
  const info: ModuleInfo = { imports: [], memories: [] };
  for (const section of sections(bytes)) {
    const reader = new Reader(bytes.subarray(0, section.end));
    reader.offset = section.contentStart;
    if (section.id === IMPORT_SECTION) {
      const count = reader.u32();
      for (let i = 0; i < count; i++) {
        const module = reader.name();
        const name = reader.name();
        const kindByte = reader.byte();
        const kind = IMPORT_KINDS[kindByte];
        if (!kind) throw new WasmFormatError(`unknown import kind ${kindByte}`);
        const entry: ModuleImport = { module, name, kind };
        if (kind === 'function') reader.u32();
        else if (kind === 'table') {
          reader.byte();
          reader.limits();
        } else if (kind === 'memory') entry.memory = reader.limits();
        else if (kind === 'global') {
          reader.byte();
          reader.byte();
        } else {
          reader.byte();
          reader.u32();
        }
        info.imports.push(entry);
      }
    } else if (section.id === MEMORY_SECTION) {
      const count = reader.u32();
      for (let i = 0; i < count; i++) info.memories.push(reader.limits());
    }
  }
  return info;
}

function leb(value: number): number[] {
  const out: number[] = [];
  let rest = value >>> 0;
  do {
    let b = rest & 0x7f;
    rest >>>= 7;
    if (rest !== 0) b |= 0x80;
    out.push(b);
  } while (rest !== 0);
  return out;
}

function name(text: string): number[] {
  const bytes = [...new TextEncoder().encode(text)];
  return [...leb(bytes.length), ...bytes];
}

/** Where a host-provided memory is imported from: the same import a module may declare itself. */
export const MEMORY_IMPORT = { module: 'env', name: 'memory' } as const;
/** The host function a metered module calls when its fuel is spent (see metering.ts). */
export const REFUEL_IMPORT = { module: 'isola', name: 'refuel' } as const;

export interface MemoryImport {
  /** The module, its memory now imported as `env.memory`, or as it was when it has no memory of its own. */
  bytes: Uint8Array;
  /** The limits of the memory it defined, its maximum capped; none when it defines no memory. */
  memory?: { initial: number; maximum: number };
}

/**
 * Returns the module with the memory it defines turned into an import of `env.memory` with the
 * same minimum and a maximum of at most `maxPages`, so that `memory.grow` past the function's
 * memory limit fails inside the module instead of taking host memory, and so that the host can
 * hand each run a memory it made (see memory-pool.ts) rather than the engine making a new one per
 * instance. Memory index 0 is the same memory before and after (a module has one memory at most),
 * so exports, data segments and code that name it are unchanged. Imported memories are the host's
 * to size already.
 */
export function importOwnMemory(bytes: Uint8Array, maxPages: number): MemoryImport {
  const all = sections(bytes);
  const memorySection = all.find((s) => s.id === MEMORY_SECTION);
  if (!memorySection) return { bytes };
  const reader = new Reader(bytes.subarray(0, memorySection.end));
  reader.offset = memorySection.contentStart;
  const count = reader.u32();
  if (count === 0) return { bytes };
  if (count > 1) throw new WasmFormatError('a module may define one memory at most');
  const limits = reader.limits();
  if (limits.memory64 || limits.shared) throw new WasmFormatError('64-bit and shared memories are not supported');
  const memory = { initial: limits.min, maximum: Math.min(limits.max ?? maxPages, maxPages) };
  const entry = [
    ...name(MEMORY_IMPORT.module),
    ...name(MEMORY_IMPORT.name),
    0x02,
    0x01,
    ...leb(memory.initial),
    ...leb(memory.maximum),
  ];

  // The import section: the existing one with the entry added last (after any imported function,
  // so function indices do not move), or a new one right after the type section.
  const importSection = all.find((s) => s.id === IMPORT_SECTION);
  let imports: Uint8Array[];
  let importStart: number;
  let importEnd: number;
  if (importSection) {
    const importReader = new Reader(bytes.subarray(0, importSection.end));
    importReader.offset = importSection.contentStart;
    const count = importReader.u32();
    const existing = bytes.subarray(importReader.offset, importSection.end);
    const head = leb(count + 1);
    imports = [
      Uint8Array.from([IMPORT_SECTION, ...leb(head.length + existing.length + entry.length), ...head]),
      existing,
      Uint8Array.from(entry),
    ];
    importStart = importSection.start;
    importEnd = importSection.end;
  } else {
    const content = [...leb(1), ...entry];
    imports = [Uint8Array.from([IMPORT_SECTION, ...leb(content.length), ...content])];
    const typeSection = all.find((s) => s.id === TYPE_SECTION);
    const firstOther = all.find((s) => s.id !== CUSTOM_SECTION && s.id !== TYPE_SECTION);
    importStart = typeSection?.end ?? firstOther?.start ?? bytes.length;
    importEnd = importStart;
  }
  // The import section comes before the memory section, which is left out.
  const parts = [
    bytes.subarray(0, importStart),
    ...imports,
    bytes.subarray(importEnd, memorySection.start),
    bytes.subarray(memorySection.end),
  ];
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return { bytes: out, memory };
}
