import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';

// What the process backend must withstand, end to end through a real server. As root (as here)
// every sandbox has its own uid, private /tmp, cgroup and parent-death signal.
const AS_ROOT = process.getuid?.() === 0;
const ROOT_ONLY = AS_ROOT ? false : 'needs root (per-sandbox uids, mount namespaces, cgroups)';
const SANDBOX_ROOT = join(tmpdir(), 'isola-sandboxes');

/**
 * Lets a function tell the test that it reached a point: it sets its process title to
 * `isola-hook:<name>;`, which this sees in the host's /proc (a process sandbox has no network to
 * call back on). `reached(name)` is registered before the call that will signal it, and resolves
 * once the title is seen.
 */
class Hooks {
  private readonly waiting = new Map<string, () => void>();
  private readonly hits = new Set<string>();
  private timer: NodeJS.Timeout | undefined;

  async start(): Promise<void> {
    this.timer = setInterval(() => this.scan(), 20);
  }

  /** Resolves when a function signals `name`; fails after a minute rather than hang a run. */
  reached(name: string): Promise<void> {
    if (this.hits.has(name)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the function never reached ${name}`)), 60_000);
      this.waiting.set(name, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
  }

  private scan(): void {
    if (this.waiting.size === 0) return;
    for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
      let cmdline: string;
      try {
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      const name = /^isola-hook:([^;]+);/.exec(cmdline)?.[1];
      if (!name || this.hits.has(name)) continue;
      this.hits.add(name);
      this.waiting.get(name)?.();
      this.waiting.delete(name);
    }
  }
}

// Function-side helpers. `hook` signals a point reached (see Hooks); `signal` is the same, for a
// function about to block its own event loop: setting the title is synchronous. One line each,
// so that the line numbers the tests expect stay put.
const HELPERS = `
const hook = (name) => { process.title = 'isola-hook:' + name + ';'; };
const signal = hook;
`;

/** Gone, or a zombie nobody reaps yet: either way it runs no more. */
function dead(pid: number): boolean {
  try {
    return /^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

function parentOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

/** Every file of that name under a directory tree (the sandboxes' directories). */
function findFiles(dir: string, name: string): string[] {
  const found: string[] = [];
  let entries: { name: string; isDirectory(): boolean }[];
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return found;
  }
  for (const entry of entries) {
    const path = join(dir, entry.name);
    if (entry.name === name) found.push(path);
    if (entry.isDirectory()) found.push(...findFiles(path, name));
  }
  return found;
}

function errorOf(record: ActivationRecord): string {
  return String((record.response.result as { error?: unknown } | undefined)?.error);
}

describe('process sandboxes under misbehaving functions', () => {
  let server: TestServer;
  const hooks = new Hooks();
  const deploy = async (name: string, code: string, limits: Record<string, number> = {}, auth?: string) => {
    const res = await server.request(
      'PUT',
      `/api/v1/namespaces/_/actions/${name}?overwrite=true`,
      {
        exec: { kind: 'nodejs:20', code: `${HELPERS}${code}` },
        limits: { memory: 128, timeout: 10_000, ...limits },
        annotations: [{ key: 'isolation', value: 'process' }],
      },
      auth ? { auth } : {},
    );
    assert.equal(res.status, 200, JSON.stringify(res.body));
  };
  const run = (name: string, params: Record<string, unknown> = {}, auth?: string) =>
    server.request<ActivationRecord>('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, params, auth ? { auth } : {});

  before(async () => {
    await hooks.start();
    server = await TestServer.start({ env: { ISOLA_PREWARM: 'process:0' } });
  });
  after(async () => {
    await server.dispose();
    await hooks.stop();
  });

  it("names the function's file with the right line and column in stack traces and syntax errors", async () => {
    await deploy('stacky', 'function main() {\n  return helper();\n}\nfunction helper() {\n  null.boom;\n}');
    const thrown = await run('stacky');
    assert.equal(thrown.body.response.status, 'application error');
    const logs = thrown.body.logs.join('\n');
    // Lines are counted in the code as deployed: the helpers above take the first three.
    assert.match(logs, /at helper \(stacky\.js:8:8\)/, logs);
    assert.match(logs, /at main \(stacky\.js:5:10\)/, logs);
    assert.doesNotMatch(logs, /isola-agent|agent\.cjs/, 'no frames of the agent');

    await deploy('broken', 'function main() {\n  return 1 +;\n}');
    const broken = await run('broken');
    assert.equal(broken.body.response.status, 'action developer error');
    assert.match(
      errorOf(broken.body),
      /^Initialization has failed due to: SyntaxError: Unexpected token ';' \(broken\.js:5:13\)$/,
    );
    const initLogs = broken.body.logs.map((line) => line.replace(/^\S+ stderr: /, ''));
    const at = initLogs.indexOf('broken.js:5:13');
    assert.ok(at >= 0, initLogs.join('\n'));
    assert.deepEqual(initLogs.slice(at + 1, at + 3), ['  return 1 +;', '            ^'], 'the line and a caret under the error');

    // An error at the end of the text is placed in the function's text, not past it.
    await deploy('unfinished', 'function main() {\n  return {};\n');
    const unfinished = await run('unfinished');
    assert.match(errorOf(unfinished.body), /SyntaxError: Unexpected end of input \(unfinished\.js:6:1\)/);
  });

  it('logs what leftover work prints or throws at the start of the next activation, marked as such', async () => {
    await deploy(
      'leftover',
      `function main(p) {
        if (p.leave) {
          setTimeout(() => console.log('printed by a timer'), 10);
          setTimeout(() => { throw new Error('thrown by a timer'); }, 20);
          setTimeout(() => hook(p.hook), 30);
        }
        return { n: p.n };
      }`,
    );
    const done = hooks.reached('leftover');
    const first = await run('leftover', { leave: true, n: 1, hook: 'leftover' });
    assert.equal(first.status, 200);
    await done;
    const next = await run('leftover', { n: 2 });
    assert.deepEqual(next.body.response.result, { n: 2 });
    const marker = `[after activation ${first.body.activationId} returned]`;
    const logs = next.body.logs;
    assert.ok(
      logs.some((line) => line.includes(`stdout: ${marker} printed by a timer`)),
      logs.join('\n'),
    );
    assert.ok(logs.some((line) => line.includes(`stderr: ${marker} Uncaught exception: Error: thrown by a timer`)));
    assert.ok(logs.some((line) => line.includes(`stderr: ${marker}     at Timeout.<anonymous> (leftover.js:`)));
    for (const line of [...first.body.logs, ...logs]) {
      if (/by a timer/.test(line)) assert.ok(line.includes(marker), `unmarked: ${line}`);
    }
  });

  it("clears an activation's timers at its deadline", async () => {
    await deploy(
      'ticker',
      `function main(p) {
        if (p.start) { globalThis.ticks = 0; setInterval(() => { globalThis.ticks++; }, 5); return {}; }
        const before = globalThis.ticks;
        return new Promise((resolve) => setTimeout(() => resolve({ grew: globalThis.ticks > before, ticks: globalThis.ticks }), 50));
      }`,
      { timeout: 1000 },
    );
    assert.equal((await run('ticker', { start: true })).status, 200);
    const stopped = await waitFor('the interval to be cleared', async () => {
      const probe = await run('ticker');
      const result = probe.body.response.result as { grew: boolean; ticks: number };
      assert.equal(annotation(probe.body, 'coldStart'), false, 'the same sandbox');
      return result.grew ? undefined : result;
    });
    assert.ok(stopped.ticks > 0, 'the interval ran before its deadline');
  });

  it("does not charge the next activation for an earlier one's leftover work", async () => {
    await deploy(
      'busyleft',
      `function main(p) {
        if (p.busy) {
          setTimeout(() => { signal(p.hook); const end = Date.now() + p.busy; while (Date.now() < end) {} }, 0);
          return { left: true };
        }
        return new Promise((resolve) => setTimeout(() => resolve({ served: true }), p.work));
      }`,
      { timeout: 4000 },
    );
    const busy = hooks.reached('busyleft');
    assert.equal((await run('busyleft', { busy: 3000, hook: 'busyleft' })).status, 200);
    await busy;
    // The sandbox is busy for about 3 s more; this call needs 2 s of its own 4.
    const next = await run('busyleft', { work: 2000 });
    assert.deepEqual(next.body.response.result, { served: true }, JSON.stringify(next.body.response));
    assert.equal(annotation(next.body, 'coldStart'), false);
  });

  it('does not charge a timeout to a call that found its sandbox stuck in leftover work past its deadline', async () => {
    await deploy(
      'stuck',
      `function main(p) {
        if (p.busy) {
          setTimeout(() => { signal(p.hook); const end = Date.now() + p.busy; while (Date.now() < end) {} }, 0);
          return { left: true };
        }
        return { served: true };
      }`,
      { timeout: 1500 },
    );
    const busy = hooks.reached('stuck');
    assert.equal((await run('stuck', { busy: 60_000, hook: 'stuck' })).status, 200);
    await busy;
    const victim = await run('stuck');
    assert.notEqual(annotation(victim.body, 'timeout'), true, 'not a timeout of its own');
    if (!victim.body.response.success) {
      assert.equal(victim.body.response.status, 'whisk internal error', JSON.stringify(victim.body.response));
      assert.match(errorOf(victim.body), /could not be run: .*leftover work/);
    }
    const after = await run('stuck');
    assert.deepEqual(after.body.response.result, { served: true });
  });

  it('truncates 100 MB of output at the log limit instead of dying', async () => {
    await deploy(
      'loud',
      `function main(p) {
        if (p.how === 'log') console.log('x'.repeat(100 * 1024 * 1024));
        else process.stdout.write(Buffer.alloc(100 * 1024 * 1024, 120));
        return { printed: true };
      }`,
      { memory: 256, logs: 1024 },
    );
    for (const how of ['log', 'write']) {
      const res = await run('loud', { how });
      assert.equal(res.status, 200, JSON.stringify(res.body.response));
      assert.deepEqual(res.body.response.result, { printed: true });
      const logs = res.body.logs;
      assert.match(logs.at(-1) ?? '', /Logs were truncated because the total bytes size exceeds the limit of 1048576 bytes\./);
      assert.ok(logs.join('\n').length < 2 * 1024 * 1024, 'what was kept stays near the limit');
      assert.equal(annotation(res.body, 'coldStart'), how === 'log', 'the sandbox survives');
    }
  });

  it('refuses a result over 1 MB or one that JSON cannot carry, with a clear error, and keeps the sandbox', async () => {
    await deploy(
      'results',
      `function main(p) {
        if (p.kind === 'huge') return { big: 'x'.repeat(100 * 1024 * 1024) };
        if (p.kind === 'over') return { big: 'x'.repeat(1024 * 1024) };
        if (p.kind === 'escaped') return { s: '\\u0001'.repeat(200000) };
        if (p.kind === 'cyclic') { const o = {}; o.self = o; return o; }
        if (p.kind === 'deep') { let o = {}; for (let i = 0; i < 100000; i++) o = { o }; return o; }
        return { fine: true };
      }`,
      { memory: 256 },
    );
    const expected: Record<string, RegExp> = {
      huge: /^The action produced a response that exceeded the allowed length: more than 1048576 bytes\.$/,
      over: /^The action produced a response that exceeded the allowed length: more than 1048576 bytes\.$/,
      // Escapes make the text longer than the values: its size is known once it is written.
      escaped: /^The action produced a response that exceeded the allowed length: 1200008 > 1048576 bytes\.$/,
      cyclic: /^The action produced a response that is not JSON: Converting circular structure to JSON/,
      deep: /^The action produced a response nested too deeply to be sent as JSON\.$/,
    };
    for (const [kind, message] of Object.entries(expected)) {
      const res = await run('results', { kind });
      assert.equal(res.body.response.success, false, kind);
      assert.match(errorOf(res.body), message, kind);
    }
    const fine = await run('results');
    assert.deepEqual(fine.body.response.result, { fine: true });
    assert.equal(annotation(fine.body, 'coldStart'), false, 'the sandbox was kept');
  });

  it('reports memory exhaustion in every form as exhausting the memory limit', { skip: ROOT_ONLY }, async () => {
    await deploy(
      'hungry',
      `function main(p) {
        const keep = [];
        if (p.kind === 'strings') { const s = 'xxxxxxxxxxxxxxxx'.repeat(1 << 20); for (;;) keep.push(s + keep.length); }
        if (p.kind === 'buffers') for (;;) keep.push(Buffer.alloc(8 << 20, 1));
        for (;;) keep.push(new Array(100000).fill(Math.random()));
      }`,
      { timeout: 30_000 },
    );
    for (const kind of ['strings', 'buffers', 'heap']) {
      const res = await run('hungry', { kind });
      assert.equal(res.body.response.status, 'action developer error', kind);
      assert.equal(errorOf(res.body), 'The action exhausted its memory limit of 128 MB and was aborted.', kind);
    }
  });

  it('stops every process a function started once its activation returns', { skip: ROOT_ONLY }, async () => {
    await deploy(
      'spawner',
      `const { spawn, execSync } = require('child_process');
      // A helper started while loading is part of what the function loaded: it stays.
      const helper = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' });
      helper.unref();
      function main(p) {
        if (!p.spawn) return { agent: process.pid, helper: helper.pid };
        const pids = [];
        for (let i = 0; i < 20; i++) { const c = spawn('sleep', ['1000'], { detached: true, stdio: 'ignore' }); c.unref(); pids.push(c.pid); }
        // An orphan: its parent shell exits at once.
        pids.push(Number(execSync('sleep 1000 > /dev/null 2>&1 & echo $!', { encoding: 'utf8' }).trim()));
        return { agent: process.pid, helper: helper.pid, pids };
      }`,
    );
    const res = await run('spawner', { spawn: true });
    const { agent, helper, pids } = res.body.response.result as { agent: number; helper: number; pids: number[] };
    assert.equal(pids.length, 21);
    await waitFor('the sleepers to be killed', async () => (pids.every(dead) ? true : undefined));
    const again = await run('spawner');
    assert.deepEqual(again.body.response.result, { agent, helper }, 'the agent itself lives on');
    assert.equal(dead(helper), false, 'the helper started while loading lives on');
  });

  it('gives each sandbox private /tmp, /var/tmp and /dev/shm, removed with it', { skip: ROOT_ONLY }, async () => {
    const name = `isola-private-${process.pid}-${Date.now()}`;
    await deploy(
      'writer',
      `const fs = require('fs');
      function main(p) {
        for (const dir of ['/tmp', '/var/tmp', '/dev/shm']) fs.writeFileSync(dir + '/' + p.name, 'secret');
        return { tmp: fs.readdirSync('/tmp') };
      }`,
    );
    const written = await run('writer', { name });
    assert.deepEqual(written.body.response.result, { tmp: [name] }, 'the sandbox starts with an empty /tmp');
    for (const dir of ['/tmp', '/var/tmp', '/dev/shm']) assert.equal(existsSync(join(dir, name)), false, `${dir} of the host`);

    const created = spawnSync(
      process.execPath,
      ['--import', 'tsx', 'src/cli/main.ts', 'namespace', 'create', 'other-tenant', '--data-dir', server.dataDir],
      { encoding: 'utf8' },
    );
    assert.equal(created.status, 0, created.stderr);
    const otherAuth = created.stdout.trim();
    await deploy(
      'reader',
      `const fs = require('fs');
      function main(p) {
        return Object.fromEntries(['/tmp', '/var/tmp', '/dev/shm'].map((dir) => {
          try { return [dir, fs.readFileSync(dir + '/' + p.name, 'utf8')]; } catch (e) { return [dir, e.code]; }
        }));
      }`,
      {},
      otherAuth,
    );
    const read = await run('reader', { name }, otherAuth);
    assert.deepEqual(read.body.response.result, { '/tmp': 'ENOENT', '/var/tmp': 'ENOENT', '/dev/shm': 'ENOENT' });

    assert.ok(findFiles(SANDBOX_ROOT, name).length > 0, 'the files are in the sandbox directory while it lives');
    assert.equal((await server.request('DELETE', '/api/v1/namespaces/_/actions/writer')).status, 200);
    await waitFor('the sandbox directory to be removed', async () =>
      findFiles(SANDBOX_ROOT, name).length === 0 ? true : undefined,
    );
  });

  it('records a sandbox killed mid-run as a failure and serves the next call', async () => {
    await deploy(
      'victim',
      `function main(p) {
        if (!p.hang) return { pid: process.pid };
        hook(p.hook);
        return new Promise(() => {});
      }`,
      { timeout: 60_000 },
    );
    const { pid } = (await run('victim')).body.response.result as { pid: number };
    const running = hooks.reached('victim');
    const pending = run('victim', { hang: true, hook: 'victim' });
    await running;
    process.kill(pid, 'SIGKILL');
    const killed = await pending;
    assert.equal(killed.status, 502);
    assert.equal(killed.body.response.status, 'action developer error');
    assert.match(errorOf(killed.body), /The action did not complete: The sandbox was killed by SIGKILL/);
    const stored = await server.request<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${killed.body.activationId}`);
    assert.equal(stored.body.response.status, 'action developer error', 'the failure is recorded');
    const next = await run('victim');
    assert.equal(next.status, 200);
    assert.notEqual((next.body.response.result as { pid: number }).pid, pid);
    assert.equal(annotation(next.body, 'coldStart'), true);
  });

  it('settles every run of a sandbox with concurrency 2 when one overruns its time', async () => {
    await deploy(
      'pair',
      `async function main(p) {
        if (p.wait) { hook(p.hook); await new Promise(() => {}); }
        if (p.spin) { signal(p.hook); while (true) {} }
        return { fine: true };
      }`,
      { timeout: 2000, concurrency: 2 },
    );
    // A waits (started), then B spins: A overruns first and takes the sandbox with it; B had begun.
    const waiting = hooks.reached('pair-wait');
    const a = run('pair', { wait: true, hook: 'pair-wait' });
    await waiting;
    const spinning = hooks.reached('pair-spin');
    const b = run('pair', { spin: true, hook: 'pair-spin' });
    await spinning;
    const [first, second] = await Promise.all([a, b]);
    assert.equal(annotation(first.body, 'timeout'), true, JSON.stringify(first.body.response));
    assert.equal(second.body.response.status, 'action developer error');
    // B is charged with A's overrun; only on a host so loaded that B's own deadline (a moment
    // after A's) had also passed when the sandbox went may it be B's own timeout.
    if (annotation(second.body, 'timeout') === true) assert.ok(second.body.duration >= 1900, JSON.stringify(second.body));
    else assert.match(errorOf(second.body), /another activation in it overran its time limit/);

    // A spins; B arrives while the agent cannot even begin it: B never started, so it is not
    // charged with anything (the platform may run it elsewhere).
    const spinFirst = hooks.reached('pair-spin-first');
    const c = run('pair', { spin: true, hook: 'pair-spin-first' });
    await spinFirst;
    const d = run('pair', {});
    const [spun, blocked] = await Promise.all([c, d]);
    assert.equal(annotation(spun.body, 'timeout'), true);
    assert.notEqual(annotation(blocked.body, 'timeout'), true);
    if (!blocked.body.response.success) {
      assert.equal(blocked.body.response.status, 'whisk internal error', JSON.stringify(blocked.body.response));
      assert.match(errorOf(blocked.body), /could not be run: .*before the run began/);
    }
    assert.deepEqual((await run('pair')).body.response.result, { fine: true });
  });

  it('survives a function that forges a frame on the channel', async () => {
    await deploy(
      'forger',
      `function main(p) {
        if (p.forge) {
          const body = Buffer.from('null');
          const head = Buffer.alloc(4);
          head.writeUInt32BE(body.length);
          require('fs').writeSync(1, Buffer.concat([head, body]));
          return new Promise(() => {});
        }
        return { fine: true };
      }`,
    );
    const forged = await run('forger', { forge: true });
    assert.equal(forged.body.response.status, 'action developer error');
    assert.match(errorOf(forged.body), /corrupt frame/);
    assert.deepEqual((await run('forger')).body.response.result, { fine: true });
  });
});

describe('a process sandbox outlives neither its server nor its activation', () => {
  it('dies with its server, even busy, when the server is killed with SIGKILL', { skip: ROOT_ONLY }, async () => {
    const hooks = new Hooks();
    await hooks.start();
    const server = await TestServer.start({ env: { ISOLA_PREWARM: 'process:0' } });
    let killed = false;
    try {
      const deployed = await server.deploy(
        'spin',
        `${HELPERS} function main(p) { if (p.spin) { signal(p.hook); while (true) {} } return { pid: process.pid }; }`,
        { limits: { memory: 128, timeout: 60_000 }, annotations: [{ key: 'isolation', value: 'process' }] },
      );
      assert.equal(deployed.status, 200);
      const { pid } = (await server.invoke<ActivationRecord>('spin')).body.response.result as { pid: number };
      const spinning = hooks.reached('spin');
      void server.invoke('spin', { spin: true, hook: 'spin' }).catch(() => undefined);
      await spinning;
      assert.equal(dead(pid), false, 'busy before the server goes');
      const serverPid = parentOf(pid);
      await server.kill();
      killed = true;
      await waitFor('the sandbox to die with its server', async () => (dead(pid) ? true : undefined));
      // What the dead server left (the sandbox's directory, cgroup and uid) goes at the next start.
      await server.restart();
      killed = false;
      const left = () => readdirSync(SANDBOX_ROOT).filter((entry) => entry.startsWith(`process-${serverPid}-`));
      await waitFor('the next server to sweep what the dead one left', async () => (left().length === 0 ? true : undefined));
    } finally {
      // A killed server has nothing left to stop.
      if (killed) rmSync(server.dataDir, { recursive: true, force: true });
      else await server.dispose();
      await hooks.stop();
    }
  });
});
