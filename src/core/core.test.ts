import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IsolaError } from './errors.js';
import { newActivationId, newRequestId } from './ids.js';
import { resolveIsolation, resolveKind } from './kinds.js';
import { DEFAULT_LIMITS, resolveLimits } from './limits.js';
import { assertEntityName, assertEntryPoint, isValidEntityName } from './names.js';
import { compareVersions, nextVersion } from './types.js';

describe('entity names', () => {
  it('accepts what OpenWhisk accepts', () => {
    for (const name of ['hello', 'a', 'my-action_2', 'with space', 'x@y.z', '_private']) assert.ok(isValidEntityName(name), name);
  });
  it('rejects empty, too long, leading punctuation, trailing space, slashes and control characters', () => {
    for (const name of ['', 'a'.repeat(257), '-lead', 'trail ', 'a/b', 'a\nb', '../etc', 'é']) {
      assert.ok(!isValidEntityName(name), JSON.stringify(name));
    }
  });
  it('throws a 400 that names the problem', () => {
    assert.throws(
      () => assertEntityName('action', 'a/b'),
      (e: unknown) => e instanceof IsolaError && e.status === 400 && /action name "a\/b" is not valid/.test(e.message),
    );
  });
  it('allows only identifiers as entry points', () => {
    assert.equal(assertEntryPoint('handler'), 'handler');
    assert.throws(() => assertEntryPoint('x; process.exit()'), IsolaError);
  });
});

describe('kinds and isolation', () => {
  it('resolves aliases real clients send', () => {
    assert.equal(resolveKind('nodejs:default'), 'nodejs:20');
    assert.equal(resolveKind('nodejs'), 'nodejs:20');
    assert.equal(resolveKind('python'), 'python:3');
    assert.equal(resolveKind('java:default'), 'java:17');
    assert.throws(() => resolveKind('cobol:85'), /not supported\. Supported kinds: nodejs:20, python:3/);
    assert.throws(() => resolveKind('__proto__'), /not supported/);
  });
  it('defaults isolation by kind and refuses combinations that cannot run', () => {
    assert.equal(resolveIsolation('nodejs:20', undefined), 'isolate');
    assert.equal(resolveIsolation('wasm', undefined), 'wasm');
    assert.equal(resolveIsolation('nodejs:20', 'microvm'), 'microvm');
    assert.throws(() => resolveIsolation('nodejs:20', 'wasm'), /cannot run under isolation "wasm"/);
    assert.throws(() => resolveIsolation('nodejs:20', 'docker'), /must be one of/);
    assert.throws(() => resolveIsolation('nodejs:20', 7), /must be one of/);
    assert.equal(resolveIsolation('python:3', undefined), 'process');
    assert.throws(
      () => resolveIsolation('go:1.19', 'isolate'),
      /Kind go:1\.19 cannot run under isolation "isolate"; it runs under: process, container, gvisor, microvm/,
    );
    // A Node.js zip reads files at run time: no isolate for it.
    assert.equal(resolveIsolation('nodejs:20', undefined, true), 'process');
    assert.throws(
      () => resolveIsolation('nodejs:20', 'isolate', true),
      /A nodejs:20 zip cannot run under isolation "isolate"; it runs under: process/,
    );
  });
});

describe('limits', () => {
  it('fills defaults and keeps given values', () => {
    assert.deepEqual(resolveLimits(undefined), DEFAULT_LIMITS);
    assert.equal(resolveLimits({ memory: 128 }).memory, 128);
    assert.equal(resolveLimits({ timeout: 500 }, { ...DEFAULT_LIMITS, memory: 64 }).memory, 64);
  });
  it('rejects out-of-range and fractional values naming the limit and its range', () => {
    assert.throws(() => resolveLimits({ memory: 1 }), /limits\.memory must be an integer from 16 to 8192 MB; got 1/);
    assert.throws(() => resolveLimits({ timeout: 1e9 }), /limits\.timeout/);
    assert.throws(() => resolveLimits({ concurrency: 1.5 }), /limits\.concurrency/);
  });
});

describe('versions', () => {
  it('bump the patch number and order numerically', () => {
    assert.equal(nextVersion(undefined), '0.0.1');
    assert.equal(nextVersion('0.0.9'), '0.0.10');
    assert.ok(compareVersions('0.0.10', '0.0.9') > 0);
    assert.equal(compareVersions('1.2.3', '1.2.3'), 0);
  });
});

describe('ids', () => {
  it('makes activation ids of 32 hex digits that start with the time, and request ids of 32 hex digits', () => {
    const before = Date.now();
    // More than one draw of entropy (512 ids each).
    const ids = Array.from({ length: 1200 }, newActivationId);
    for (const id of ids) {
      assert.match(id, /^[0-9a-f]{32}$/);
      const ms = Number.parseInt(id.slice(0, 12), 16);
      assert.ok(ms >= before && ms <= Date.now(), `${id} starts with the time`);
    }
    assert.equal(new Set(ids).size, ids.length);
    assert.match(newRequestId(), /^[0-9a-f]{32}$/);
  });
});
