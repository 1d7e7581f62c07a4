import { randomBytes, randomUUID } from 'node:crypto';

/** OpenWhisk activation ids are 32 lowercase hex characters. */
export function newActivationId(): string {
  return randomUUID().replaceAll('-', '');
}

export function newRequestId(): string {
  return randomBytes(16).toString('hex');
}

/** A namespace credential in OpenWhisk's `uuid:key` form, the key being 64 characters. */
export function newCredentials(): { uuid: string; key: string } {
  return { uuid: randomUUID(), key: randomBytes(48).toString('base64url') };
}
