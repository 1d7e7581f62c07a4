// Functions in every kind, deployed and invoked through the real API of a real `isola serve` on
// the process backend: what the deploy makes of each upload (zips checked, sources compiled) and
// that the guest runs it. Compile errors and refused zips are 400s that store nothing.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { zipSync } from 'fflate';
import type { ActivationRecord } from '../src/core/types.js';
import { annotation, TestServer, waitFor } from './helpers/server.js';
import { zipOf } from './helpers/zips.js';

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const text = (value: string) => Buffer.from(value, 'utf8');

const JAVA_HELLO = `import com.google.gson.JsonObject;

public class Hello {
  public static JsonObject main(JsonObject args) {
    JsonObject result = new JsonObject();
    String name = args.has("name") ? args.get("name").getAsString() : "stranger";
    result.addProperty("greeting", "Hello, " + name + " from Java");
    return result;
  }
}
`;

const GO_HELLO = `package main

import "fmt"

func Main(args map[string]interface{}) map[string]interface{} {
	name, ok := args["name"].(string)
	if !ok {
		name = "stranger"
	}
	return map[string]interface{}{"greeting": fmt.Sprintf("Hello, %s from Go", name)}
}
`;

/** A native ActionLoop program: one JSON line in, one JSON line out on fd 3, then the sentinels. */
const NATIVE_SCRIPT = `#!/bin/bash
while read -r line; do
  echo '{"greeting": "Hello from native"}' >&3
  echo XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX
  echo XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX >&2
done
`;

const NATIVE_C = `#include <stdio.h>
#include <string.h>
int main(void) {
  char line[1 << 16];
  FILE *out = fdopen(3, "w");
  while (fgets(line, sizeof line, stdin)) {
    fprintf(out, "{\\"greeting\\": \\"Hello from C\\", \\"bytes\\": %zu}\\n", strlen(line));
    fflush(out);
    puts("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX");
    fflush(stdout);
    fputs("XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX\\n", stderr);
  }
  return 0;
}
`;

describe('functions in every kind, through the API', () => {
  let server: TestServer;
  let dir: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'isola-languages-'));
    server = await TestServer.start({ env: { ISOLA_BACKENDS: 'isolate,process', ISOLA_PREWARM: 'isolate:0,process:0' } });
  });
  after(async () => {
    await server.dispose();
    rmSync(dir, { recursive: true, force: true });
  });

  const put = (name: string, exec: Record<string, unknown>, annotations: { key: string; value: unknown }[] = []) =>
    server.request<{ exec: { code: string; binary: boolean }; annotations: { key: string; value: unknown }[]; error?: string }>(
      'PUT',
      `/api/v1/namespaces/_/actions/${name}?overwrite=true`,
      { exec, annotations },
    );
  const deploy = async (name: string, exec: Record<string, unknown>, isolation = 'process') => {
    const res = await put(name, exec, [{ key: 'isolation', value: isolation }]);
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 2000));
    return res.body;
  };
  const invoke = async (name: string, params: Record<string, unknown> = {}) => {
    const res = await server.request<ActivationRecord>('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, params);
    return res.body;
  };
  const result = async (name: string, params: Record<string, unknown> = {}) => {
    const record = await invoke(name, params);
    assert.equal(record.response.status, 'success', JSON.stringify(record).slice(0, 3000));
    return record.response.result as Record<string, unknown>;
  };
  const refused = async (
    name: string,
    exec: Record<string, unknown>,
    pattern: RegExp,
    annotations: { key: string; value: unknown }[] = [],
  ) => {
    const res = await put(name, exec, annotations);
    assert.equal(res.status, 400, JSON.stringify(res.body).slice(0, 2000));
    assert.match(String(res.body.error), pattern);
    assert.equal((await server.request('GET', `/api/v1/namespaces/_/actions/${name}`)).status, 404, `${name} was stored`);
  };

  describe('at deploy', () => {
    it('refuses each bad shape of zip with a 400 and stores nothing', async () => {
      const cases: [Parameters<typeof zipOf>[0], RegExp][] = [
        [[{ name: '/tmp/owned', data: 'x' }], /absolute path/],
        [[{ name: '../../owned', data: 'x' }], /escapes the directory/],
        [[{ name: 'node_modules/evil', data: '/etc', mode: 0o120777 }], /symbolic link/],
        [
          [
            { name: 'index.js', data: 'a' },
            { name: 'index.js', data: 'b' },
          ],
          /appears twice/,
        ],
        [[{ name: 'bomb', data: new Uint8Array(16 * 2 ** 20) }], /zip bomb/],
      ];
      for (const [entries, pattern] of cases) {
        await refused(
          'badzip',
          { kind: 'nodejs:20', code: b64(zipOf([{ name: 'package.json', data: '{}' }, ...entries])) },
          pattern,
        );
      }
      await refused('badzip', { kind: 'python:3', code: b64(zipSync({ 'hello.py': text('') })), binary: true }, /__main__\.py/);
      await refused('badzip', { kind: 'python:3', code: 'print(1)', binary: true }, /must be a base64 zip/);
    });

    it('runs a Node.js zip under process by default, and refuses it on isolate naming the backends that can', async () => {
      const zip = b64(zipSync({ 'index.js': text('exports.main = () => ({ ok: true });') }));
      await refused(
        'nodezip',
        { kind: 'nodejs:20', code: zip },
        /A nodejs:20 zip cannot run under isolation "isolate"; it runs under: process, container, gvisor, microvm/,
        [{ key: 'isolation', value: 'isolate' }],
      );
      const stored = await put('nodezip', { kind: 'nodejs:20', code: zip });
      assert.equal(stored.status, 200);
      assert.equal(annotation(stored.body, 'isolation'), 'process');
      assert.equal(stored.body.exec.binary, true, 'a zip is stored as binary even when the request did not say so');
      const got = await server.request<{ exec: { code: string } }>('GET', '/api/v1/namespaces/_/actions/nodezip?code=true');
      assert.equal(got.body.exec.code, zip, 'the code is kept as sent');
      const python = await put('pydefault', { kind: 'python:3', code: 'def main(a):\n    return a\n' });
      assert.equal(annotation(python.body, 'isolation'), 'process');
      await refused(
        'pyisolate',
        { kind: 'python', code: 'def main(a):\n    return a\n' },
        /Kind python:3 cannot run under isolation "isolate"; it runs under: process/,
        [{ key: 'isolation', value: 'isolate' }],
      );
    });

    it('refuses sources that do not compile, quoting the compiler', async () => {
      await refused(
        'javabad',
        { kind: 'java:17', code: JAVA_HELLO.replace('return result;', 'return 42;') },
        /Hello\.java:\d+: error: incompatible types: int cannot be converted to JsonObject/,
      );
      await refused(
        'gobad',
        { kind: 'go:1.19', code: GO_HELLO.replace('fmt.Sprintf', 'fmt.Sprintff') },
        /function\.go:\d+:\d+: undefined: fmt\.Sprintff/,
      );
      // Interpreted kinds: the entry file's syntax, checked by its interpreter without running it.
      await refused(
        'pybad',
        { kind: 'python:3', code: 'def main(args:\n    return {}\n' },
        /__main__\.py", line 1[\s\S]*SyntaxError/,
      );
      await refused('rbbad', { kind: 'ruby:3.1', code: 'def main(args)\n  { "a" => }\nend\n' }, /main\.rb:2: syntax error/);
      await refused(
        'phpbad',
        { kind: 'php:8.2', code: '<?php\nfunction main(array $args): array {\n  return [1 2];\n}\n' },
        /Parse error: syntax error, .* in index\.php on line 3/,
      );
      await refused(
        'tsbad',
        { kind: 'nodejs:20', code: 'export function main(p: { n: number }): number {\n  return p.n *;\n}\n' },
        /tsbad\.ts:2:\d+: Unexpected ";"/,
      );
    });
  });

  describe('hello in each kind', () => {
    it('nodejs:20 as an ES module, on isolate and on process', async () => {
      const code = 'export default async function (params) {\n  return { greeting: "Hello, " + params.name + " from ESM" };\n}\n';
      for (const isolation of ['isolate', 'process']) {
        await deploy(`esm-${isolation}`, { kind: 'nodejs:20', code }, isolation);
        assert.deepEqual(await result(`esm-${isolation}`, { name: 'Ada' }), { greeting: 'Hello, Ada from ESM' });
      }
    });

    it('nodejs:20 as TypeScript, whose error stack names the .ts line', async () => {
      const code = [
        'interface Params {', //        1
        '  name?: string;', //          2
        '}', //                          3
        '', //                           4
        'export function main(params: Params): { greeting: string; stack?: string } {', // 5
        '  if (params.name) return { greeting: "Hello, " + params.name + " from TypeScript" };', // 6
        '  const error: Error = new Error("no name");', // 7
        '  return { greeting: "none", stack: error.stack };', // 8
        '}',
        '',
      ].join('\n');
      for (const isolation of ['process', 'isolate']) {
        const name = `typed-${isolation}`;
        await deploy(name, { kind: 'nodejs:20', code }, isolation);
        assert.deepEqual(await result(name, { name: 'Ada' }), { greeting: 'Hello, Ada from TypeScript' });
        const { stack } = await result(name);
        assert.match(String(stack), new RegExp(`${name}\\.ts:7:\\d+`), String(stack));
      }
    });

    it('nodejs:20 as a zip with node_modules, and handler(event, context)', async () => {
      const zip = zipSync({
        'package.json': text(JSON.stringify({ name: 'hello', main: 'lib/handler.js' })),
        'lib/handler.js': text(
          'const pad = require("left-pad");\nexports.handler = async (event, context) => ({ greeting: pad("Hello, " + event.name, 14), hasContext: typeof context === "object" && context !== null });\n',
        ),
        'node_modules/left-pad/package.json': text(JSON.stringify({ name: 'left-pad', main: 'index.js' })),
        'node_modules/left-pad/index.js': text('module.exports = (s, n) => s.padStart(n, "*");\n'),
      });
      await deploy('nodezip-run', { kind: 'nodejs:20', code: b64(zip), binary: true, main: 'handler' });
      assert.deepEqual(await result('nodezip-run', { name: 'Ada' }), { greeting: '****Hello, Ada', hasContext: true });
    });

    it('python:3 as a file, and as a zip with a package in virtualenv/', async () => {
      await deploy('py', {
        kind: 'python:3',
        code: 'def main(args):\n    return {"greeting": "Hello, " + args.get("name", "stranger") + " from Python"}\n',
      });
      assert.deepEqual(await result('py', { name: 'Ada' }), { greeting: 'Hello, Ada from Python' });
      const zip = zipSync({
        '__main__.py': text('import greeter\n\ndef main(args):\n    return {"greeting": greeter.greet(args["name"])}\n'),
        'virtualenv/lib/python3.11/site-packages/greeter/__init__.py': text(
          'def greet(name):\n    return "Hello, %s from a virtualenv" % name\n',
        ),
      });
      await deploy('pyzip', { kind: 'python:3', code: b64(zip), binary: true });
      assert.deepEqual(await result('pyzip', { name: 'Ada' }), { greeting: 'Hello, Ada from a virtualenv' });
    });

    it('java:17 as a source and as a jar', async () => {
      await deploy('java', { kind: 'java:17', code: JAVA_HELLO });
      assert.deepEqual(await result('java', { name: 'Ada' }), { greeting: 'Hello, Ada from Java' });
      const build = join(dir, 'jar');
      spawnSync('mkdir', ['-p', join(build, 'classes')]);
      // A class in a package, called through a method of another name: main = Class#method.
      const jarSource = `package com.example;\n${JAVA_HELLO.replace('from Java', 'from a jar').replace('JsonObject main(', 'JsonObject greet(')}`;
      writeFileSync(join(build, 'Hello.java'), jarSource);
      const javac = spawnSync('/usr/bin/javac', [
        '-cp',
        '/usr/share/java/gson.jar',
        '-d',
        join(build, 'classes'),
        join(build, 'Hello.java'),
      ]);
      assert.equal(javac.status, 0, javac.stderr.toString());
      const jar = zipSync({
        'META-INF/MANIFEST.MF': text('Manifest-Version: 1.0\n'),
        'com/example/Hello.class': readFileSync(join(build, 'classes', 'com', 'example', 'Hello.class')),
      });
      await deploy('jar', { kind: 'java:17', code: b64(jar), binary: true, main: 'com.example.Hello#greet' });
      assert.deepEqual(await result('jar', { name: 'Ada' }), { greeting: 'Hello, Ada from a jar' });
    });

    it('go:1.19 as a source', async () => {
      await deploy('go', { kind: 'go:1.19', code: GO_HELLO });
      assert.deepEqual(await result('go', { name: 'Ada' }), { greeting: 'Hello, Ada from Go' });
    });

    it('ruby:3.1 and php:8.2 as sources', async () => {
      await deploy('ruby', {
        kind: 'ruby:3.1',
        code: 'def main(args)\n  { "greeting" => "Hello, #{args["name"]} from Ruby" }\nend\n',
      });
      assert.deepEqual(await result('ruby', { name: 'Ada' }), { greeting: 'Hello, Ada from Ruby' });
      await deploy('php', {
        kind: 'php:8.2',
        code: '<?php\nfunction main(array $args): array {\n  return ["greeting" => "Hello, " . $args["name"] . " from PHP"];\n}\n',
      });
      assert.deepEqual(await result('php', { name: 'Ada' }), { greeting: 'Hello, Ada from PHP' });
    });

    it('native as a zip with exec, and as an ELF executable', async () => {
      await deploy('native-zip', { kind: 'native', code: b64(zipSync({ exec: text(NATIVE_SCRIPT) })), binary: true });
      assert.deepEqual(await result('native-zip'), { greeting: 'Hello from native' });
      writeFileSync(join(dir, 'hello.c'), NATIVE_C);
      const gcc = spawnSync('gcc', ['-O1', '-o', join(dir, 'hello'), join(dir, 'hello.c')]);
      assert.equal(gcc.status, 0, gcc.stderr.toString());
      await deploy('native-elf', { kind: 'native', code: readFileSync(join(dir, 'hello')).toString('base64'), binary: true });
      const greeting = await result('native-elf', { name: 'Ada' });
      assert.equal(greeting.greeting, 'Hello from C');
      assert.ok(Number(greeting.bytes) > 0);
    });

    it('keeps packages on disk across a restart, and makes one again from the stored source when its file is gone', async () => {
      const packages = join(server.dataDir, 'packages');
      const before = readdirSync(packages).filter((f) => f.endsWith('.json'));
      assert.ok(before.length >= 10, `one package per compiled or zipped version: ${before.join()}`);
      await server.stop();
      await server.restart();
      assert.deepEqual(await result('go', { name: 'Bo' }), { greeting: 'Hello, Bo from Go' });
      assert.deepEqual(
        readdirSync(packages)
          .filter((f) => f.endsWith('.json'))
          .sort(),
        before.sort(),
        'nothing was made again',
      );
      for (const file of before) rmSync(join(packages, file));
      await server.stop();
      await server.restart();
      assert.deepEqual(await result('java', { name: 'Bo' }), { greeting: 'Hello, Bo from Java' });
      assert.equal(readdirSync(packages).filter((f) => f.endsWith('.json')).length, 1, 'the Java package was made again');
    });
  });
});

describe('blank sandboxes of an interpreted kind start its runtime ahead', () => {
  let server: TestServer;
  const kinds = ['python:3', 'java:17', 'ruby:3.1', 'php:8.2'];

  before(async () => {
    server = await TestServer.start({
      env: {
        ISOLA_BACKENDS: 'isolate,process',
        ISOLA_PREWARM: `isolate:0,${kinds.map((kind) => `process:${kind}:1`).join(',')}`,
      },
    });
  });
  after(() => server.dispose());

  /** Waits until the pool holds a blank sandbox of every kind. */
  const poolFull = () =>
    waitFor(
      'a blank sandbox of each kind',
      async () =>
        /^isola_prewarmed_sandboxes (\d+)/m.exec(await server.metrics())?.[1] === String(kinds.length) ? true : undefined,
      60_000,
    );

  const sources: Record<string, { code: string; main?: string }> = {
    // Each reports how its process was started: a runtime started ahead was given no function name.
    'python:3': { code: 'import os, sys\ndef main(args):\n    return {"argv": sys.argv[1:], "cwd": os.getcwd()}\n' },
    'ruby:3.1': { code: 'def main(args)\n  { "argv" => ARGV, "cwd" => Dir.pwd }\nend\n' },
    'php:8.2': {
      code: '<?php\nfunction main(array $args): array {\n  return ["argv" => array_slice($GLOBALS["argv"], 1), "cwd" => getcwd()];\n}\n',
    },
    'java:17': {
      code: `import com.google.gson.JsonObject;
public class Where {
  public static JsonObject main(JsonObject args) {
    JsonObject result = new JsonObject();
    result.addProperty("classPath", System.getProperty("java.class.path"));
    result.addProperty("cwd", System.getProperty("user.dir"));
    return result;
  }
}
`,
      main: 'Where',
    },
  };

  it('loads the function into the runtime waiting in a blank sandbox of its kind', async () => {
    await poolFull();
    for (const kind of kinds) {
      const name = `ahead-${kind.replace(/\W/g, '-')}`;
      const { code, main } = sources[kind] as { code: string; main?: string };
      const put = await server.request('PUT', `/api/v1/namespaces/_/actions/${name}`, {
        exec: { kind, code, ...(main ? { main } : {}) },
        annotations: [{ key: 'isolation', value: 'process' }],
      });
      assert.equal(put.status, 200, JSON.stringify(put.body));
      const record = (await server.request<ActivationRecord>('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, {}))
        .body;
      assert.equal(record.response.status, 'success', JSON.stringify(record));
      assert.equal(annotation(record, 'coldStart'), true);
      const result = record.response.result as Record<string, unknown>;
      if (kind === 'java:17') assert.equal(result.classPath, 'launcher:gson.jar', `${kind}: the JVM started ahead`);
      else assert.deepEqual(result.argv, [], `${kind}: the interpreter started ahead`);
      // Its working directory is the function's, whichever process runs it.
      assert.match(String(result.cwd), /function-/, kind);
      const metrics = await server.metrics();
      assert.match(metrics, new RegExp(`isola_starts_total\\{[^}]*action="${name}"[^}]*start="stemcell"\\} 1`), kind);
    }
  });
});
