import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../examples/wasm/build.sh', import.meta.url));
const ASC = fileURLToPath(new URL('../packages/bench/node_modules/.bin/asc', import.meta.url));
const TOOLCHAINS = ['/usr/bin/clang', '/usr/bin/rustc', '/usr/lib/rustlib/wasm32-wasi', ASC];
const missing = TOOLCHAINS.filter((path) => !existsSync(path));

describe('the WebAssembly examples', {
  skip: missing.length > 0 ? `toolchains missing: ${missing.join(', ')} (npx isola setup wasm)` : false,
}, () => {
  it('build offline from AssemblyScript, C and Rust into modules with the ABI Isola detects', () => {
    const out = mkdtempSync(join(tmpdir(), 'isola-examples-'));
    try {
      execFileSync('bash', [SCRIPT, out], { stdio: 'pipe' });
      const exportsOf = (file: string) =>
        WebAssembly.Module.exports(new WebAssembly.Module(readFileSync(join(out, file)))).map((e) => e.name);
      assert.ok(exportsOf('greet.wasm').includes('isola_handle'), 'AssemblyScript: reactor');
      assert.ok(exportsOf('fib.wasm').includes('isola_handle'), 'Rust: reactor');
      assert.ok(exportsOf('wordcount.wasm').includes('_start'), 'C: command');
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
});
