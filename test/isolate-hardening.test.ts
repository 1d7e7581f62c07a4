import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { lateOutputLine } from '../src/sandbox/backend.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

// Functions that misbehave under isolation "isolate", through a real server: each gets its own
// failure recorded, with the function's own words, and the server keeps serving.

/** The text of the activation's log lines, without the `<time> <stream>: ` prefix. */
const texts = (record: ActivationRecord) => record.logs.map((line) => line.replace(/^\S+ (stdout|stderr): /, ''));
const errorOf = (record: ActivationRecord) => String((record.response.result as { error?: unknown }).error);

/** The server's process: the one whose command line names its data directory. */
function serverPid(server: TestServer): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const command = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (command.includes('serve') && command.includes(server.dataDir)) return Number(entry);
    } catch {
      // The process ended while we looked.
    }
  }
  throw new Error('the server process was not found');
}

/** A field of /proc/<pid>/status, in bytes. */
function statusBytes(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} for ${pid}`);
  return Number(match[1]) * 1024;
}

describe('isolate hardening end to end', () => {
  let server: TestServer;
  const deploy = async (name: string, code: string, limits: Record<string, number> = {}) => {
    const res = await server.deploy(name, code, { limits: { memory: 64, timeout: 5000, ...limits } });
    assert.equal(res.status, 200, JSON.stringify(res.body));
  };
  const invoke = async (name: string, params: Record<string, unknown> = {}) => {
    const res = await server.invoke<ActivationRecord>(name, params);
    // 502 is the function's failure, as OpenWhisk answers it; anything else would be the platform's.
    assert.ok(res.status === 200 || res.status === 502, `${res.status}: ${JSON.stringify(res.body)}`);
    assert.notEqual(res.body.response.status, 'whisk internal error');
    return res.body;
  };

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_PREWARM: 'isolate:1' } });
  });
  after(async () => {
    await server.dispose();
  });

  it('reports the function\'s own error when its top-level code throws "timed out", and keeps a run\'s result past a rejection', async () => {
    await deploy(
      'says-timeout',
      'const ready = true;\nthrow new Error("Script execution timed out.");\nfunction main() { return {}; }',
    );
    const init = await invoke('says-timeout');
    assert.equal(init.response.status, 'action developer error');
    assert.equal(errorOf(init), 'Initialization has failed due to: Script execution timed out.');
    assert.equal(annotation(init, 'timeout'), undefined);
    assert.ok(texts(init).includes('    at Object.<anonymous> (says-timeout.js:2:7)'), texts(init).join('\n'));

    await deploy('says-memory', 'async function main() { Promise.reject(new Error("memory limit")); return { kept: true }; }');
    const rejected = await invoke('says-memory');
    assert.deepEqual(rejected.response, { status: 'success', success: true, result: { kept: true } });
    assert.equal(texts(rejected)[0], 'Unhandled rejection: Error: memory limit');
  });

  it('writes what a function printed and threw after it returned, marked, at the start of the next activation', async () => {
    const code = [
      'let n = 0;',
      'function main(p) {',
      '  const k = ++n;',
      '  if (p.later) setTimeout(() => { console.log("late", k); throw new Error("after return"); }, 5);',
      '  console.log("now", k);',
      '  return { k };',
      '}',
    ].join('\n');
    await deploy('leftover', code);
    const first = await invoke('leftover', { later: true });
    assert.deepEqual(texts(first), ['now 1']);
    const next = await waitFor('an activation with the leftover lines', async () => {
      const record = await invoke('leftover');
      return texts(record).some((line) => line.includes('late')) ? record : undefined;
    });
    const lines = texts(next);
    assert.equal(lines[0], lateOutputLine(first.activationId, 'late 1'));
    assert.equal(lines[1], lateOutputLine(first.activationId, 'Uncaught exception: Error: after return'));
    const column = (code.split('\n')[3]?.indexOf('new Error') ?? 0) + 1;
    assert.equal(lines[2], lateOutputLine(first.activationId, `    at leftover.js:4:${column}`));
    assert.match(lines.at(-1) ?? '', /^now \d+$/, 'the activation prints after the leftover lines');
    assert.equal(annotation(next, 'coldStart'), false);
  });

  it("shows the function's file, line and column in stack traces and syntax errors", async () => {
    await deploy('where', 'function main() { return { stack: new Error("here").stack }; }');
    const record = await invoke('where');
    assert.match(String((record.response.result as { stack: string }).stack), /^Error: here\n\s+at main \(where\.js:1:35\)/);

    await deploy('broken', 'function main() {\n  let x = ;\n}');
    const broken = await invoke('broken');
    assert.equal(broken.response.status, 'action developer error');
    assert.match(errorOf(broken), /^Initialization has failed due to: SyntaxError: Unexpected token ';' at broken\.js:2:11$/);
    assert.deepEqual(texts(broken).slice(0, 3), ['broken.js:2', '  let x = ;', '          ^']);
    assert.ok(texts(broken).includes('    at broken.js:2:11'));
  });

  it('caps logs inside the isolate: a 200 MB line costs the server next to nothing', async (t) => {
    await deploy(
      'loud',
      'function main(p) { if (p.quiet) return {}; const chunk = "x".repeat(1 << 20); console.log(...Array(200).fill(chunk)); return { printed: 200 << 20 }; }',
      { logs: 64, memory: 512, timeout: 60_000 },
    );
    await invoke('loud', { quiet: true });
    const pid = serverPid(server);
    // The peak since now: writing 5 to clear_refs resets VmHWM to the current RSS.
    writeFileSync(`/proc/${pid}/clear_refs`, '5');
    const before = statusBytes(pid, 'VmRSS');
    const record = await invoke('loud');
    const peak = statusBytes(pid, 'VmHWM');
    assert.deepEqual(record.response.result, { printed: 200 << 20 });
    assert.match(
      record.logs.at(-1) ?? '',
      /stderr: Logs were truncated because the total bytes size exceeds the limit of 65536 bytes\.$/,
    );
    assert.ok(record.logs.join('\n').length < 70_000);
    const grewMb = (peak - before) / 2 ** 20;
    t.diagnostic(`the server's RSS peaked ${grewMb.toFixed(1)} MB above where it was`);
    assert.ok(grewMb < 50, `the server's RSS peaked ${grewMb.toFixed(1)} MB above where it was, for a 200 MB line`);
  });

  it('gives the function no way to reach the platform through globals', async () => {
    await deploy(
      'curious',
      [
        'const ours = () => Object.getOwnPropertyNames(globalThis).filter((name) => /isola/i.test(name));',
        'const atTopLevel = ours();',
        'function main(p) {',
        '  const seen = { atTopLevel, atRun: ours() };',
        '  for (const name of ["__isola_run", "__isola_start", "__isola_take", "__isola_fire", "__isola_resolve", "__isola_require", "__isola_entry_module"])',
        '    globalThis[name] = () => { throw new Error("hijacked"); };',
        '  JSON.stringify = () => "hijacked";',
        '  return { ...seen, n: p.n };',
        '}',
      ].join('\n'),
    );
    for (const n of [1, 2, 3]) {
      const record = await invoke('curious', { n });
      assert.deepEqual(record.response.result, {
        atTopLevel: [],
        atRun:
          n === 1
            ? []
            : [
                '__isola_run',
                '__isola_start',
                '__isola_take',
                '__isola_fire',
                '__isola_resolve',
                '__isola_require',
                '__isola_entry_module',
              ],
        n,
      });
    }
  });

  it('records results that are not JSON as errors of the function and keeps serving', async () => {
    await deploy(
      'unserialisable',
      'function main(p) { if (p.kind === "cycle") { const v = {}; v.v = v; return v; } if (p.kind === "bigint") return { n: 1n }; return { fine: true }; }',
    );
    for (const [kind, message] of [
      ['cycle', /^The function's result cannot be serialised as JSON: Converting circular structure to JSON/],
      ['bigint', /^The function's result cannot be serialised as JSON: Do not know how to serialize a BigInt$/],
    ] as const) {
      const record = await invoke('unserialisable', { kind });
      assert.equal(record.response.status, 'application error');
      assert.match(errorOf(record), message);
      assert.deepEqual((await invoke('unserialisable')).response.result, { fine: true });
    }
  });
});
