import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const RUNNER = fileURLToPath(new URL('../scripts/run-tests.js', import.meta.url));

const SAMPLE = `import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
describe('a sample suite', () => {
  it('passes quietly', () => {});
  it('fails loudly', () => { assert.equal('seen', 'expected in the summary'); });
});
`;

/** Runs the runner on one file as a user would: outside this test run, whose context Node passes on in the environment. */
function runOn(file: string): Promise<{ code: number | null; stdout: string }> {
  const env = { ...process.env };
  delete env.NODE_TEST_CONTEXT;
  return new Promise((resolve) => {
    // --no-build: the suites beside this one run servers on dist/, which a build would rewrite.
    const child = execFile(process.execPath, [RUNNER, '--no-build', file], { env, timeout: 120_000 }, (_error, stdout) =>
      resolve({ code: child.exitCode, stdout: String(stdout) }),
    );
  });
}

describe('the test runner (scripts/run-tests.js)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'isola-run-tests-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('fails the run and repeats each failure, with its error, after the totals', async () => {
    const sample = join(dir, 'sample.test.ts');
    writeFileSync(sample, SAMPLE);
    const { code, stdout } = await runOn(sample);
    assert.equal(code, 1, stdout);
    const totals = stdout.lastIndexOf('# fail 1');
    assert.ok(totals >= 0, stdout);
    const summary = stdout.slice(totals);
    assert.match(summary, /# 2 failed \(tests and the suites around them\):/);
    assert.match(summary, /not ok 2 - fails loudly/);
    assert.match(summary, /expected in the summary/);
    assert.match(summary, /not ok 1 - a sample suite/);
    assert.doesNotMatch(summary, /passes quietly/);
  });

  it('prints no summary when everything passed', async () => {
    const sample = join(dir, 'passing.test.ts');
    writeFileSync(sample, "import { it } from 'node:test';\nit('passes', () => {});\n");
    const { code, stdout } = await runOn(sample);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /# pass 1/);
    assert.doesNotMatch(stdout, /failed \(tests and the suites around them\)/);
  });
});
