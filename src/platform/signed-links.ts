import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const LINKS_SECRET_FILE = 'links.secret';

/**
 * Links that work without credentials until they expire (Lambda's Code.Location, say): an
 * HMAC-SHA256 over what the link grants, keyed by a random secret kept in the data dir (mode
 * 600, made on first use). Each use signs under its own purpose, so that a signature made for
 * one can never pass for another.
 */
export class SignedLinks {
  private constructor(private readonly secret: Buffer) {}

  static forDataDir(dataDir: string): SignedLinks {
    const file = join(dataDir, LINKS_SECRET_FILE);
    try {
      writeFileSync(file, randomBytes(32).toString('base64url'), { mode: 0o600, flag: 'wx' });
    } catch (error) {
      // Made before (or by a second process just now): it is read below.
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const secret = readFileSync(file, 'utf8').trim();
    if (secret.length < 32) throw new Error(`${file} holds no usable secret: delete it and it is made again.`);
    return new SignedLinks(Buffer.from(secret, 'utf8'));
  }

  /**
   * For the servers of a cluster, which must verify each other's links: the key is derived from a
   * secret they all share (the operator token), under a purpose of its own.
   */
  static fromSharedSecret(shared: string): SignedLinks {
    if (shared.length < 16) throw new Error('The shared secret for signed links must have at least 16 characters.');
    return new SignedLinks(createHmac('sha256', shared).update('isola signed links').digest());
  }

  sign(purpose: string, fields: readonly string[]): string {
    return createHmac('sha256', this.secret)
      .update(JSON.stringify([purpose, ...fields]))
      .digest('base64url');
  }

  verify(purpose: string, fields: readonly string[], signature: string): boolean {
    const expected = Buffer.from(this.sign(purpose, fields), 'utf8');
    const given = Buffer.from(signature, 'utf8');
    return given.length === expected.length && timingSafeEqual(given, expected);
  }
}
