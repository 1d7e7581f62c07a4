import assert from 'node:assert/strict';
import { type ChildProcessWithoutNullStreams, execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';
import { strToU8, zipSync } from 'fflate';
import { buildAgent } from './bundle.js';
import { encodeFrame, FrameDecoder, type FunctionPackage, type GuestMessage, type HostMessage } from './protocol.js';

// The guest agent itself, as a child process spoken to in frames, running packaged functions in
// every language: each one's ActionLoop launcher with a function built here.
const base = mkdtempSync(join(tmpdir(), 'isola-action-loop-test-'));
const agentPath = buildAgent(join(base, 'runtime'));
const launchers = fileURLToPath(new URL('./launchers/', import.meta.url));
const GSON = '/usr/share/java/gson.jar';

type Files = Record<string, string | Uint8Array>;

function zip(files: Files): string {
  const entries: Record<string, Uint8Array> = {};
  for (const [name, data] of Object.entries(files)) entries[name] = typeof data === 'string' ? strToU8(data) : data;
  return Buffer.from(zipSync(entries)).toString('base64');
}

/** Every file under `dir`, by its path relative to it. */
function filesOf(dir: string, under = dir): Files {
  const files: Files = {};
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) Object.assign(files, filesOf(path, under));
    else files[relative(under, path)] = readFileSync(path);
  }
  return files;
}

const launcher = (name: string) => readFileSync(join(launchers, name));

interface Collected {
  logs: { stream: string; text: string }[];
}

/** One agent process and the frames it sent. */
class Agent {
  readonly child: ChildProcessWithoutNullStreams;
  readonly messages: GuestMessage[] = [];
  private readonly decoder = new FrameDecoder<GuestMessage>();
  private waiters: (() => void)[] = [];
  private stderr = '';

  constructor() {
    const cwd = mkdtempSync(join(base, 'agent-'));
    this.child = spawn(process.execPath, [agentPath, '--channel=stdio'], {
      cwd,
      env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: cwd, TMPDIR: cwd, LANG: 'C.UTF-8' },
    });
    this.child.stdout.on('data', (chunk: Buffer) => {
      this.messages.push(...this.decoder.push(chunk));
      for (const wake of this.waiters.splice(0)) wake();
    });
    this.child.stderr.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString();
    });
    this.child.on('exit', () => {
      for (const wake of this.waiters.splice(0)) wake();
    });
  }

  send(message: HostMessage): void {
    this.child.stdin.write(encodeFrame(message));
  }

  /** The first message (from `from` on) that matches, waiting for it up to a deadline. */
  async next(match: (message: GuestMessage) => boolean, from = 0, timeoutMs = 30_000): Promise<GuestMessage> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.messages.slice(from).find(match);
      if (found) return found;
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`the agent exited: ${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`no such message in time; got ${JSON.stringify(this.messages).slice(0, 2000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  async init(pkg: FunctionPackage, extra: Partial<Extract<HostMessage, { type: 'init' }>> = {}) {
    await this.next((m) => m.type === 'hello');
    const from = this.messages.length;
    this.send({
      type: 'init',
      code: '',
      main: 'main',
      binary: false,
      env: {},
      logLimitBytes: 4 * 1024 * 1024,
      package: pkg,
      ...extra,
    });
    const outcome = await this.next((m) => m.type === 'ready' || m.type === 'initError', from, 60_000);
    const logs = this.messages.slice(from).filter((m) => m.type === 'log' && m.id === undefined) as Extract<
      GuestMessage,
      { type: 'log' }
    >[];
    return { outcome, logs: logs.map((m) => m.text).join('') };
  }

  private counter = 0;

  /** Sends runs (in one write, so that they arrive together) and waits for each one's end. */
  async runs(paramsList: Record<string, unknown>[], env: Record<string, string> = {}) {
    const from = this.messages.length;
    const ids = paramsList.map(() => `act-${++this.counter}`);
    const frames = paramsList.map((params, i) =>
      encodeFrame({
        type: 'run',
        id: ids[i] as string,
        params,
        deadline: Date.now() + 60_000,
        timeoutMs: 60_000,
        env,
        ack: true,
      }),
    );
    this.child.stdin.write(Buffer.concat(frames));
    return Promise.all(
      ids.map(async (id) => {
        const end = (await this.next((m) => (m.type === 'result' || m.type === 'error') && m.id === id, from, 60_000)) as Extract<
          GuestMessage,
          { type: 'result' | 'error' }
        >;
        const logs = this.messages
          .slice(from)
          .filter((m): m is Extract<GuestMessage, { type: 'log' }> => m.type === 'log' && m.id === id)
          .map(({ stream, text }) => ({ stream, text }));
        return { id, end, logs, stdout: textOf(logs, 'stdout'), stderr: textOf(logs, 'stderr') };
      }),
    );
  }

  async run(params: Record<string, unknown>, env: Record<string, string> = {}) {
    const [only] = await this.runs([params], env);
    return only as NonNullable<typeof only>;
  }

  stop(): void {
    this.child.kill('SIGKILL');
  }
}

function textOf(logs: Collected['logs'], stream: string): string {
  return logs
    .filter((l) => l.stream === stream)
    .map((l) => l.text)
    .join('');
}

function resultOf(end: Extract<GuestMessage, { type: 'result' | 'error' }>): Record<string, unknown> {
  assert.equal(end.type, 'result', `expected a result, got ${JSON.stringify(end).slice(0, 500)}`);
  return (end as Extract<GuestMessage, { type: 'result' }>).result as Record<string, unknown>;
}

// The same function in every language. op: echo (returns its parameters), error (raises
// "bad thing <msg>"), nondict (returns a list), env (returns the __OW_ variables it sees),
// log (prints its tag on stdout and stderr, returns its tag and process id), crash (prints
// "dying" on stderr and exits with code 3).
const PYTHON = `import os, sys, time
def main(args):
    op = args.get('op', 'echo')
    if op == 'error':
        raise ValueError('bad thing ' + args.get('msg', ''))
    if op == 'nondict':
        return [1, 2]
    if op == 'env':
        return {k: v for k, v in os.environ.items() if k.startswith('__OW_')}
    if op == 'log':
        print('out ' + args['tag'])
        print('err ' + args['tag'], file=sys.stderr)
        open('meet-' + args['tag'], 'w').close()
        deadline = time.time() + 20
        while not os.path.exists('meet-' + args['peer']) and time.time() < deadline:
            time.sleep(0.01)
        print('out2 ' + args['tag'])
        return {'tag': args['tag'], 'pid': os.getpid()}
    if op == 'crash':
        print('dying', file=sys.stderr)
        sys.stderr.flush()
        os._exit(3)
    return args
`;

const RUBY = `def main(args)
  case args['op']
  when 'error' then raise ArgumentError, "bad thing #{args['msg']}"
  when 'nondict' then [1, 2]
  when 'env' then ENV.to_h.select { |k, _| k.start_with?('__OW_') }
  when 'log'
    puts "out #{args['tag']}"
    $stderr.puts "err #{args['tag']}"
    File.write("meet-#{args['tag']}", '')
    deadline = Time.now + 20
    sleep 0.01 until File.exist?("meet-#{args['peer']}") || Time.now > deadline
    puts "out2 #{args['tag']}"
    { 'tag' => args['tag'], 'pid' => Process.pid }
  when 'crash'
    $stderr.puts 'dying'
    exit!(3)
  else args
  end
end
`;

const PHP = `<?php
function main(array $args)
{
    switch ($args['op'] ?? 'echo') {
        case 'error': throw new InvalidArgumentException('bad thing ' . ($args['msg'] ?? ''));
        case 'nondict': return [1, 2];
        case 'env':
            $env = [];
            foreach (getenv() as $k => $v) if (str_starts_with($k, '__OW_')) $env[$k] = $v;
            return $env;
        case 'log':
            echo 'out ' . $args['tag'] . "\\n";
            fwrite(STDERR, 'err ' . $args['tag'] . "\\n");
            touch('meet-' . $args['tag']);
            $deadline = microtime(true) + 20;
            while (!file_exists('meet-' . $args['peer']) && microtime(true) < $deadline) usleep(10000);
            echo 'out2 ' . $args['tag'] . "\\n";
            return ['tag' => $args['tag'], 'pid' => getmypid()];
        case 'crash':
            fwrite(STDERR, "dying\\n");
            exit(3);
        default: return $args;
    }
}
`;

const JAVA = `import com.google.gson.JsonArray;
import com.google.gson.JsonObject;
import java.util.Map;

public class Hello {
  public static JsonObject main(JsonObject args) throws Exception {
    String op = args.has("op") ? args.get("op").getAsString() : "echo";
    JsonObject out = new JsonObject();
    switch (op) {
      case "error":
        throw new IllegalArgumentException("bad thing " + (args.has("msg") ? args.get("msg").getAsString() : ""));
      case "nondict":
        return null;
      case "env":
        for (Map.Entry<String, String> e : System.getenv().entrySet())
          if (e.getKey().startsWith("__OW_")) out.addProperty(e.getKey(), e.getValue());
        return out;
      case "log":
        System.out.println("out " + args.get("tag").getAsString());
        System.err.println("err " + args.get("tag").getAsString());
        java.nio.file.Files.writeString(java.nio.file.Path.of("meet-" + args.get("tag").getAsString()), "");
        long deadline = System.currentTimeMillis() + 20_000;
        while (!java.nio.file.Files.exists(java.nio.file.Path.of("meet-" + args.get("peer").getAsString()))
            && System.currentTimeMillis() < deadline) Thread.sleep(10);
        System.out.println("out2 " + args.get("tag").getAsString());
        out.addProperty("tag", args.get("tag").getAsString());
        out.addProperty("pid", ProcessHandle.current().pid());
        return out;
      case "crash":
        System.err.println("dying");
        System.err.flush();
        Runtime.getRuntime().halt(3);
        return out;
      default:
        return args;
    }
  }
}
`;

const GO = `package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

func Main(args map[string]interface{}) map[string]interface{} {
	switch args["op"] {
	case "error":
		panic(fmt.Sprintf("bad thing %v", args["msg"]))
	case "nondict":
		return nil
	case "env":
		out := map[string]interface{}{}
		for _, kv := range os.Environ() {
			if parts := strings.SplitN(kv, "=", 2); strings.HasPrefix(parts[0], "__OW_") {
				out[parts[0]] = parts[1]
			}
		}
		return out
	case "log":
		fmt.Println("out", args["tag"])
		fmt.Fprintln(os.Stderr, "err", args["tag"])
		_ = os.WriteFile(fmt.Sprint("meet-", args["tag"]), nil, 0o600)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := os.Stat(fmt.Sprint("meet-", args["peer"])); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Println("out2", args["tag"])
		return map[string]interface{}{"tag": args["tag"], "pid": os.Getpid()}
	case "crash":
		fmt.Fprintln(os.Stderr, "dying")
		os.Exit(3)
	}
	return args
}
`;

/** A native ActionLoop program in Node.js: it parses its lines, so it can do everything the launchers do. */
const NODE_NATIVE = `#!${process.execPath}
const fs = require('node:fs');
const readline = require('node:readline');
const SENTINEL = 'XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX';
const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
lines.on('line', (line) => {
  const request = JSON.parse(line);
  for (const [key, value] of Object.entries(request)) if (key !== 'value') process.env['__OW_' + key.toUpperCase()] = value;
  const args = request.value;
  let result;
  const op = args.op ?? 'echo';
  if (op === 'error') {
    fs.writeSync(2, 'Error: bad thing ' + (args.msg ?? '') + '\\n    at main (exec)\\n');
    result = { error: 'bad thing ' + (args.msg ?? '') };
  } else if (op === 'nondict') result = [1, 2];
  else if (op === 'env') result = Object.fromEntries(Object.entries(process.env).filter(([k]) => k.startsWith('__OW_')));
  else if (op === 'log') {
    fs.writeSync(1, 'out ' + args.tag + '\\n');
    fs.writeSync(2, 'err ' + args.tag + '\\n');
    fs.writeFileSync('meet-' + args.tag, '');
    const deadline = Date.now() + 20000;
    while (!fs.existsSync('meet-' + args.peer) && Date.now() < deadline) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
    fs.writeSync(1, 'out2 ' + args.tag + '\\n');
    result = { tag: args.tag, pid: process.pid };
  } else if (op === 'crash') {
    fs.writeSync(2, 'dying\\n');
    process.exit(3);
  } else result = args;
  fs.writeSync(3, JSON.stringify(result) + '\\n');
  fs.writeSync(1, SENTINEL + '\\n');
  fs.writeSync(2, SENTINEL + '\\n');
});
`;

/** A native ActionLoop program in sh, without ack or JSON: it returns the whole request line. */
const SHELL_NATIVE = `#!/bin/sh
while read -r line; do
  case "$line" in
    *'"op":"crash"'*) echo dying >&2; exit 3 ;;
    *'"op":"nondict"'*) echo '[1,2]' >&3 ;;
    *'"op":"error"'*) echo 'bad thing from sh' >&2; echo '{"error":"bad thing from sh"}' >&3 ;;
    *'"op":"log"'*) tag=$(echo "$line" | sed 's/.*"tag":"\\([a-z]*\\)".*/\\1/'); echo "out $tag"; echo "err $tag" >&2; peer=$(echo "$line" | sed 's/.*"peer":"\\([a-z]*\\)".*/\\1/'); : > "meet-$tag"; n=0; while [ ! -e "meet-$peer" ] && [ $n -lt 2000 ]; do sleep 0.01; n=$((n+1)); done; echo "out2 $tag"; echo "{\\"tag\\":\\"$tag\\",\\"pid\\":$$}" >&3 ;;
    *) printf '%s\n' "$line" >&3 ;;
  esac
  echo XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
  echo XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX >&2
done
`;

function javaPackage(dir: string, source: string, main: string): FunctionPackage {
  mkdirSync(join(dir, 'launcher'), { recursive: true });
  mkdirSync(join(dir, 'classes'), { recursive: true });
  execFileSync('/usr/bin/javac', ['-proc:none', '-cp', GSON, '-d', join(dir, 'launcher'), join(launchers, 'IsolaLauncher.java')]);
  writeFileSync(join(dir, 'Hello.java'), source);
  execFileSync('/usr/bin/javac', ['-proc:none', '-cp', GSON, '-d', join(dir, 'classes'), join(dir, 'Hello.java')]);
  const functionJar = zipSync(
    Object.fromEntries(Object.entries(filesOf(join(dir, 'classes'))).map(([k, v]) => [k, v as Uint8Array])),
  );
  const files: Files = { 'gson.jar': readFileSync(GSON), 'function.jar': functionJar };
  for (const [name, data] of Object.entries(filesOf(join(dir, 'launcher')))) files[`launcher/${name}`] = data;
  return {
    zip: zip(files),
    command: [
      '/usr/bin/java',
      '-XX:MaxRAM={{memoryMb}}m',
      '-XX:+UseSerialGC',
      '-XX:TieredStopAtLevel=1',
      '-Xshare:auto',
      '-cp',
      'launcher:gson.jar:function.jar',
      'IsolaLauncher',
      main,
    ],
    ack: true,
  };
}

function goPackage(dir: string, source: string): FunctionPackage {
  mkdirSync(dir, { recursive: true });
  copyFileSync(join(launchers, 'launcher.go'), join(dir, 'launcher.go'));
  writeFileSync(join(dir, 'function.go'), source);
  execFileSync('/usr/bin/go', ['build', '-o', 'exec', 'launcher.go', 'function.go'], {
    cwd: dir,
    env: { PATH: '/usr/bin:/bin', HOME: base, GOCACHE: join(base, 'go-cache'), CGO_ENABLED: '0', GOFLAGS: '-mod=mod' },
  });
  return { zip: zip({ exec: readFileSync(join(dir, 'exec')) }), command: ['./exec'], executables: ['exec'], ack: true };
}

interface Kind {
  name: string;
  make: () => FunctionPackage;
  /** A package that fails to load, and what its initError must quote. */
  broken?: () => FunctionPackage;
  brokenQuote?: RegExp;
  /** The program passes the per-activation __OW_ variables to the function. */
  env: boolean;
  /** The function's error message, as it reads in the result (a raised error's message). */
  errorMessage: (msg: string) => string;
  /** What the traceback in the logs shows. */
  traceback: RegExp;
}

const KINDS: Kind[] = [
  {
    name: 'python:3',
    make: () => ({
      zip: zip({ 'launcher.py': launcher('launcher.py'), '__main__.py': PYTHON }),
      command: ['/usr/bin/python3', '-u', 'launcher.py', 'main'],
      ack: true,
    }),
    broken: () => ({
      zip: zip({ 'launcher.py': launcher('launcher.py'), '__main__.py': 'def main(args:\n    return args\n' }),
      command: ['/usr/bin/python3', '-u', 'launcher.py', 'main'],
      ack: true,
    }),
    brokenQuote: /SyntaxError/,
    env: true,
    errorMessage: (msg) => `bad thing ${msg}`,
    traceback: /Traceback \(most recent call last\)[\s\S]*__main__\.py", line 5, in main[\s\S]*ValueError: bad thing/,
  },
  {
    name: 'ruby:3.1',
    make: () => ({
      zip: zip({ 'launcher.rb': launcher('launcher.rb'), 'main.rb': RUBY }),
      command: ['/usr/bin/ruby', '--disable-gems', 'launcher.rb', 'main'],
      ack: true,
    }),
    broken: () => ({
      zip: zip({ 'launcher.rb': launcher('launcher.rb'), 'main.rb': 'def main(args\n  args\n' }),
      command: ['/usr/bin/ruby', '--disable-gems', 'launcher.rb', 'main'],
      ack: true,
    }),
    brokenQuote: /main\.rb:\d+: syntax error/,
    env: true,
    errorMessage: (msg) => `bad thing ${msg}`,
    traceback: /main\.rb:3:in `main': bad thing .*\(ArgumentError\)/,
  },
  {
    name: 'php:8.2',
    make: () => ({
      zip: zip({ 'launcher.php': launcher('launcher.php'), 'index.php': PHP }),
      command: ['/usr/bin/php', '-d', 'display_errors=stderr', 'launcher.php', 'main'],
      ack: true,
    }),
    broken: () => ({
      zip: zip({
        'launcher.php': launcher('launcher.php'),
        'index.php': '<?php\nfunction main(array $args {\n  return $args;\n}\n',
      }),
      command: ['/usr/bin/php', '-d', 'display_errors=stderr', 'launcher.php', 'main'],
      ack: true,
    }),
    brokenQuote: /ParseError: syntax error.*index\.php/,
    env: true,
    errorMessage: (msg) => `bad thing ${msg}`,
    traceback: /InvalidArgumentException: bad thing .* in .*index\.php:5\nStack trace:/,
  },
  {
    name: 'java:17',
    make: () => javaPackage(join(base, 'java'), JAVA, 'Hello'),
    broken: () => javaPackage(join(base, 'java-broken'), JAVA, 'NoSuchClass#main'),
    brokenQuote: /ClassNotFoundException: NoSuchClass/,
    env: true,
    errorMessage: (msg) => `bad thing ${msg}`,
    traceback: /java\.lang\.IllegalArgumentException: bad thing [\s\S]*at Hello\.main\(Hello\.java:11\)/,
  },
  {
    name: 'go:1.19',
    make: () => goPackage(join(base, 'go'), GO),
    env: true,
    errorMessage: (msg) => `bad thing ${msg}`,
    traceback: /panic: bad thing [\s\S]*goroutine \d+ \[running\]/,
  },
  {
    name: 'native (Node.js program)',
    make: () => ({ zip: zip({ exec: NODE_NATIVE }), command: ['./exec'], executables: ['exec'], ack: false }),
    env: true,
    errorMessage: (msg) => `bad thing ${msg}`,
    traceback: /Error: bad thing [\s\S]*at main \(exec\)/,
  },
  {
    name: 'native (sh)',
    make: () => ({ zip: zip({ exec: SHELL_NATIVE }), command: ['./exec'], executables: ['exec'], ack: false }),
    env: false,
    errorMessage: () => 'bad thing from sh',
    traceback: /bad thing from sh/,
  },
];

after(() => rmSync(base, { recursive: true, force: true }));

describe('ActionLoop functions in the guest agent', () => {
  const agents: Agent[] = [];
  const start = () => {
    const agent = new Agent();
    agents.push(agent);
    return agent;
  };
  after(() => {
    for (const agent of agents) agent.stop();
  });

  for (const kind of KINDS) {
    describe(kind.name, () => {
      let agent: Agent;
      before(async () => {
        agent = start();
        const { outcome, logs } = await agent.init(kind.make(), { concurrency: 2, memoryMb: 256 });
        assert.equal(outcome.type, 'ready', `init: ${JSON.stringify(outcome)} ${logs}`);
      });

      it('echoes a 1 MB parameter', async () => {
        const big = 'x'.repeat(1024 * 1024 - 200);
        const { end } = await agent.run({ big });
        const result = resultOf(end);
        // A native program without JSON returns its whole request line: the parameters are its value.
        const echoed = (kind.env ? result : (result.value as Record<string, unknown>)) as { big: string };
        assert.equal(echoed.big.length, big.length);
        assert.equal(echoed.big, big);
      });

      it('passes Unicode in and out', async () => {
        const text = 'héllo wörld ✓ 日本語 🎉 "quoted"\\ \u2028';
        const { end } = await agent.run({ text });
        const result = resultOf(end);
        assert.equal(((kind.env ? result : result.value) as { text: string }).text, text);
      });

      it('turns a raised error into an error result, its traceback in the logs', async () => {
        const { end, stderr } = await agent.run({ op: 'error', msg: 'ünï' });
        assert.deepEqual(resultOf(end), { error: kind.errorMessage('ünï') });
        assert.match(stderr, kind.traceback);
        assert.doesNotMatch(stderr, /XXX_THE_END/);
      });

      it('hands on a result that is not a dictionary for the platform to refuse, saying so in the logs', async () => {
        const { end, stderr } = await agent.run({ op: 'nondict' });
        assert.equal(end.type, 'result', JSON.stringify(end));
        const value = (end as { result: unknown }).result;
        assert.ok(typeof value !== 'object' || value === null || Array.isArray(value), JSON.stringify(value));
        assert.match(stderr, /The action's result is not a JSON object/);
      });

      if (kind.env) {
        it("gives the function each activation's __OW_ variables", async () => {
          const env = {
            __OW_ACTION_NAME: '/guest/conformance',
            __OW_NAMESPACE: 'guest',
            __OW_API_HOST: 'http://127.0.0.1:1',
            __OW_ACTION_VERSION: '0.0.7',
          };
          const { id, end } = await agent.run({ op: 'env' }, env);
          const result = resultOf(end);
          assert.equal(result.__OW_ACTIVATION_ID, id);
          assert.equal(result.__OW_ACTION_NAME, '/guest/conformance');
          assert.equal(result.__OW_NAMESPACE, 'guest');
          assert.equal(result.__OW_API_HOST, 'http://127.0.0.1:1');
          assert.equal(result.__OW_ACTION_VERSION, '0.0.7');
          assert.ok(Number(result.__OW_DEADLINE) > Date.now(), `deadline ${result.__OW_DEADLINE}`);
          const second = await agent.run({ op: 'env' }, env);
          assert.equal(resultOf(second.end).__OW_ACTIVATION_ID, second.id);
        });
      }

      it('attributes logs to their activation with two running at once', async () => {
        const from = agent.messages.length;
        const [a, b] = await agent.runs([
          { op: 'log', tag: 'alpha', peer: 'beta' },
          { op: 'log', tag: 'beta', peer: 'alpha' },
        ]);
        assert.ok(a && b);
        const ra = resultOf(a.end);
        const rb = resultOf(b.end);
        assert.equal(ra.tag, 'alpha');
        assert.equal(rb.tag, 'beta');
        assert.notEqual(ra.pid, rb.pid, 'each activation had a process of its own');
        assert.equal(a.stdout, 'out alpha\nout2 alpha\n');
        assert.equal(a.stderr, 'err alpha\n');
        assert.equal(b.stdout, 'out beta\nout2 beta\n');
        assert.equal(b.stderr, 'err beta\n');
        // The agent told the platform which processes are its launchers.
        const reports = agent.messages.slice(0, agent.messages.length).filter((m) => m.type === 'processes') as Extract<
          GuestMessage,
          { type: 'processes' }
        >[];
        assert.ok(reports.length > 0);
        const last = reports.at(-1)?.pids ?? [];
        assert.ok(last.includes(ra.pid as number) && last.includes(rb.pid as number), `${JSON.stringify(last)} ${from}`);
      });

      it('ends a run whose process dies with why, and the next run gets a new one', async () => {
        const crash = await agent.run({ op: 'crash' });
        assert.equal(crash.end.type, 'error');
        const error = String((crash.end as { error: unknown }).error);
        assert.match(error, /^The action's process exited with code 3 during the activation: [\s\S]*dying/);
        assert.match(crash.stderr, /dying/);
        for (let i = 0; i < 3; i++) {
          const { end } = await agent.run({ op: 'echo', n: i });
          assert.equal((kind.env ? resultOf(end) : (resultOf(end).value as Record<string, unknown>)).n, i);
        }
      });

      it('answers a reseed and goes on serving', async () => {
        const from = agent.messages.length;
        agent.send({ type: 'reseed', entropy: Buffer.alloc(48, 1).toString('base64'), now: Date.now() });
        await agent.next((m) => m.type === 'reseeded', from);
        const { end } = await agent.run({ op: 'echo', after: 'reseed' });
        assert.equal((kind.env ? resultOf(end) : (resultOf(end).value as Record<string, unknown>)).after, 'reseed');
      });

      if (kind.broken) {
        it('fails to initialise a function that does not load, quoting why', async () => {
          const broken = start();
          const { outcome, logs } = await broken.init((kind.broken as () => FunctionPackage)());
          assert.equal(outcome.type, 'initError');
          const error = (outcome as { error: string }).error;
          assert.match(error, /^The action's process exited with code 1 before it was ready: /);
          assert.match(error, kind.brokenQuote as RegExp);
          assert.match(logs, kind.brokenQuote as RegExp);
        });
      }
    });
  }

  it("forwards a reseed to the launchers, which reseed their language's generator", async () => {
    const agent = start();
    // The function draws nothing: the generator's state changes only by a reseed.
    const source =
      'import hashlib, random\ndef main(args):\n    return {"state": hashlib.sha256(repr(random.getstate()).encode()).hexdigest()}\n';
    const pkg: FunctionPackage = {
      zip: zip({ 'launcher.py': launcher('launcher.py'), '__main__.py': source }),
      command: ['/usr/bin/python3', '-u', 'launcher.py', 'main'],
      ack: true,
    };
    assert.equal((await agent.init(pkg)).outcome.type, 'ready');
    const before = resultOf((await agent.run({})).end).state;
    assert.equal(resultOf((await agent.run({})).end).state, before);
    const from = agent.messages.length;
    agent.send({ type: 'reseed', entropy: Buffer.alloc(48, 7).toString('base64'), now: Date.now() });
    await agent.next((m) => m.type === 'reseeded', from);
    assert.notEqual(resultOf((await agent.run({})).end).state, before);
  });

  it("holds each activation's logs to the log limit and refuses a result over 1 MB", async () => {
    const agent = start();
    const source = `def main(args):\n    print('y' * args['print'])\n    return {'r': 'z' * args['result']}\n`;
    const pkg: FunctionPackage = {
      zip: zip({ 'launcher.py': launcher('launcher.py'), '__main__.py': source }),
      command: ['/usr/bin/python3', '-u', 'launcher.py', 'main'],
      ack: true,
    };
    assert.equal((await agent.init(pkg, { logLimitBytes: 1000 })).outcome.type, 'ready');
    const chatty = await agent.run({ print: 5000, result: 1 });
    assert.deepEqual(resultOf(chatty.end), { r: 'z' });
    assert.equal(chatty.stdout, `${'y'.repeat(1000)}\n`);
    assert.match(chatty.stderr, /Logs were truncated because the total bytes size exceeds the limit of 1000 bytes/);
    // The next activation has its own allowance.
    const quiet = await agent.run({ print: 10, result: 1 });
    assert.equal(quiet.stdout, `${'y'.repeat(10)}\n`);
    const huge = await agent.run({ print: 0, result: 2 * 1024 * 1024 });
    assert.equal(huge.end.type, 'error');
    assert.match(String((huge.end as { error: unknown }).error), /exceeded the allowed length/);
    assert.deepEqual(resultOf((await agent.run({ print: 0, result: 3 })).end), { r: 'zzz' });
  });

  it('loads a Python function with its dependencies from virtualenv/', async () => {
    const agent = start();
    const pkg: FunctionPackage = {
      zip: zip({
        'launcher.py': launcher('launcher.py'),
        '__main__.py': 'import shout\ndef main(args):\n    return {"said": shout.shout(args["word"])}\n',
        'virtualenv/lib/python3.11/site-packages/shout/__init__.py': 'def shout(word):\n    return word.upper() + "!"\n',
      }),
      command: ['/usr/bin/python3', '-u', 'launcher.py', 'main'],
      ack: true,
    };
    assert.equal((await agent.init(pkg)).outcome.type, 'ready');
    assert.deepEqual(resultOf((await agent.run({ word: 'hey' })).end), { said: 'HEY!' });
  });
});

describe('Node.js packages in the guest agent', () => {
  const agents: Agent[] = [];
  const start = () => {
    const agent = new Agent();
    agents.push(agent);
    return agent;
  };
  after(() => {
    for (const agent of agents) agent.stop();
  });

  it('requires a zip with node_modules, and calls handler(event, context)', async () => {
    const agent = start();
    const pkg: FunctionPackage = {
      zip: zip({
        'package.json': JSON.stringify({ name: 'fn', main: 'lib/index.js' }),
        'lib/index.js': `const pad = require('left-pad');
const data = require('fs').readFileSync('data.txt', 'utf8').trim();
exports.handler = async (event, context) => ({
  padded: pad(event.word, 8),
  data,
  functionName: context.functionName,
  arn: context.invokedFunctionArn,
  requestId: context.awsRequestId,
  remaining: context.getRemainingTimeInMillis(),
});`,
        'data.txt': 'beside the function\n',
        'node_modules/left-pad/package.json': JSON.stringify({ name: 'left-pad', main: 'index.js' }),
        'node_modules/left-pad/index.js': 'module.exports = (s, n) => s.padStart(n, "*");',
      }),
      module: 'lib/index.js',
    };
    const { outcome } = await agent.init(pkg, { main: 'handler', env: { __OW_ACTION_NAME: '/guest/padder' } });
    assert.equal(outcome.type, 'ready', JSON.stringify(outcome));
    const { id, end } = await agent.run({ word: 'abc' });
    const result = resultOf(end);
    assert.equal(result.padded, '*****abc');
    assert.equal(result.data, 'beside the function');
    assert.equal(result.functionName, 'padder');
    assert.equal(result.arn, 'arn:aws:lambda:isola:guest:function:padder');
    assert.equal(result.requestId, id);
    assert.ok((result.remaining as number) > 0 && (result.remaining as number) <= 60_000);
  });

  it("calls a handler written in Lambda's callback style, and fails the run with the callback's error", async () => {
    const agent = start();
    const pkg: FunctionPackage = {
      zip: zip({
        'index.js': `exports.handler = (event, context, callback) => {
  if (event.fail) return setImmediate(() => callback(new Error('refused: ' + event.fail)));
  setImmediate(() => callback(null, { echoed: event.word, waits: context.callbackWaitsForEmptyEventLoop }));
};`,
      }),
      module: 'index.js',
    };
    assert.equal((await agent.init(pkg, { main: 'handler' })).outcome.type, 'ready');
    assert.deepEqual(resultOf((await agent.run({ word: 'hi' })).end), { echoed: 'hi', waits: true });
    const failed = (await agent.run({ fail: 'no' })).end;
    assert.equal(failed.type, 'error', JSON.stringify(failed));
    assert.match(JSON.stringify(failed), /refused: no/);
  });

  it('imports an ES module and calls its exported main', async () => {
    const agent = start();
    const pkg: FunctionPackage = {
      zip: zip({
        'package.json': JSON.stringify({ name: 'fn', type: 'module' }),
        'index.js': `import { greet } from './greet.js';\nexport default function main(params) { return { greeting: greet(params.name) }; }`,
        'greet.js': "export const greet = (name) => 'hello ' + name;",
      }),
      module: 'index.js',
    };
    assert.equal((await agent.init(pkg)).outcome.type, 'ready');
    assert.deepEqual(resultOf((await agent.run({ name: 'wörld' })).end), { greeting: 'hello wörld' });
  });

  it('reports TypeScript lines for code compiled with an inline source map', async () => {
    const agent = start();
    const ts = `interface Params { n: number }\n\nexport function main(params: Params): { doubled: number } {\n  if (params.n < 0) {\n    throw new Error('negative: ' + params.n);\n  }\n  return { doubled: params.n * 2 };\n}\n`;
    const compiled = buildSync({
      stdin: { contents: ts, sourcefile: 'fn.ts', loader: 'ts' },
      format: 'cjs',
      sourcemap: 'inline',
      write: false,
      platform: 'node',
    }).outputFiles[0]?.text as string;
    const { outcome } = await agent.init({ zip: zip({ 'fn.js': compiled }), module: 'fn.js' });
    assert.equal(outcome.type, 'ready');
    assert.deepEqual(resultOf((await agent.run({ n: 21 })).end), { doubled: 42 });
    const failed = await agent.run({ n: -1 });
    assert.deepEqual(failed.end, { type: 'error', id: failed.id, error: 'negative: -1' });
    assert.match(failed.stderr, /fn\.ts:5:11/);
  });

  it('fails to initialise a module with a syntax error, saying where', async () => {
    const agent = start();
    const { outcome, logs } = await agent.init({
      zip: zip({ 'index.js': 'exports.main = () => {\n  return {;\n};\n' }),
      module: 'index.js',
    });
    assert.equal(outcome.type, 'initError');
    assert.match((outcome as { error: string }).error, /^SyntaxError: Unexpected token .*index\.js:2\)$/);
    assert.match(logs, /SyntaxError/);
  });
});
