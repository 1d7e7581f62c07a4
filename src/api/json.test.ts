import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IsolaError } from '../core/errors.js';
import { MAX_JSON_DEPTH } from '../core/limits.js';
import { parseJson } from './json.js';

function refusal(text: string): string {
  try {
    parseJson(text);
  } catch (error) {
    assert.ok(error instanceof IsolaError, `not a client error: ${String(error)}`);
    assert.equal(error.status, 400);
    return error.message;
  }
  assert.fail(`accepted: ${text}`);
}

describe('parseJson', () => {
  it('reads plain JSON, with escapes and with keys that only look like the prototype', () => {
    assert.deepEqual(parseJson('{"name":"x","n":[1,2,{"a":null}]}'), { name: 'x', n: [1, 2, { a: null }] });
    assert.deepEqual(parseJson('{"text":"caf\\u00e9","proto":"__proto__"}'), { text: 'café', proto: '__proto__' });
    assert.deepEqual(parseJson('{"__proto": 1, "proto__": 2}'), { __proto: 1, proto__: 2 });
  });

  it('refuses a __proto__ key written plainly or with unicode escapes, at any depth', () => {
    assert.match(refusal('{"__proto__":{"polluted":true}}'), /__proto__/);
    assert.match(refusal('{"a":[{"__proto__":1}]}'), /__proto__/);
    assert.match(refusal('{"\\u005f_proto__":{"polluted":true}}'), /__proto__/);
    assert.match(refusal('{"\\u005F\\u005Fproto\\u005f\\u005f":1}'), /__proto__/);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  it('refuses malformed and too deeply nested JSON', () => {
    assert.match(refusal('{"a":'), /malformed/);
    assert.match(refusal(`${'['.repeat(MAX_JSON_DEPTH + 1)}${']'.repeat(MAX_JSON_DEPTH + 1)}`), /nested more than/);
  });
});
