import assert from 'node:assert/strict';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { killProcessesOf, processStartTime, SANDBOX_UID_FIRST, UID_LEASE_DIR, UidAllocator } from './host-ids.js';

const AS_ROOT = process.getuid?.() === 0;
// A small corner of the sandbox range, far from where the host-wide allocator usually lands.
const FIRST = SANDBOX_UID_FIRST + 49_900;

describe('uid leases', () => {
  const base = mkdtempSync(join(tmpdir(), 'isola-uid-test-'));
  after(() => rmSync(base, { recursive: true, force: true }));
  let n = 0;
  const fresh = () => join(base, `case-${++n}`);

  it('keeps leases in a run directory, not in a world-writable one', () => {
    assert.ok(UID_LEASE_DIR.startsWith('/run/'), UID_LEASE_DIR);
  });

  it('refuses a lease directory that is a symbolic link, writable by others, or owned by someone else', () => {
    const real = fresh();
    mkdirSync(real, { mode: 0o700 });
    const link = fresh();
    symlinkSync(real, link);
    assert.throws(() => new UidAllocator(link, FIRST, 10), /not a directory/);

    const open = fresh();
    mkdirSync(open);
    chmodSync(open, 0o777);
    assert.throws(() => new UidAllocator(open, FIRST, 10), /writable by other users/);

    if (AS_ROOT) {
      const foreign = fresh();
      mkdirSync(foreign, { mode: 0o700 });
      chownSync(foreign, 65534, 65534);
      assert.throws(() => new UidAllocator(foreign, FIRST, 10), /owned by uid 65534/);
    }

    const unsafeParent = fresh();
    mkdirSync(unsafeParent);
    chmodSync(unsafeParent, 0o777);
    assert.throws(() => new UidAllocator(join(unsafeParent, 'run', 'uids'), FIRST, 10), /not a safe place/);
  });

  it('creates a private lease directory and hands out distinct uids across allocators', () => {
    const dir = fresh();
    const one = new UidAllocator(dir, FIRST, 6);
    const two = new UidAllocator(dir, FIRST, 6);
    const got = [one.acquire(), two.acquire(), one.acquire(), two.acquire(), one.acquire(), two.acquire()];
    assert.equal(new Set(got).size, 6);
    assert.throws(() => one.acquire(), /No free sandbox user id/);
    const lease = readFileSync(join(dir, String(got[0])), 'utf8');
    assert.equal(lease, `${process.pid} ${processStartTime(process.pid)}`, 'the lease names this server and when it started');
    for (const uid of got) one.release(uid);
    assert.deepEqual(readdirSync(dir), []);
  });

  it('acts only on regular files named after a uid of its range', () => {
    const dir = fresh();
    const allocator = new UidAllocator(dir, FIRST, 10);
    // A dead owner: pid 2^22 + 1 is above the kernel's pid limit.
    const deadOwner = String(2 ** 22 + 1);
    for (const name of [String(FIRST - 1), String(FIRST + 10), `0${FIRST + 1}`, 'not-a-uid'])
      writeFileSync(join(dir, name), deadOwner);
    mkdirSync(join(dir, String(FIRST + 2)));
    symlinkSync(join(dir, String(FIRST - 1)), join(dir, String(FIRST + 3)));
    assert.equal(allocator.sweep(), 0);
    assert.equal(readdirSync(dir).length, 6, 'nothing was reclaimed');
  });

  it('reclaims the lease of a server that is gone, or whose pid now names another process', () => {
    const dir = fresh();
    const allocator = new UidAllocator(dir, FIRST, 10);
    writeFileSync(join(dir, String(FIRST)), String(2 ** 22 + 1));
    writeFileSync(join(dir, String(FIRST + 1)), `${process.pid} 1`);
    writeFileSync(join(dir, String(FIRST + 2)), `${process.pid} ${processStartTime(process.pid)}`);
    assert.equal(allocator.sweep(), 2);
    assert.deepEqual(readdirSync(dir), [String(FIRST + 2)], "a live server's lease stands");
  });

  it('never kills the processes of a uid outside the sandbox range', () => {
    assert.throws(() => killProcessesOf(SANDBOX_UID_FIRST - 1), /not a sandbox uid/);
    assert.throws(() => killProcessesOf(Number.NaN), /not a sandbox uid/);
  });
});
