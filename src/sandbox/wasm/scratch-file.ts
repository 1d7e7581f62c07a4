/**
 * An open file of a run's in-memory scratch directory whose contents grow geometrically. The WASI
 * shim's own open file makes a new buffer of the exact new size and copies the whole file into it
 * at every write that extends it: a file written in 4 KB pieces is copied once per piece (a 64 KB
 * file: 16 buffers and 544 KB copied). Here the file's bytes are a view of the first `size` bytes
 * of a larger buffer, which doubles when a write passes its end (up to the scratch directory's cap),
 * so extending costs a copy now and then. Reads hand out views instead of copies: the shim copies
 * them into the module's memory at once.
 *
 * The view keeps the shim's file shape (`file.data.byteLength` is the file's size), so stat, seek
 * and the scratch directory's accounting (run-module.ts) see the same sizes as before. The bytes of
 * the buffer past the file's end are always zero, so a file extended over them reads zeros, as a
 * hole must.
 */
import { type File, OpenFile } from '@bjorn3/browser_wasi_shim';

const ERRNO_SUCCESS = 0;
const ERRNO_BADF = 8;

/** Sets the file's size: its bytes from 0 to `size`, zeros past the old end. */
export function resizeFile(file: File, size: number, capBytes: number): void {
  const data = file.data;
  if (size <= data.byteLength) {
    // Past the end must stay zero for a later extension over it.
    data.fill(0, size);
    file.data = data.subarray(0, size);
    return;
  }
  const buffer = data.buffer;
  if (data.byteOffset === 0 && !(buffer instanceof SharedArrayBuffer) && size <= buffer.byteLength) {
    file.data = new Uint8Array(buffer, 0, size);
    return;
  }
  const capacity = Math.max(size, Math.min(Math.max(data.byteLength, buffer.byteLength) * 2, capBytes));
  const grown = new Uint8Array(capacity);
  grown.set(data);
  file.data = grown.subarray(0, size);
}

export class ScratchOpenFile extends OpenFile {
  /** `capBytes`: the scratch directory's cap, beyond which a buffer never grows ahead of need. */
  constructor(
    file: File,
    private readonly capBytes: number,
  ) {
    super(file);
  }

  override fd_write(data: Uint8Array): { ret: number; nwritten: number } {
    const written = this.fd_pwrite(data, this.file_pos);
    if (written.ret === ERRNO_SUCCESS) this.file_pos += BigInt(written.nwritten);
    return written;
  }

  override fd_pwrite(data: Uint8Array, offset: bigint): { ret: number; nwritten: number } {
    if (this.file.readonly) return { ret: ERRNO_BADF, nwritten: 0 };
    const start = Number(offset);
    const end = start + data.byteLength;
    if (end > this.file.data.byteLength) resizeFile(this.file, end, this.capBytes);
    this.file.data.set(data, start);
    return { ret: ERRNO_SUCCESS, nwritten: data.byteLength };
  }

  override fd_read(size: number): { ret: number; data: Uint8Array } {
    const read = this.fd_pread(size, this.file_pos);
    this.file_pos += BigInt(read.data.byteLength);
    return read;
  }

  override fd_pread(size: number, offset: bigint): { ret: number; data: Uint8Array } {
    const start = Math.min(Number(offset), this.file.data.byteLength);
    return { ret: ERRNO_SUCCESS, data: this.file.data.subarray(start, start + size) };
  }

  override fd_allocate(offset: bigint, length: bigint): number {
    const end = Number(offset + length);
    if (end > this.file.data.byteLength) resizeFile(this.file, end, this.capBytes);
    return ERRNO_SUCCESS;
  }

  override fd_filestat_set_size(size: bigint): number {
    resizeFile(this.file, Number(size), this.capBytes);
    return ERRNO_SUCCESS;
  }
}
