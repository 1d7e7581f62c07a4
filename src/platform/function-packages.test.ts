import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { compileFunction } from 'node:vm';
import { unzipSync, zipSync } from 'fflate';
import { zipOf } from '../../test/helpers/zips.js';
import { IsolaError } from '../core/errors.js';
import type { Exec } from '../core/types.js';
import { FunctionPackages, LAUNCHERS_DIR } from './function-packages.js';
import { MAX_UNPACKED_BYTES, MAX_ZIP_ENTRIES } from './packages/zip.js';

/**
 * The kinds' launchers are read from src/guest/launchers; until those are in the tree, these
 * stand-ins (which only need to be there, and to compile) take their place.
 */
function launchersFor(dir: string): string {
  if (existsSync(join(LAUNCHERS_DIR, 'IsolaLauncher.java')) && existsSync(join(LAUNCHERS_DIR, 'launcher.go')))
    return LAUNCHERS_DIR;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'launcher.py'), 'import sys\n');
  writeFileSync(join(dir, 'launcher.rb'), 'STDOUT.sync = true\n');
  writeFileSync(join(dir, 'launcher.php'), '<?php\n');
  writeFileSync(
    join(dir, 'IsolaLauncher.java'),
    'import com.google.gson.JsonObject;\npublic class IsolaLauncher { public static void main(String[] args) { new JsonObject(); } }\n',
  );
  writeFileSync(
    join(dir, 'launcher.go'),
    'package main\n\nfunc main() {\n\tvar f func(map[string]interface{}) map[string]interface{} = Main\n\t_ = f\n}\n',
  );
  return dir;
}

const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const names = (zip: string) => Object.keys(unzipSync(Buffer.from(zip, 'base64'))).sort();
const fileIn = (zip: string, name: string) => Buffer.from(unzipSync(Buffer.from(zip, 'base64'))[name] ?? []).toString('utf8');

describe('function packages', () => {
  let dir: string;
  let packages: FunctionPackages;
  const prepare = (exec: Exec, name = 'fn') => packages.prepare({ name, exec });
  const refused = async (exec: Exec, pattern: RegExp) => {
    await assert.rejects(prepare(exec), (error: unknown) => {
      assert.ok(error instanceof IsolaError, String(error));
      assert.equal(error.status, 400);
      assert.match(error.message, pattern);
      return true;
    });
  };

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'isola-packages-'));
    packages = new FunctionPackages({ dataDir: join(dir, 'data'), launchersDir: launchersFor(join(dir, 'launchers')) });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  describe('Node.js sources', () => {
    it('leaves CommonJS as it is, a syntax error included (reported when it loads, as before)', async () => {
      assert.deepEqual(await prepare({ kind: 'nodejs:20', code: 'function main() { return {}; }', binary: false }), {
        extension: '.js',
      });
      assert.deepEqual(await prepare({ kind: 'nodejs:20', code: 'function main( {', binary: false }), { extension: '.js' });
      assert.deepEqual(
        await prepare({ kind: 'nodejs:20', code: 'function main() {\n  return { a: { b: 1 + } };\n}', binary: false }),
        {
          extension: '.js',
        },
      );
    });

    it('compiles an ES module to CommonJS whose default export answers as main', async () => {
      const prepared = await prepare({
        kind: 'nodejs:20',
        code: 'import { join } from "node:path";\nexport default function (p) { return { joined: join("a", p.b) }; }\n',
        binary: false,
      });
      assert.equal(prepared.extension, '.mjs');
      assert.equal(prepared.package, undefined);
      const module = { exports: {} as Record<string, (p: unknown) => unknown> };
      const load = compileFunction(prepared.code ?? '', ['exports', 'require', 'module']);
      load(module.exports, (await import('node:module')).createRequire(import.meta.url), module);
      assert.deepEqual(module.exports.main?.({ b: 'c' }), { joined: 'a/c' });
      assert.match(prepared.code?.split('\n')[1] ?? '', /function fn_default\(p\)/, 'the function stays on its line');
    });

    it("compiles TypeScript with each statement on its source's line, and refuses TypeScript that does not compile with the compiler message", async () => {
      const source =
        'interface P {\n  name: string;\n}\n\nexport function main(p: P): { hi: string } {\n  const hi: string = p.name;\n  return { hi };\n}\n';
      const prepared = await prepare({ kind: 'nodejs:20', code: source, binary: false }, 'greet');
      assert.equal(prepared.extension, '.ts');
      const lines = prepared.code?.split('\n') ?? [];
      assert.match(lines[4] ?? '', /^function main\(p\) \{$/);
      assert.match(lines[5] ?? '', /const hi = p\.name;/);
      assert.doesNotMatch(prepared.code ?? '', /sourceMappingURL/);
      // A template literal over several lines cannot be laid out line for line: a source map says where lines came from.
      const template = await prepare(
        { kind: 'nodejs:20', code: 'export function main(): { t: string } {\n  return { t: `a\nb` };\n}\n', binary: false },
        'templated',
      );
      const map = JSON.parse(
        Buffer.from(
          /sourceMappingURL=data:application\/json;base64,(\S+)/.exec(template.code ?? '')?.[1] ?? '',
          'base64',
        ).toString(),
      ) as { sources: string[] };
      assert.deepEqual(map.sources, ['templated.ts']);
      await refused(
        { kind: 'nodejs:20', code: 'export function main(p: { a: string }) {\n  return { a: p.a + };\n}\n', binary: false },
        /does not compile:\nfn\.ts:2:\d+: Unexpected "}"/,
      );
    });

    it('refuses top-level await, which CommonJS cannot hold', async () => {
      await refused(
        {
          kind: 'nodejs:20',
          code: 'const x = await Promise.resolve(1);\nexport function main() { return { x }; }\n',
          binary: false,
        },
        /top-level await.*move the await into main/s,
      );
    });
  });

  describe('zips', () => {
    const nodeZip = (extra: Record<string, Uint8Array> = {}) =>
      b64(
        zipSync({
          'package.json': Buffer.from(JSON.stringify({ name: 'fn', main: 'lib/entry.js' })),
          'lib/entry.js': Buffer.from('exports.main = () => require("left-pad")("x", 3);'),
          'node_modules/left-pad/index.js': Buffer.from('module.exports = (s, n) => ({ padded: s.padStart(n) });'),
          ...extra,
        }),
      );

    it("packs a Node.js zip with its module from package.json's main", async () => {
      const prepared = await prepare({ kind: 'nodejs:20', code: nodeZip(), binary: true });
      assert.equal(prepared.package?.module, 'lib/entry.js');
      assert.deepEqual(names(prepared.package?.zip ?? ''), ['lib/entry.js', 'node_modules/left-pad/index.js', 'package.json']);
      await refused(
        { kind: 'nodejs:20', code: b64(zipSync({ 'package.json': Buffer.from('{}') })), binary: true },
        /no index\.js/,
      );
    });

    it('refuses each bad shape of zip with its own reason', async () => {
      const bad: [Parameters<typeof zipOf>[0], RegExp][] = [
        [[{ name: '/etc/cron.d/x', data: 'x' }], /"\/etc\/cron\.d\/x" has an absolute path/],
        [[{ name: 'lib/../../outside.js', data: 'x' }], /escapes the directory with "\.\."/],
        [[{ name: 'index.js', data: '/etc/passwd', mode: 0o120777 }], /"index\.js" is a symbolic link/],
        [[{ name: 'fifo', mode: 0o010644 }], /"fifo" is not a regular file or a folder/],
        [
          [
            { name: 'index.js', data: 'a' },
            { name: 'index.js', data: 'b' },
          ],
          /the name "index\.js" appears twice/,
        ],
        [[{ name: 'bomb.bin', data: new Uint8Array(8 * 2 ** 20) }], /inflates more than 200 times.*zip bomb/],
      ];
      for (const [entries, pattern] of bad) {
        await refused(
          { kind: 'nodejs:20', code: b64(zipOf([{ name: 'package.json', data: '{}' }, ...entries])), binary: true },
          pattern,
        );
      }
      await refused({ kind: 'python:3', code: b64(Buffer.from('PK\x03\x04 not a zip at all')), binary: true }, /cannot be read/);
    });

    it('refuses a zip with too many entries or that unpacks to too much', async () => {
      const many = Array.from({ length: MAX_ZIP_ENTRIES + 1 }, (_, i) => ({ name: `f${i}`, data: '' }));
      await refused({ kind: 'nodejs:20', code: b64(zipOf(many)), binary: true }, new RegExp(`${MAX_ZIP_ENTRIES + 1} entries`));
      // Entries under the ratio check's floor that add up to more than the cap.
      const chunk = new Uint8Array(2 ** 20 - 1);
      const count = Math.ceil(MAX_UNPACKED_BYTES / chunk.length) + 1;
      const large = Array.from({ length: count }, (_, i) => ({ name: `part${i}`, data: chunk }));
      await refused({ kind: 'nodejs:20', code: b64(zipOf(large)), binary: true }, /unpacks to more than 128 MB/);
    });

    it('packs a Python source or zip (virtualenv/ included) with the launcher, and refuses a zip without __main__.py', async () => {
      const source = await prepare({ kind: 'python:3', code: 'def main(args):\n    return {"hi": 1}\n', binary: false });
      assert.deepEqual(names(source.package?.zip ?? ''), ['__main__.py', 'launcher.py']);
      assert.deepEqual(source.package?.command, ['/usr/bin/python3', '-u', 'launcher.py', 'main']);
      assert.equal(source.extension, '.py');
      const zipped = await prepare({
        kind: 'python:3',
        code: b64(
          zipSync({
            '__main__.py': Buffer.from('import greeting\ndef main(a):\n    return greeting.hello()\n'),
            'virtualenv/lib/python3.11/site-packages/greeting/__init__.py': Buffer.from('def hello():\n    return {"hi": 2}\n'),
          }),
        ),
        binary: true,
        main: 'main',
      });
      assert.ok(names(zipped.package?.zip ?? '').includes('virtualenv/lib/python3.11/site-packages/greeting/__init__.py'));
      await refused({ kind: 'python:3', code: b64(zipSync({ 'main.py': Buffer.from('') })), binary: true }, /needs __main__\.py/);
    });

    it('packs a native executable, or a zip with exec at its top', async () => {
      const elf = readFileSync('/bin/true');
      const raw = await prepare({ kind: 'native', code: elf.toString('base64'), binary: true });
      assert.deepEqual(raw.package?.command, ['./exec']);
      assert.deepEqual(raw.package?.executables, ['exec']);
      assert.equal(raw.package?.ack, false);
      const zipped = await prepare({
        kind: 'native',
        code: b64(zipSync({ exec: elf, 'data.txt': Buffer.from('x') })),
        binary: true,
      });
      assert.deepEqual(names(zipped.package?.zip ?? ''), ['data.txt', 'exec']);
      assert.equal(zipped.package?.lambdaRuntime, undefined);
      await refused(
        { kind: 'native', code: b64(zipSync({ run: elf })), binary: true },
        /exec \(speaks ActionLoop\) or bootstrap/,
      );
    });

    it('packs a zip with bootstrap and no exec as a Lambda custom runtime, keeping what the zip marks executable', async () => {
      const elf = readFileSync('/bin/true');
      const custom = await prepare({
        kind: 'native',
        code: b64(
          zipOf([
            { name: 'bootstrap', data: elf },
            { name: 'bin/helper', data: elf, mode: 0o100755 },
            { name: 'data.txt', data: 'x', mode: 0o100644 },
          ]),
        ),
        binary: true,
      });
      assert.deepEqual(custom.package?.command, ['./bootstrap']);
      assert.equal(custom.package?.lambdaRuntime, true);
      assert.deepEqual(custom.package?.executables?.slice().sort(), ['bin/helper', 'bootstrap']);
      // With exec too, it speaks ActionLoop as before.
      const both = await prepare({ kind: 'native', code: b64(zipSync({ bootstrap: elf, exec: elf })), binary: true });
      assert.deepEqual(both.package?.command, ['./exec']);
      assert.equal(both.package?.lambdaRuntime, undefined);
    });
  });

  describe('compiled languages', () => {
    const javaHello =
      'import com.google.gson.JsonObject;\n\npublic class Hello {\n  public static JsonObject main(JsonObject args) {\n    JsonObject r = new JsonObject();\n    r.addProperty("greeting", "hi");\n    return r;\n  }\n}\n';

    it('compiles Java with javac into function.jar beside the launcher and Gson', async () => {
      const prepared = await prepare({ kind: 'java:17', code: javaHello, binary: false });
      const files = names(prepared.package?.zip ?? '');
      assert.ok(
        files.includes('function.jar') && files.includes('gson.jar') && files.includes('launcher/IsolaLauncher.class'),
        files.join(),
      );
      assert.equal(prepared.package?.command?.at(-1), 'Hello');
      assert.ok(prepared.package?.command?.includes('-XX:MaxRAM={{memoryMb}}m'));
      const jar = unzipSync(unzipSync(Buffer.from(prepared.package?.zip ?? '', 'base64'))['function.jar'] ?? new Uint8Array());
      assert.deepEqual(Object.keys(jar), ['Hello.class']);
    });

    it('quotes javac when the source does not compile, and stores nothing on disk', async () => {
      const before = readdirSync(join(dir, 'data', 'packages')).filter((f) => f.endsWith('.json')).length;
      await refused(
        { kind: 'java:17', code: 'public class Broken {\n  public static int main() { return "x"; }\n}\n', binary: false },
        /The Java source does not compile:\nBroken\.java:2: error: incompatible types: String cannot be converted to int/,
      );
      assert.equal(readdirSync(join(dir, 'data', 'packages')).filter((f) => f.endsWith('.json')).length, before);
    });

    it('takes a jar, with main from the request or its manifest', async () => {
      const jar = b64(
        zipSync({
          'META-INF/MANIFEST.MF': Buffer.from('Manifest-Version: 1.0\nMain-Class: com.example.Hi\n'),
          'com/example/Hi.class': new Uint8Array([0xca, 0xfe]),
        }),
      );
      const prepared = await prepare({ kind: 'java:17', code: jar, binary: true });
      assert.equal(prepared.package?.command?.at(-1), 'com.example.Hi');
      await refused({ kind: 'java:17', code: b64(zipSync({ 'README.md': Buffer.from('x') })), binary: true }, /must be a jar/);
    });

    it('builds Go into a static exec, and quotes go build on an error or an outside import', async () => {
      const prepared = await prepare({
        kind: 'go:1.19',
        code: 'package main\n\nfunc Main(args map[string]interface{}) map[string]interface{} {\n\treturn map[string]interface{}{"hi": 1}\n}\n',
        binary: false,
      });
      assert.deepEqual(prepared.package?.command, ['./exec']);
      const exec = unzipSync(Buffer.from(prepared.package?.zip ?? '', 'base64')).exec ?? new Uint8Array();
      assert.deepEqual([...exec.subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
      await refused(
        {
          kind: 'go:1.19',
          code: 'package main\n\nfunc Main(args map[string]interface{}) map[string]interface{} {\n\treturn 1\n}\n',
          binary: false,
        },
        /The Go source does not compile:[\s\S]*function\.go:4:\d+: cannot use 1/,
      );
      await refused(
        {
          kind: 'go:1.19',
          code: 'package main\n\nimport "github.com/example/nothere"\n\nfunc Main(a map[string]interface{}) map[string]interface{} {\n\treturn nothere.X(a)\n}\n',
          binary: false,
        },
        /does not compile:[\s\S]*nothere/,
      );
    });

    it('finds a package again on disk after a restart, and makes it again when the cache was wiped', async () => {
      const exec: Exec = { kind: 'java:17', code: javaHello.replace('"hi"', '"again"'), binary: false };
      const first = await prepare(exec);
      const cached = readdirSync(join(dir, 'data', 'packages')).filter((f) => f.endsWith('.json'));
      const restarted = new FunctionPackages({ dataDir: join(dir, 'data'), launchersDir: launchersFor(join(dir, 'launchers')) });
      assert.deepEqual(await restarted.prepare({ name: 'fn', exec: { ...exec } }), first);
      for (const file of cached) rmSync(join(dir, 'data', 'packages', file));
      const wiped = new FunctionPackages({ dataDir: join(dir, 'data'), launchersDir: launchersFor(join(dir, 'launchers')) });
      const again = await wiped.prepare({ name: 'fn', exec: { ...exec } });
      assert.equal(fileIn(again.package?.zip ?? '', 'gson.jar').length > 0, true);
      assert.deepEqual(again.package?.command, first.package?.command);
    });
  });
});
