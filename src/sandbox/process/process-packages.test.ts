import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { strToU8, zipSync } from 'fflate';
import { waitFor } from '../../../test/helpers/server-process.js';
import { buildAgent } from '../../guest/bundle.js';
import type { FunctionPackage } from '../../guest/protocol.js';
import type { FunctionCode, LogSink, RunOutcome, Sandbox } from '../backend.js';
import { RUNNING_AS_ROOT } from '../host-ids.js';
import { ProcessBackend } from './process-backend.js';

// Packaged functions in process sandboxes: the init frame carries the package, and the
// launchers the agent starts live between runs while what they leave behind does not.
const base = mkdtempSync(join(tmpdir(), 'isola-process-packages-'));
const agentPath = buildAgent(join(base, 'runtime'));
const launchers = fileURLToPath(new URL('../../guest/launchers/', import.meta.url));

// op meet: waits (a while at most) until the run tagged \`peer\` has arrived too: two runs that
// both return met while running at once.
const PYTHON = `import os, subprocess, sys, time
def main(args):
    if args.get('op') == 'meet':
        open('meet-' + args['tag'], 'w').close()
        deadline = time.time() + 20
        while not os.path.exists('meet-' + args['peer']) and time.time() < deadline:
            time.sleep(0.01)
        return {'me': os.getpid(), 'argv': sys.argv}
    if args.get('op') == 'spawn':
        child = subprocess.Popen(['/bin/sleep', '300'])
        return {'child': child.pid, 'me': os.getpid()}
    return {'me': os.getpid(), 'argv': sys.argv}
`;

function zip(files: Record<string, string | Uint8Array>): string {
  const entries: Record<string, Uint8Array> = {};
  for (const [name, data] of Object.entries(files)) entries[name] = typeof data === 'string' ? strToU8(data) : data;
  return Buffer.from(zipSync(entries)).toString('base64');
}

function code(pkg: FunctionPackage, extra: Partial<FunctionCode> = {}): FunctionCode {
  return {
    key: 'test/pkg@0.0.1#r',
    kind: 'python:3',
    code: '',
    binary: false,
    main: 'main',
    filename: 'fn.py',
    env: {},
    logLimitBytes: 64 * 1024,
    package: pkg,
    memoryMb: 128,
    concurrency: 2,
    ...extra,
  };
}

let counter = 0;
let meetings = 0;
/** Two runs that must be served at once. */
function meet(sandbox: Sandbox): Promise<RunOutcome[]> {
  const a = `a${++meetings}`;
  const b = `b${meetings}`;
  return Promise.all([run(sandbox, { op: 'meet', tag: a, peer: b }), run(sandbox, { op: 'meet', tag: b, peer: a })]);
}

function run(sandbox: Sandbox, params: Record<string, unknown>, onLog: LogSink = () => {}): Promise<RunOutcome> {
  return sandbox.run({ activationId: `pkg${++counter}`, params, deadline: Date.now() + 30_000, env: {}, onLog });
}

function resultOf(outcome: RunOutcome): Record<string, unknown> {
  assert.equal(outcome.kind, 'result', JSON.stringify(outcome));
  return (outcome as Extract<RunOutcome, { kind: 'result' }>).result as Record<string, unknown>;
}

/** Gone, or a zombie its parent has not collected yet. */
function stopped(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

describe('packaged functions in process sandboxes', () => {
  let backend: ProcessBackend;
  const made: Sandbox[] = [];
  before(() => {
    backend = new ProcessBackend({ agentPath, sandboxRoot: join(base, 'sandboxes') });
  });
  after(async () => {
    await Promise.all(made.map((sandbox) => sandbox.destroy()));
    rmSync(base, { recursive: true, force: true });
  });

  async function loaded(pkg: FunctionPackage, memoryMb = 128, extra: Partial<FunctionCode> = {}): Promise<Sandbox> {
    const sandbox = await backend.create({ memoryMb });
    made.push(sandbox);
    const logs: string[] = [];
    const init = await sandbox.init(code(pkg, { memoryMb, ...extra }), Date.now() + 30_000, (_stream, text) => logs.push(text));
    assert.deepEqual(init, { ok: true }, logs.join(''));
    return sandbox;
  }

  const python: FunctionPackage = {
    zip: zip({ 'launcher.py': readFileSync(join(launchers, 'launcher.py')), '__main__.py': PYTHON }),
    command: ['/usr/bin/python3', '-u', 'launcher.py', 'main', '--memory={{memoryMb}}'],
    ack: true,
  };

  it('forwards the package, the memory limit and the concurrency to the agent', async () => {
    const sandbox = await loaded(python, 96);
    const [a, b] = await meet(sandbox);
    assert.ok(a && b);
    assert.deepEqual(resultOf(a).argv, ['launcher.py', 'main', '--memory=96']);
    assert.notEqual(resultOf(a).me, resultOf(b).me, 'two launchers for two activations at once');
  });

  it('keeps the launchers between runs and stops what they leave behind', async () => {
    const sandbox = await loaded(python);
    const first = resultOf(await run(sandbox, { op: 'spawn' }));
    const launcher = first.me as number;
    const stray = first.child as number;
    if (RUNNING_AS_ROOT && existsSync('/sys/fs/cgroup')) {
      await waitFor('the stray process to be stopped', async () => (stopped(stray) ? true : undefined));
    }
    const second = resultOf(await run(sandbox, {}));
    assert.equal(second.me, launcher, 'the same launcher served the next run');
    assert.equal(stopped(launcher), false);
    // A launcher started on demand after the initialisation is spared too.
    const [x, y] = await meet(sandbox);
    assert.ok(x && y);
    const pids = [resultOf(x).me, resultOf(y).me] as number[];
    assert.equal(new Set(pids).size, 2);
    const third = await meet(sandbox);
    assert.deepEqual(new Set(third.map((outcome) => resultOf(outcome).me)), new Set(pids), 'both launchers survived the reap');
  });

  describe('a runtime started ahead', () => {
    const runtime = {
      id: 'python:3@test',
      zip: zip({ 'launcher.py': readFileSync(join(launchers, 'launcher.py')) }),
      command: ['/usr/bin/python3', '-u', 'launcher.py'],
    };
    const built: FunctionPackage = { ...python, runtime: { id: runtime.id, args: ['main'] } };

    async function blank(): Promise<Sandbox> {
      const sandbox = await backend.create({ memoryMb: 128, kind: 'python:3', ahead: true });
      made.push(sandbox);
      sandbox.prestart?.(runtime, 128);
      return sandbox;
    }

    async function initOf(sandbox: Sandbox, pkg: FunctionPackage, extra: Partial<FunctionCode> = {}) {
      const logs: string[] = [];
      const outcome = await sandbox.init(code(pkg, extra), Date.now() + 30_000, (_stream, text) => logs.push(text));
      return { outcome, logs: logs.join('') };
    }

    it('loads a package built for it, with the environment its own launcher would have', async () => {
      const sandbox = await blank();
      const source = `import os, sys
def main(args):
    return {'argv': sys.argv, 'cwd': os.getcwd(), 'home': os.environ.get('HOME'), 'name': os.environ.get('__OW_ACTION_NAME'), 'ahead': '__ISOLA_WAIT_FOR_LOAD' in os.environ}
`;
      const pkg = { ...built, zip: zip({ 'launcher.py': readFileSync(join(launchers, 'launcher.py')), '__main__.py': source }) };
      const { outcome, logs } = await initOf(sandbox, pkg, { env: { __OW_ACTION_NAME: '/guest/ahead' }, concurrency: 1 });
      assert.deepEqual(outcome, { ok: true }, logs);
      const result = resultOf(await run(sandbox, {}));
      // Started with no function name: the process that was waiting, not the package's own launcher.
      assert.deepEqual(result.argv, ['launcher.py']);
      assert.equal(result.cwd, result.home, 'runs in the function directory, which is its HOME');
      assert.match(String(result.cwd), /function-/);
      assert.equal(result.name, '/guest/ahead');
      assert.equal(result.ahead, false);
    });

    it('starts the package own launchers beside it for concurrent runs', async () => {
      const sandbox = await blank();
      assert.deepEqual((await initOf(sandbox, built)).outcome, { ok: true });
      const [a, b] = await meet(sandbox);
      assert.ok(a && b);
      const argvs = [resultOf(a).argv, resultOf(b).argv].map((argv) => JSON.stringify(argv)).sort();
      const expected = [JSON.stringify(['launcher.py']), JSON.stringify(['launcher.py', 'main', '--memory=128'])];
      assert.deepEqual(argvs, expected.sort());
    });

    it('is not used by a package built for another runtime', async () => {
      const sandbox = await blank();
      const other = { ...python, runtime: { id: 'python:3@other', args: ['main'] } };
      assert.deepEqual((await initOf(sandbox, other, { concurrency: 1 })).outcome, { ok: true });
      assert.deepEqual(resultOf(await run(sandbox, {})).argv, ['launcher.py', 'main', '--memory=128']);
    });

    it("reports a function that does not load with the interpreter's own words", async () => {
      const sandbox = await blank();
      const broken = {
        ...built,
        zip: zip({ 'launcher.py': readFileSync(join(launchers, 'launcher.py')), '__main__.py': 'def main(args:\n' }),
      };
      const { outcome } = await initOf(sandbox, broken);
      assert.equal(outcome.ok, false);
      assert.match((outcome as { error: string }).error, /SyntaxError/);
    });
  });

  it('runs a Java function under the sandbox limits', async () => {
    const dir = join(base, 'java');
    mkdirSync(join(dir, 'launcher'), { recursive: true });
    const gson = '/usr/share/java/gson.jar';
    execFileSync('/usr/bin/javac', [
      '-proc:none',
      '-cp',
      gson,
      '-d',
      join(dir, 'launcher'),
      join(launchers, 'IsolaLauncher.java'),
    ]);
    const launcherFiles: Record<string, Uint8Array> = {};
    for (const name of readdirSync(join(dir, 'launcher')))
      launcherFiles[`launcher/${name}`] = readFileSync(join(dir, 'launcher', name));
    mkdirSync(join(dir, 'src'));
    const source = join(dir, 'src', 'Hello.java');
    const text = `import com.google.gson.JsonObject;
public class Hello {
  public static JsonObject main(JsonObject args) {
    JsonObject out = new JsonObject();
    out.addProperty("greeting", "héllo " + args.get("name").getAsString());
    out.addProperty("maxHeapMb", Runtime.getRuntime().maxMemory() / (1024 * 1024));
    out.addProperty("classPath", System.getProperty("java.class.path"));
    out.addProperty("name", System.getenv("__OW_ACTION_NAME"));
    return out;
  }
}
`;
    writeFileSync(source, text);
    execFileSync('/usr/bin/javac', ['-proc:none', '-cp', gson, '-d', join(dir, 'classes'), source]);
    const pkg: FunctionPackage = {
      zip: zip({
        ...launcherFiles,
        'gson.jar': readFileSync(gson),
        'function.jar': zipSync({ 'Hello.class': readFileSync(join(dir, 'classes', 'Hello.class')) }),
      }),
      command: [
        '/usr/bin/java',
        '-XX:MaxRAM={{memoryMb}}m',
        '-XX:+UseSerialGC',
        '-XX:TieredStopAtLevel=1',
        '-Xshare:auto',
        '-cp',
        'launcher:gson.jar:function.jar',
        'IsolaLauncher',
        'Hello',
      ],
      ack: true,
    };
    const sandbox = await loaded(pkg, 256, { kind: 'java:17', concurrency: 1, env: { __OW_ACTION_NAME: '/guest/hello' } });
    const result = resultOf(await run(sandbox, { name: 'wörld' }));
    assert.equal(result.greeting, 'héllo wörld');
    assert.ok((result.maxHeapMb as number) <= 256, `heap ${result.maxHeapMb} MB`);
    assert.equal(result.classPath, 'launcher:gson.jar:function.jar');
    assert.equal(result.name, '/guest/hello');

    // A JVM started ahead with the launcher and Gson loads the function's jar when it arrives.
    const runtimeCommand = [...(pkg.command ?? []).slice(0, -4), '-cp', 'launcher:gson.jar', 'IsolaLauncher'];
    const runtime = {
      id: 'java:17@test',
      zip: zip({ ...launcherFiles, 'gson.jar': readFileSync(gson) }),
      command: runtimeCommand,
    };
    const blank = await backend.create({ memoryMb: 256, kind: 'java:17', ahead: true });
    made.push(blank);
    blank.prestart?.(runtime, 256);
    const logs: string[] = [];
    const init = await blank.init(
      code(
        { ...pkg, runtime: { id: runtime.id, args: ['Hello'] } },
        { kind: 'java:17', concurrency: 1, memoryMb: 256, env: { __OW_ACTION_NAME: '/guest/hello' } },
      ),
      Date.now() + 30_000,
      (_stream, text) => logs.push(text),
    );
    assert.deepEqual(init, { ok: true }, logs.join(''));
    const ahead = resultOf(await run(blank, { name: 'wörld' }));
    assert.equal(ahead.greeting, 'héllo wörld');
    assert.equal(ahead.classPath, 'launcher:gson.jar', 'served by the JVM started ahead');
    assert.equal(ahead.name, '/guest/hello');
    assert.ok((ahead.maxHeapMb as number) <= 256, `heap ${ahead.maxHeapMb} MB`);
  });
});
