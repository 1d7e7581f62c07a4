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
  it('counts the limit in UTF-8 bytes, not UTF-16 code units', () => {
    // Each line is 33 bytes of timestamp and stream, then 60 characters of 3 bytes each: 213
    // bytes but only 93 code units, so a 500-byte limit holds two lines, not five.
    const logs = new LogCollector(500);
    for (let i = 0; i < 5; i++) logs.sink('stdout', `${'€'.repeat(60)}\n`);
    const lines = logs.finish();
    assert.equal(lines.length, 3);
    assert.match(lines[2] ?? '', /Logs were truncated because the total bytes size exceeds the limit of 500 bytes/);
    const kept = lines.slice(0, 2).reduce((sum, line) => sum + Buffer.byteLength(line), 0);
    assert.ok(kept <= 500, `kept ${kept} bytes`);
  });
  it('flushes an unfinished line once it is over the limit in bytes', () => {
    const logs = new LogCollector(300);
    logs.sink('stdout', '€'.repeat(120));
    const lines = logs.finish();
    assert.equal(lines.length, 1);
    assert.match(lines[0] ?? '', /Logs were truncated/);
  });
});
