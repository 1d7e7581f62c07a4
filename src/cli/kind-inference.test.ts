import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { zipSync } from 'fflate';
import { execCodeOf, inferKind } from './kind-inference.js';

const text = (value: string) => Buffer.from(value);
const zip = (files: Record<string, string>) =>
  Buffer.from(zipSync(Object.fromEntries(Object.entries(files).map(([name, content]) => [name, text(content)]))));

describe('the kind of a file', () => {
  it('follows the extension', () => {
    const cases: [string, string][] = [
      ['a.js', 'nodejs:20'],
      ['a.cjs', 'nodejs:20'],
      ['a.mjs', 'nodejs:20'],
      ['a.ts', 'nodejs:20'],
      ['a.py', 'python:3'],
      ['A.java', 'java:17'],
      ['a.jar', 'java:17'],
      ['a.go', 'go:1.19'],
      ['a.rb', 'ruby:3.1'],
      ['a.php', 'php:8.2'],
      ['a.wasm', 'wasm'],
      ['dir/UPPER.PY', 'python:3'],
    ];
    for (const [file, kind] of cases) assert.equal(inferKind(file, text('x')), kind, file);
  });

  it('reads a zip by what it holds, whatever its name', () => {
    assert.equal(inferKind('f.zip', zip({ 'package.json': '{}', 'index.js': '' })), 'nodejs:20');
    assert.equal(inferKind('f.zip', zip({ '__main__.py': '', 'virtualenv/x.py': '' })), 'python:3');
    assert.equal(inferKind('f.zip', zip({ 'META-INF/MANIFEST.MF': '', 'Hello.class': '' })), 'java:17');
    assert.equal(inferKind('f.zip', zip({ 'go.mod': 'module a', 'main.go': '' })), 'go:1.19');
    assert.equal(inferKind('f.zip', zip({ 'hello.go': '' })), 'go:1.19');
    assert.equal(inferKind('f.zip', zip({ exec: '#!/bin/sh' })), 'native');
    assert.equal(inferKind('bundle', zip({ 'package.json': '{}' })), 'nodejs:20', 'a zip without the extension');
    assert.throws(
      () => inferKind('f.zip', zip({ 'README.md': '' })),
      /Cannot tell which kind f\.zip is: .*package\.json: nodejs:20.*--kind/,
    );
    assert.throws(() => inferKind('f.zip', text('not a zip')), /f\.zip is not a readable zip/);
  });

  it('takes an ELF executable as native, --kind over everything, and refuses what it cannot tell', () => {
    assert.equal(inferKind('hello', readFileSync('/bin/true')), 'native');
    assert.equal(inferKind('hello.txt', text('x'), 'python:3'), 'python:3');
    assert.equal(inferKind('a.js', text('x'), 'nodejs:20'), 'nodejs:20');
    for (const file of ['hello', 'hello.txt', 'hello.rs']) {
      assert.throws(
        () => inferKind(file, text('print("hi")')),
        new RegExp(`Cannot tell how to run ${file.replace('.', '\\.')}: .*\\.js .*\\.py \\(python:3\\).*\\.go.*native.*--kind`),
      );
    }
  });

  it('sends zips, executables and wasm base64, sources as text', () => {
    assert.deepEqual(execCodeOf('python:3', text('print(1)')), { code: 'print(1)', binary: false });
    const zipped = zip({ '__main__.py': '' });
    assert.deepEqual(execCodeOf('python:3', zipped), { code: zipped.toString('base64'), binary: true });
    const elf = readFileSync('/bin/true');
    assert.deepEqual(execCodeOf('native', elf), { code: elf.toString('base64'), binary: true });
    assert.equal(execCodeOf('wasm', text('\0asm')).binary, true);
  });
});
