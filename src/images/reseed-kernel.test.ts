import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { KernelReseeder } from '../guest/reseed.js';
import { buildReseedHelper, canBuildReseedHelper } from './reseed-kernel.js';

// Only requests the helper refuses are sent: a valid one, run as root here, would reseed this
// host's kernel and set its clock.
describe('the kernel reseeding helper kept running (--serve)', { skip: canBuildReseedHelper() ? false : 'no gcc' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'isola-reseed-test-'));
  const helper = join(dir, 'reseed-kernel');
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** One request: 4-byte length, 8-byte ms, the entropy. */
  const request = (entropy: Buffer, ms: number) => {
    const header = Buffer.alloc(12);
    header.writeUInt32LE(entropy.length, 0);
    header.writeBigInt64LE(BigInt(ms), 4);
    return Buffer.concat([header, entropy]);
  };

  it('answers each request with a status byte, keeps serving, and exits at the end of its input', async () => {
    assert.ok(buildReseedHelper(helper), 'the helper builds');
    const child = spawn(helper, ['--serve'], { stdio: ['pipe', 'pipe', 'ignore'] });
    const statuses: number[] = [];
    const twoAnswers = new Promise<void>((resolve) =>
      child.stdout.on('data', (chunk: Buffer) => {
        statuses.push(...chunk);
        if (statuses.length >= 2) resolve();
      }),
    );
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    // Too little entropy: refused (2), and the helper waits for the next request.
    child.stdin.write(request(Buffer.alloc(8, 1), Date.now()));
    child.stdin.write(request(Buffer.alloc(16, 2), Date.now()));
    await twoAnswers;
    assert.deepEqual(statuses, [2, 2]);
    child.stdin.end();
    assert.equal(await exited, 0);
  });

  it('stops at a request longer than it takes', async () => {
    const child = spawn(helper, ['--serve'], { stdio: ['pipe', 'pipe', 'ignore'] });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    child.stdin.write(request(Buffer.alloc(600, 3), Date.now()));
    assert.equal(await exited, 2);
  });

  it("is the agent's way to reseed: false for a refused request or a helper that is gone", async (t) => {
    if (process.getuid?.() !== 0) return t.skip('the agent keeps the helper only as root');
    const reseeder = KernelReseeder.start(helper);
    assert.ok(reseeder?.running);
    assert.equal(reseeder.reseed(Buffer.alloc(8).toString('base64'), Date.now()), false);
    assert.ok(reseeder.running, 'a refused request leaves it running');
    reseeder.stop();
    const deadline = Date.now() + 10_000;
    while (reseeder.running && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
    assert.equal(reseeder.running, false);
    assert.equal(reseeder.reseed(Buffer.alloc(48).toString('base64'), Date.now()), false);
  });
});
