import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { LINKS_SECRET_FILE, SignedLinks } from './signed-links.js';

describe('signed links', () => {
  const dirs: string[] = [];
  const dataDir = () => {
    const dir = mkdtempSync(join(tmpdir(), 'isola-links-'));
    dirs.push(dir);
    return dir;
  };
  after(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it('verify what they signed, for the purpose they signed it, and nothing changed', () => {
    const links = SignedLinks.forDataDir(dataDir());
    const signature = links.sign('code', ['guest', 'fn', '0.0.1']);
    assert.match(signature, /^[\w-]{43}$/);
    assert.ok(links.verify('code', ['guest', 'fn', '0.0.1'], signature));
    assert.ok(!links.verify('other', ['guest', 'fn', '0.0.1'], signature));
    assert.ok(!links.verify('code', ['guest', 'fn', '0.0.2'], signature));
    // Fields are kept apart: moving a character from one field to the next changes the signature.
    assert.ok(!links.verify('code', ['guestf', 'n', '0.0.1'], signature));
    assert.ok(!links.verify('code', ['guest', 'fn', '0.0.1'], signature.slice(1)));
    assert.ok(!links.verify('code', ['guest', 'fn', '0.0.1'], ''));
  });

  it("in a cluster, verify each other's links by the secret they share, and no one else's", () => {
    const shared = 'a-shared-operator-token-0123456789';
    const signature = SignedLinks.fromSharedSecret(shared).sign('code', ['a']);
    assert.ok(SignedLinks.fromSharedSecret(shared).verify('code', ['a'], signature));
    assert.ok(!SignedLinks.fromSharedSecret(`${shared}x`).verify('code', ['a'], signature));
    assert.ok(!SignedLinks.forDataDir(dataDir()).verify('code', ['a'], signature));
    assert.throws(() => SignedLinks.fromSharedSecret('short'), /at least 16/);
  });

  it('keep their secret in the data dir, private, across restarts; another data dir signs differently', () => {
    const dir = dataDir();
    const first = SignedLinks.forDataDir(dir);
    assert.equal(statSync(join(dir, LINKS_SECRET_FILE)).mode & 0o777, 0o600);
    const signature = first.sign('code', ['a']);
    assert.ok(SignedLinks.forDataDir(dir).verify('code', ['a'], signature));
    assert.ok(!SignedLinks.forDataDir(dataDir()).verify('code', ['a'], signature));
  });

  it('refuse a secret file that holds no secret', () => {
    const dir = dataDir();
    writeFileSync(join(dir, LINKS_SECRET_FILE), 'short\n');
    assert.throws(() => SignedLinks.forDataDir(dir), /no usable secret/);
  });
});
