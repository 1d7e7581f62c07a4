import { randomBytes, randomFillSync, randomUUID } from 'node:crypto';

/** Random bytes drawn ahead, 10 for each activation id: one draw from the system for 512 ids. */
const entropy = Buffer.alloc(10 * 512);
let entropyUsed = entropy.length;
let prefixMs = -1;
let prefix = '';

/**
 * OpenWhisk activation ids are 32 lowercase hex characters. These start with the time in ms (12
 * hex digits) followed by 20 random hex digits (80 bits): new ids land at the end of the database
 * index instead of at random pages, which makes storing an activation about twice as fast.
 */
export function newActivationId(): string {
  if (entropyUsed === entropy.length) {
    randomFillSync(entropy);
    entropyUsed = 0;
  }
  const now = Date.now();
  if (now !== prefixMs) {
    prefixMs = now;
    prefix = now.toString(16).padStart(12, '0');
  }
  const random = entropy.toString('hex', entropyUsed, entropyUsed + 10);
  entropyUsed += 10;
  return prefix + random;
}

// randomUUID draws from a buffered pool of entropy: much cheaper per call than randomBytes.
export function newRequestId(): string {
  return randomUUID().replaceAll('-', '');
}

/** A namespace credential in OpenWhisk's `uuid:key` form, the key being 64 characters. */
export function newCredentials(): { uuid: string; key: string } {
  return { uuid: randomUUID(), key: randomBytes(48).toString('base64url') };
}
