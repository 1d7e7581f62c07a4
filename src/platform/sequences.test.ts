// The sequence rules that end-to-end runs cannot reach: a cycle only racing updates could store.
// The real paths (create checks, runs, records) are tested against a server in
// test/openwhisk-resources.test.ts.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { testFunction } from '../api/door-testing.js';
import type { ActionVersion, ActivationRecord } from '../core/types.js';
import { checkSequence, componentRef, Sequences } from './sequences.js';

const stored = (name: string, sequence?: string[]): ActionVersion => ({
  ...testFunction,
  name,
  ...(sequence ? { sequence } : {}),
});

describe('sequences', () => {
  it('reads components as OpenWhisk names them', () => {
    assert.deepEqual(componentRef('/_/a', 'guest'), { namespace: 'guest', name: 'a' });
    assert.deepEqual(componentRef('a', 'guest'), { namespace: 'guest', name: 'a' });
    assert.deepEqual(componentRef('pkg/a', 'guest'), { namespace: 'guest', name: 'pkg/a' });
    assert.deepEqual(componentRef('/guest/pkg/a', 'guest'), { namespace: 'guest', name: 'pkg/a' });
    // Another namespace's action is named from this one, and only through a shared package.
    assert.deepEqual(componentRef('/other/pkg/a', 'guest'), { namespace: 'guest', name: 'other/pkg/a' });
    assert.throws(() => componentRef('/other/a', 'guest'), /not in a package/);
    assert.throws(() => componentRef('/guest', 'guest'), /not valid/);
    assert.throws(() => componentRef('/guest/a/b/c', 'guest'), /not valid/);
    assert.throws(() => componentRef('/_/..', 'guest'), /not valid/);
  });

  it('counts the actions nested sequences run, each repetition included', async () => {
    const actions = new Map([
      ['a', stored('a')],
      [
        'ten',
        stored(
          'ten',
          Array.from({ length: 10 }, () => '/guest/a'),
        ),
      ],
    ]);
    const resolve = async (ref: { name: string }) => actions.get(ref.name);
    const self = { namespace: 'guest', name: 'new' };
    assert.deepEqual(await checkSequence(self, ['/_/ten', 'a'], resolve), ['/guest/ten', '/guest/a']);
    const five = Array.from({ length: 5 }, () => '/_/ten');
    assert.equal((await checkSequence(self, five, resolve)).length, 5);
    await assert.rejects(checkSequence(self, [...five, '/_/a'], resolve), /at most 50 actions/);
  });

  it('stops a stored cycle at run time instead of recursing without end', async () => {
    // Two updates that raced each other: each passed its check against the other's old version.
    const actions = new Map([
      ['x', stored('x', ['/guest/y'])],
      ['y', stored('y', ['/guest/x'])],
    ]);
    const records: ActivationRecord[] = [];
    const sequences = new Sequences({
      resolve: async (ref) => actions.get(ref.name),
      runAction: async () => assert.fail('no action is in the cycle'),
      store: async (record) => {
        records.push(record);
      },
    });
    const record = await sequences.run(stored('x', ['/guest/y']), {
      params: {},
      subject: 'guest',
      activationId: 'f'.repeat(32),
      accepted: Date.now(),
      annotations: [],
    });
    assert.equal(record.response.success, false);
    assert.match(JSON.stringify(record.response.result), /nests more than 50 sequences/);
    assert.equal(records.length, 51, 'each nested run has its record, the outermost included');
  });
});
