import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { File } from '@bjorn3/browser_wasi_shim';
import { resizeFile, ScratchOpenFile } from './scratch-file.js';

const CAP = 1 << 20;
const pattern = (length: number, seed: number) => Uint8Array.from({ length }, (_, i) => (i * 31 + seed) & 0xff);

describe('wasm scratch file', () => {
  it('reads back what was written in pieces, with the size and position of the bytes written', () => {
    const file = new File(new ArrayBuffer(0));
    const open = new ScratchOpenFile(file, CAP);
    const data = pattern(65536 + 100, 1);
    for (let offset = 0; offset < data.length; offset += 4096) {
      assert.deepEqual(open.fd_write(data.subarray(offset, offset + 4096)), {
        ret: 0,
        nwritten: Math.min(4096, data.length - offset),
      });
    }
    assert.equal(file.size, BigInt(data.length));
    assert.equal(open.fd_tell().offset, BigInt(data.length));
    const reader = new ScratchOpenFile(file, CAP);
    const back: Uint8Array[] = [];
    for (;;) {
      const { ret, data: piece } = reader.fd_read(5000);
      assert.equal(ret, 0);
      if (piece.length === 0) break;
      back.push(piece.slice());
    }
    assert.deepEqual(Buffer.concat(back), Buffer.from(data));
  });

  it('grows its buffer geometrically: a file written in 4 KB pieces is reallocated a few times, not once a piece', () => {
    const file = new File(new ArrayBuffer(0));
    const open = new ScratchOpenFile(file, CAP);
    const buffers = new Set<ArrayBufferLike>();
    for (let offset = 0; offset < 65536; offset += 4096) {
      open.fd_write(pattern(4096, offset));
      buffers.add(file.data.buffer);
    }
    // 4, 8, 16, 32 and 64 KB.
    assert.equal(buffers.size, 5);
  });

  it('never grows a buffer ahead of need past the scratch cap', () => {
    const file = new File(new ArrayBuffer(0));
    const open = new ScratchOpenFile(file, 10_000);
    open.fd_write(pattern(6000, 0));
    open.fd_write(pattern(3000, 0));
    assert.equal(file.data.buffer.byteLength, 10_000);
    assert.equal(file.data.byteLength, 9000);
  });

  it('reads zeros where nothing was written: past a shrink, and in a hole left by writing past the end', () => {
    const file = new File(new ArrayBuffer(0));
    const open = new ScratchOpenFile(file, CAP);
    open.fd_write(pattern(3000, 7));
    assert.equal(open.fd_filestat_set_size(100n), 0);
    assert.equal(file.size, 100n);
    assert.equal(open.fd_pwrite(Uint8Array.of(9), 2000n).ret, 0);
    assert.equal(file.size, 2001n);
    const content = open.fd_pread(5000, 0n).data;
    assert.deepEqual(content.subarray(0, 100), pattern(100, 7));
    assert.ok(
      content.subarray(100, 2000).every((b) => b === 0),
      'the bytes cut off are not seen again',
    );
    assert.equal(content[2000], 9);
    assert.equal(open.fd_allocate(0n, 4000n), 0);
    assert.equal(file.size, 4000n);
    assert.ok(open.fd_pread(2000, 2001n).data.every((b) => b === 0));
  });

  it('refuses writes to a read-only file and reads nothing past the end', () => {
    const file = new File(pattern(10, 0), { readonly: true });
    const open = new ScratchOpenFile(file, CAP);
    assert.equal(open.fd_write(Uint8Array.of(1)).ret, 8);
    assert.equal(open.fd_pread(10, 50n).data.length, 0);
    resizeFile(file, 4, CAP);
    assert.deepEqual(file.data, pattern(4, 0));
  });
});
