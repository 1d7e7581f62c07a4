import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildAgent } from '../../guest/bundle.js';
import type { FunctionCode, LogSink, RunRequest, Sandbox } from '../backend.js';
import { RUNNING_AS_ROOT, SANDBOX_UID_FIRST, UidAllocator } from '../host-ids.js';
import { ProcessBackend } from './process-backend.js';

// The sandbox itself, without a server: real agent processes, driven the way the scheduler does.
const base = mkdtempSync(join(tmpdir(), 'isola-process-test-'));
const agentPath = buildAgent(join(base, 'runtime'));

function code(source: string, extra: Partial<FunctionCode> = {}): FunctionCode {
  return {
    key: 'test/fn@0.0.1#r',
    kind: 'nodejs:20',
    code: source,
    binary: false,
    main: 'main',
    filename: 'fn.js',
    env: {},
    logLimitBytes: 64 * 1024,
    ...extra,
  };
}

function collect(): { sink: LogSink; lines: string[] } {
  const lines: string[] = [];
  return { sink: (stream, text) => lines.push(`${stream}: ${text}`), lines };
}

let counter = 0;
function request(params: Record<string, unknown>, onLog: LogSink, timeoutMs = 10_000): RunRequest {
  return { activationId: `act${++counter}`, params, deadline: Date.now() + timeoutMs, env: {}, onLog };
}

describe('process sandboxes', () => {
  let backend: ProcessBackend;
  const made: Sandbox[] = [];
  before(() => {
    backend = new ProcessBackend({ agentPath, sandboxRoot: join(base, 'sandboxes') });
  });
  after(async () => {
    // Whatever a failed test left running goes too.
    await Promise.all(made.map((sandbox) => sandbox.destroy()));
    rmSync(base, { recursive: true, force: true });
  });

  async function create(): Promise<Sandbox> {
    const sandbox = await backend.create({ memoryMb: 128 });
    made.push(sandbox);
    return sandbox;
  }

  async function loaded(source: string): Promise<Sandbox> {
    const sandbox = await create();
    const init = await sandbox.init(code(source), Date.now() + 10_000, () => {});
    assert.deepEqual(init, { ok: true });
    return sandbox;
  }

  it('leaves nothing behind when it fails before its process exists', async () => {
    const sandboxRoot = join(base, 'early-failure');
    const leases = join(base, 'early-failure-uids');
    const failing = new ProcessBackend({
      agentPath: join(base, 'no-such-agent.cjs'),
      sandboxRoot,
      ...(RUNNING_AS_ROOT ? { uids: new UidAllocator(leases, SANDBOX_UID_FIRST + 49_800, 10) } : {}),
    });
    await assert.rejects(failing.create({ memoryMb: 64 }), /ENOENT/);
    assert.deepEqual(readdirSync(sandboxRoot), [], 'no sandbox directory');
    if (RUNNING_AS_ROOT) assert.deepEqual(readdirSync(leases), [], 'no uid lease');
  });

  it('settles a run whose sandbox exits, and says how it ended', async () => {
    const sandbox = await loaded('function main() { process.exit(3); }');
    const outcome = await sandbox.run(request({}, () => {}));
    assert.equal(outcome.kind, 'crash');
    assert.match(outcome.kind === 'crash' ? outcome.reason : '', /exited with code 3/);
    assert.equal(sandbox.alive, false);
    assert.equal((await sandbox.run(request({}, () => {}))).kind, 'not-started', 'a dead sandbox begins nothing');
  });

  it('settles an initialisation and a run when the sandbox is destroyed under them', async () => {
    const stuck = await create();
    const init = stuck.init(code('while (true) {}'), Date.now() + 60_000, () => {});
    await stuck.destroy();
    assert.equal((await init).ok, false);

    const sandbox = await loaded("function main() { console.log('running'); return new Promise(() => {}); }");
    let running: () => void = () => {};
    const begun = new Promise<void>((resolve) => {
      running = resolve;
    });
    const pending = sandbox.run(request({}, () => running()));
    await begun;
    await sandbox.destroy();
    assert.equal((await pending).kind, 'crash', 'a run that had begun');

    const idle = await loaded('function main() { return {}; }');
    const unsent = idle.run(request({}, () => {}));
    await idle.destroy();
    assert.ok(['crash', 'not-started', 'result'].includes((await unsent).kind), 'settled, whenever the destroy came');
  });

  it('times out an initialisation that does not finish', async () => {
    const sandbox = await create();
    const init = await sandbox.init(code('while (true) {}'), Date.now() + 300, () => {});
    assert.deepEqual(init, { ok: false, kind: 'timeout', error: 'Initialization did not finish in time.' });
  });

  it('holds the output of leftover work, within the log limit, for the next run', async () => {
    const sandbox = await create();
    const limit = 4096;
    const init = await sandbox.init(
      code(
        `function main(p) {
          if (p.flood) setTimeout(() => { for (let i = 0; i < 1000; i++) console.log('late line', i); }, 0);
          // A run long enough for the flood to happen during it, if it has not yet.
          if (p.wait) return new Promise((resolve) => setTimeout(() => resolve({}), 50));
          return {};
        }`,
        { logLimitBytes: limit },
      ),
      Date.now() + 10_000,
      () => {},
    );
    assert.deepEqual(init, { ok: true });
    const flood = request({ flood: true }, collect().sink);
    await sandbox.run(flood);
    // Whatever the flood printed lands at the start of one of the next two runs.
    const next = collect();
    await sandbox.run(request({ wait: true }, next.sink));
    await sandbox.run(request({}, next.sink));
    const late = next.lines.join('');
    assert.match(late, /late line 0\n/);
    for (const line of late.split('\n').filter(Boolean)) {
      assert.ok(line.includes(`[after activation ${flood.activationId} returned]`), `unmarked: ${line}`);
    }
    // What the function printed, without the marks, stays within its limit (plus one notice).
    const printed = late
      .split('\n')
      .filter(Boolean)
      .map((line) => line.replace(/^std(out|err): \[after activation \S+ returned\] /, ''));
    assert.ok(printed.join('\n').length < limit + 200, `held ${printed.join('\n').length} characters`);
    assert.match(late, /Logs were truncated|Further output was dropped/);
    await sandbox.destroy();
  });
});
