import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LogCollector } from './logs.js';

describe('log collector', () => {
  it('splits writes into timestamped lines per stream and keeps unfinished lines', () => {
    const logs = new LogCollector(10_000);
    logs.sink('stdout', 'one\ntw');
    logs.sink('stderr', 'err\n');
    logs.sink('stdout', 'o\nthree');
    const lines = logs.finish();
    assert.deepEqual(
      lines.map((l) => l.replace(/^\S+ /, '')),
      ['stdout: one', 'stderr: err', 'stdout: two', 'stdout: three'],
    );
    assert.match(lines[0] ?? '', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /);
  });
  it('stops at the limit and says so once', () => {
    const logs = new LogCollector(200);
    for (let i = 0; i < 100; i++) logs.sink('stdout', `line ${i}\n`);
    const lines = logs.finish();
    assert.ok(lines.length < 10);
    assert.match(lines.at(-1) ?? '', /Logs were truncated because the total bytes size exceeds the limit of 200 bytes/);
  });
});
