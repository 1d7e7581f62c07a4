import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const API_DIR = fileURLToPath(new URL('.', import.meta.url));

describe('the doors', () => {
  it('reach the store only through the platform', () => {
    const offenders = readdirSync(API_DIR, { recursive: true, encoding: 'utf8' })
      .filter((file) => file.endsWith('.ts'))
      .filter((file) => /from\s+['"](\.\.\/)+store\//.test(readFileSync(join(API_DIR, file), 'utf8')));
    assert.deepEqual(offenders, []);
  });
});
