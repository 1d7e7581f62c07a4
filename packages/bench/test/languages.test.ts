import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { actionLoopStart } from '../src/actionloop.js';
import { HarnessError, type HarnessResults, selectDimensions } from '../src/harness.js';
import { LANGUAGE_PARAMS, LANGUAGE_PEERS, LANGUAGE_WORKLOADS, sameResult } from '../src/languages.js';
import {
  type LanguageRow,
  type LanguagesResults,
  languageHeadline,
  languageTargetChecks,
  languageTargets,
  referenceResult,
  selectKinds,
} from '../src/languages-dimension.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));

/** The host tools a kind's bare peer needs, for skipping with a reason where one is missing. */
const NEEDS: Record<string, string[]> = {
  'nodejs:20': [],
  'python:3': ['/usr/bin/python3'],
  'java:17': ['/usr/bin/java', '/usr/bin/javac', '/usr/share/java/gson.jar'],
  'go:1.19': ['/usr/bin/go'],
  'ruby:3.1': ['/usr/bin/ruby'],
  'php:8.2': ['/usr/bin/php'],
  native: ['/usr/bin/gcc'],
};

describe('the languages dimension: its functions and bare peers', () => {
  const cache = mkdtempSync(join(tmpdir(), 'isola-languages-test-'));
  after(() => rmSync(cache, { recursive: true, force: true }));

  for (const peer of LANGUAGE_PEERS) {
    const missing = NEEDS[peer.kind]?.filter((path) => !existsSync(path)) ?? [];
    it(`${peer.kind}: ${peer.name} returns what the JavaScript version returns, for every workload`, {
      skip: missing.length > 0 ? `not installed here: ${missing.join(', ')}` : false,
    }, async () => {
      for (const workload of LANGUAGE_WORKLOADS) {
        const start = await actionLoopStart(peer.prepare(workload, cache, 256), LANGUAGE_PARAMS[workload]);
        assert.ok(
          sameResult(start.result, referenceResult(workload)),
          `${peer.name} ${workload}: ${JSON.stringify(start.result)} vs ${JSON.stringify(referenceResult(workload))}`,
        );
        assert.ok(start.ackMs > 0 && start.resultMs >= start.ackMs, JSON.stringify(start));
      }
    });
  }

  it('reports a runtime that cannot load its function with what it printed, and leaves no process behind', async () => {
    const dir = join(cache, 'broken');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'main.js'), 'process.stderr.write("cannot load: no such module\\n"); process.exit(3);');
    await assert.rejects(
      actionLoopStart({ command: process.execPath, args: ['main.js'], cwd: dir }, {}),
      /exited \(3\) before answering: cannot load: no such module/,
    );
  });

  it('refuses a line on fd 3 that is not JSON', async () => {
    const dir = join(cache, 'garbled');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'main.js'), 'require("node:fs").writeSync(3, "ready\\n"); setInterval(() => {}, 1000);');
    await assert.rejects(actionLoopStart({ command: process.execPath, args: ['main.js'], cwd: dir }, {}), /not JSON \(ready\)/);
  });

  it('compares results as JSON values, key order aside', () => {
    assert.equal(sameResult({ a: 1, b: [1, { c: 'x' }] }, { b: [1, { c: 'x' }], a: 1 }), true);
    assert.equal(sameResult({ a: 1 }, { a: 1, b: 2 }), false);
    assert.equal(sameResult({ topRank: 0.000423 }, { topRank: 4.23e-4 }), true);
    assert.equal(sameResult({ topRank: 0.000423 }, { topRank: 0.000424 }), false);
  });
});

describe('the languages dimension: choosing what to measure', () => {
  it('resolves kinds by name or short name and refuses others with the list', () => {
    assert.deepEqual(selectKinds(['python', 'java:17']), ['python:3', 'java:17']);
    assert.equal(selectKinds(undefined).length, 7);
    assert.throws(
      () => selectKinds(['cobol']),
      (e: unknown) => e instanceof HarnessError && /cobol.*nodejs:20/.test(e.message),
    );
  });

  it('runs the backends and resources dimensions unless told otherwise, and refuses an unknown dimension', () => {
    assert.deepEqual(selectDimensions(undefined), ['backends', 'resources']);
    assert.deepEqual(selectDimensions(['languages', 'backends']), ['backends', 'languages']);
    assert.throws(() => selectDimensions(['speed']), /Unknown dimension "speed"; choose from backends, resources, languages/);
  });

  it('leaves the boot variant of microvm out, and takes wasm for Python through Pyodide', () => {
    assert.deepEqual(
      languageTargets(undefined).map((t) => t.id),
      ['isolate', 'wasm', 'process', 'container:runc', 'gvisor', 'microvm'],
    );
    assert.deepEqual(
      languageTargets(['wasm', 'microvm', 'microvm:boot', 'container']).map((t) => t.id),
      ['wasm', 'container:runc', 'container:crun', 'microvm'],
    );
  });
});

describe('the languages dimension: targets and headline from the figures', () => {
  const row = (kind: LanguageRow['kind'], backend: string, cold: number, pooled?: number): LanguageRow => ({
    kind,
    backend,
    workload: 'hello',
    coldStartMs: { p50: cold, p99: cold * 2 },
    coldInitMs: { p50: 1, p99: 2 },
    ...(pooled !== undefined ? { pooledStartMs: { p50: pooled, p99: pooled }, pooledHits: '2 of 2' } : {}),
    warmMs: { p50: 1, p99: 2 },
    pssMb: 10,
    samples: { cold: 3, warm: 10, pooled: 2 },
  });
  const base = (): Omit<LanguagesResults, 'targets' | 'headline'> => ({
    quick: true,
    kinds: ['nodejs:20', 'python:3', 'java:17'],
    workloads: [],
    settings: { cold: 3, coldGraph: 1, warm: 10, warmGraph: 3, pooled: 2, snapshotRestores: 2, peerStarts: 3, sideBySide: 3 },
    backends: [],
    reference: { hello: {}, graph: {} },
    rows: [
      row('nodejs:20', 'isolate', 4, 2),
      row('nodejs:20', 'process', 60, 8),
      row('python:3', 'process', 100, 48),
      row('java:17', 'process', 300, 250),
      row('java:17', 'microvm', 5000),
    ],
    snapshots: [
      {
        kind: 'java:17',
        backend: 'microvm',
        workload: 'hello',
        restoreMs: { p50: 250, p99: 300 },
        restored: '2 of 2',
        bootMs: 5000,
        samples: 2,
      },
    ],
    sideBySide: [
      {
        kind: 'python:3',
        backend: 'container:runc',
        runtime: 'runc',
        apiMs: { p50: 130, p99: 150 },
        bareMs: { p50: 100, p99: 120 },
        samples: 3,
        package: 'x',
      },
    ],
    peers: [
      {
        kind: 'python:3',
        name: 'bare python3',
        workload: 'hello',
        description: '',
        startMs: { p50: 40, p99: 45 },
        ackMs: { p50: 39, p99: 44 },
        samples: 3,
      },
    ],
    durationSeconds: 1,
    warnings: [],
  });

  it('checks each target against the ratio of figures taken in the run', () => {
    const checks = languageTargetChecks(base());
    const check = (prefix: string) => checks.find((c) => c.name.startsWith(prefix));
    // The pooled start (48 ms) over the bare start (40 ms), the server as it runs by default.
    assert.deepEqual(
      { measured: check('Python cold start')?.measured, met: check('Python cold start')?.met },
      { measured: 1.2, met: true },
    );
    assert.match(check('Python cold start')?.basis ?? '', /without one 100 ms = 2.5x/);
    assert.deepEqual(
      { measured: check('Java cold start')?.measured, met: check('Java cold start')?.met },
      { measured: 20, met: true },
    );
    const overhead = check('Platform overhead on a container:runc cold start, python:3');
    assert.deepEqual({ measured: overhead?.measured, met: overhead?.met }, { measured: 30, met: false });
  });

  it('prefers bare starts taken in turns with the pooled ones to the peers measured apart', () => {
    const results = base();
    const python = results.rows.find((r) => r.kind === 'python:3') as LanguageRow;
    python.bareInTurns = { name: 'bare python3', startMs: { p50: 60, p99: 70 }, samples: 2 };
    const check = languageTargetChecks(results).find((c) => c.name.startsWith('Python cold start'));
    assert.deepEqual({ measured: check?.measured, met: check?.met }, { measured: 0.8, met: true });
    assert.match(check?.basis ?? '', /bare python3 60 ms \(spawn to first result, 2 taken in turns/);
  });

  it('says what a target needs when it could not be measured', () => {
    const results = { ...base(), snapshots: [], peers: [] };
    const checks = languageTargetChecks(results);
    for (const name of ['Python cold start', 'Java cold start']) {
      const check = checks.find((c) => c.name.startsWith(name));
      assert.deepEqual({ measured: check?.measured, met: check?.met }, { measured: null, met: null }, name);
      assert.ok((check?.basis.length ?? 0) > 0);
    }
  });

  it("names each language's fastest start and its distance from a JavaScript isolate's", () => {
    const headline = languageHeadline(base());
    assert.deepEqual(
      headline.map((h) => [h.kind, h.fastest, h.startMs, h.vsIsolate]),
      [
        ['nodejs:20', 'isolate, pool ready', 2, 1],
        ['python:3', 'process, pool ready', 48, 24],
        ['java:17', 'process, pool ready', 250, 125],
      ],
    );
  });
});

// What the deploy makes of a function in another language: without it no kind but JavaScript deploys.
const PACKAGES = join(ROOT, 'src/platform/function-packages.ts');

/** `isola bench --dimension languages` end to end on the process backend, with few samples. */
describe('isola bench --dimension languages (smoke)', {
  timeout: 10 * 60_000,
  skip: existsSync(PACKAGES) ? false : 'this checkout of the platform runs no Python functions yet',
}, () => {
  const out = mkdtempSync(join(tmpdir(), 'isola-bench-languages-'));
  after(() => rmSync(out, { recursive: true, force: true }));

  it('measures every kind it was given through the server and writes the tables', async () => {
    const run = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
      const child = spawn(
        process.execPath,
        [
          join(ROOT, 'bin/isola.js'),
          'bench',
          '--dimension',
          'languages',
          '--quick',
          '--backends',
          'process',
          '--kinds',
          'nodejs',
          'python',
          '--out',
          out,
        ],
        { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
      );
      let stderr = '';
      child.stderr.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      child.on('exit', (code) => resolve({ code, stderr }));
    });
    assert.equal(run.code, 0, run.stderr.slice(-3000));
    const results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as HarnessResults;
    assert.deepEqual(results.dimensions, ['languages']);
    assert.deepEqual(results.results, [], 'the backends dimension did not run');
    const languages = results.languages as LanguagesResults;
    for (const kind of ['nodejs:20', 'python:3'] as const) {
      for (const workload of LANGUAGE_WORKLOADS) {
        const r = languages.rows.find((x) => x.kind === kind && x.backend === 'process' && x.workload === workload);
        assert.ok(r, `${kind} ${workload} has a row`);
        assert.equal(r.error, undefined, `${kind} ${workload}: ${r.error}`);
        assert.ok((r.coldStartMs?.p50 ?? 0) > 0 && (r.warmMs?.p50 ?? 0) > 0, `${kind} ${workload}: ${JSON.stringify(r)}`);
        // Quick runs take an idle instance's memory from hello only.
        if (workload === 'hello') assert.ok((r.pssMb ?? 0) > 0, `${kind} ${workload}: an idle process costs memory`);
        assert.equal(r.matchesReference, true, `${kind} ${workload} returned ${JSON.stringify(r.result)}`);
      }
      const peer = languages.peers.find((p) => p.kind === kind && p.workload === 'hello');
      assert.ok((peer?.startMs?.p50 ?? 0) > 0 && peer?.matchesReference, JSON.stringify(peer));
    }
    const python = languages.targets.find((t) => t.name.startsWith('Python cold start'));
    assert.ok((python?.measured ?? 0) > 0, JSON.stringify(python));
    const summary = readFileSync(join(out, 'summary.md'), 'utf8');
    assert.match(summary, /## Languages[\s\S]*### Targets[\s\S]*### Fastest start per language[\s\S]*### Bare runtimes/);
    assert.doesNotMatch(summary, /## Headline/, 'no backends section when that dimension did not run');
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /<figure id="chart-languages-cold-start"><svg[\s\S]*<h2>Languages<\/h2>/);
  });
});
