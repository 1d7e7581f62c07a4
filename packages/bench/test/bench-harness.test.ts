import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { egressSupported } from '../../../src/sandbox/network/egress.js';
import { TestServer } from '../../../test/helpers/server.js';
import { ATTACKS, Neighbour, served } from '../src/attacks.js';
import type { HarnessResults, Target } from '../src/harness.js';
import { plan, selectTargets, TARGETS } from '../src/harness.js';
import { KeepAliveClient } from '../src/http.js';
import { fmt, helloPerGb } from '../src/report.js';
import type { Metric } from '../src/resources.js';

const ROOT = fileURLToPath(new URL('../../..', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';

// Evaluated in the page as source text: a function compiled here would carry the TypeScript
// loader's helpers with it. Counts, per chart, the data marks (bars, dots, lines) and the axis
// labels that have a size on the page; for the resources chart (plain SVG), its bars and texts.
const DRAWN_MARKS = `[...document.querySelectorAll('figure')].map((figure) => {
  const visible = (selector) => [...figure.querySelectorAll(selector)].filter((element) => {
    const box = element.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  }).length;
  return {
    id: figure.id,
    marks: visible('.role-mark path, .role-mark line'),
    labels: visible('.role-axis-label text'),
    bars: visible('svg > rect'),
    texts: visible('svg > text'),
  };
})`;

/** Runs the real CLI: `isola bench --quick` on every backend this host has. */
const SPECIALISED = 'microvm:specialised';

function bench(out: string): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve) => {
    // Every target but the specialised microVM guest, whose first use builds a kernel (minutes on
    // two cores, once per host): the microVM suite builds and tests it, bench:guest measures it.
    const backends = TARGETS.filter((t) => t.id !== SPECIALISED).map((t) => t.id);
    const child = spawn(
      process.execPath,
      [join(ROOT, 'bin/isola.js'), 'bench', '--quick', '--backends', ...backends, '--out', out],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe("the escape battery's neighbour", () => {
  it('counts a call as served only when it succeeded', async () => {
    const server = await TestServer.start();
    const client = new KeepAliveClient(server.url, { authorization: `Basic ${Buffer.from(server.auth).toString('base64')}` });
    try {
      await server.deploy('neighbour-ok', 'function main() { return { ok: true }; }');
      await server.deploy('neighbour-failing', 'function main() { throw new Error("not served"); }');
      const ok = await new Neighbour(client, 'neighbour-ok').sample(3);
      assert.equal(ok.latencies.length, 3);
      assert.equal(served(ok), true);
      const failing = await new Neighbour(client, 'neighbour-failing').sample(3);
      assert.deepEqual({ failed: failing.failed, latencies: failing.latencies.length }, { failed: 3, latencies: 0 });
      assert.equal(served(failing), false);
      const during = await new Neighbour(client, 'neighbour-failing').during(new Promise((r) => setImmediate(r)));
      assert.equal(served(during), false, 'calls made while something runs are judged the same way');
    } finally {
      client.close();
      await server.dispose();
    }
  });
});

describe('isola bench --quick (the evaluation harness, end to end)', { timeout: 45 * 60_000 }, () => {
  const out = mkdtempSync(join(tmpdir(), 'isola-bench-test-'));
  let results: HarnessResults & { headline: { question: string; answer: string; value: number | null }[] };
  let run: { code: number | null; stderr: string; stdout: string };

  before(async () => {
    run = await bench(out);
    assert.equal(run.code, 0, `isola bench failed:\n${run.stderr.slice(-4000)}`);
    results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  });
  after(() => rmSync(out, { recursive: true, force: true }));

  it('prints where it wrote results.json, summary.md and report.html', () => {
    for (const file of ['results.json', 'summary.md', 'report.html']) {
      assert.ok(run.stdout.includes(join(out, file)), `stdout names ${file}`);
      assert.ok(existsSync(join(out, file)));
    }
    assert.match(readFileSync(join(out, 'summary.md'), 'utf8'), /## Headline[\s\S]*## Results[\s\S]*## Isolation/);
  });

  it('lists every backend, with the reason where one is not available', () => {
    assert.deepEqual(
      results.backends.map((b) => b.id),
      TARGETS.filter((t) => t.id !== SPECIALISED).map((t) => t.id),
    );
    // An isolation's name chooses its variants, but not the one whose first use builds a kernel.
    assert.deepEqual(
      selectTargets(['microvm']).map((t) => t.id),
      ['microvm', 'microvm:boot'],
    );
    for (const backend of results.backends) assert.ok(backend.detail.length > 0, `${backend.id} says why`);
    // Every server the harness stopped took its sandboxes, containers and VMs with it.
    assert.deepEqual(results.warnings, []);
    assert.ok(results.host.cpu && results.host.kernel && results.host.node);
    // The in-process backends work on any host that can run the suite.
    for (const id of ['isolate', 'wasm', 'process']) assert.ok(results.backends.find((b) => b.id === id)?.available, id);
  });

  it('measures cold start, warm latency, throughput and memory for every workload on every available backend', () => {
    const available = results.backends.filter((b) => b.available).map((b) => b.id);
    const names = [...new Set(results.workloads.map((w) => w.name))];
    for (const backend of available) {
      const rows = results.results.filter((r) => r.backend === backend);
      // Every workload is measured, or skipped for the reason the workload itself declares.
      const planned = plan(
        TARGETS.find((t) => t.id === backend) as Target,
        names,
        results.quick,
        results.host.accelerator !== 'KVM',
      );
      assert.deepEqual(
        rows.map((r) => ({ workload: r.workload, skipped: r.skipped })),
        planned.map((p) => ({ workload: p.workload.name, skipped: p.skip })),
        `${backend}: what was measured and what was skipped, and why`,
      );
      const measured = rows.filter((r) => !r.skipped);
      assert.ok(
        measured.some((r) => r.workload === 'hello'),
        `${backend} measured hello`,
      );
      for (const r of measured) {
        assert.equal(r.error, undefined, `${backend} ${r.workload}: ${r.error}`);
        assert.ok((r.coldStartMs?.p50 ?? 0) > 0, `${backend} ${r.workload} cold`);
        assert.ok((r.coldInitMs?.p50 ?? -1) >= 0, `${backend} ${r.workload} cold init`);
        assert.ok((r.warmMs?.p50 ?? 0) > 0, `${backend} ${r.workload} warm`);
        assert.ok((r.throughputRps ?? 0) > 0, `${backend} ${r.workload} throughput`);
        assert.equal(typeof r.pssMb, 'number', `${backend} ${r.workload} memory`);
        // An idle sandbox that is a process (or a VM) of its own costs megabytes; in the server
        // (isolate, wasm) the cost may be below the noise.
        if (!['isolate', 'wasm'].includes(backend)) assert.ok((r.pssMb ?? 0) > 0, `${backend} ${r.workload}: ${r.pssMb} MB`);
      }
    }
    assert.ok(
      ((results.results.find((r) => r.backend === 'isolate' && r.workload === 'hello')?.prewarmedStartMs?.p50 ?? 0) as number) >
        0,
      'isolate cold start with the pool ready',
    );
  });

  it('reports how warm calls compare with cold starts, and what an idle instance costs, from the figures measured', () => {
    const summary = readFileSync(join(out, 'summary.md'), 'utf8');
    const line = (question: string) => summary.split('\n').find((l) => l.startsWith(`| ${question} |`)) ?? '';
    const warmCold = line('Warm call vs cold start (hello p50)');
    const memory = line('Host memory per idle hello instance (PSS)');
    const hellos = results.results.filter((r) => r.workload === 'hello' && !r.skipped && !r.error);
    assert.ok(hellos.length >= 3);
    for (const r of hellos) {
      assert.ok(
        warmCold.includes(`${r.backend}: warm ${fmt(r.warmMs?.p50)} ms, cold ${fmt(r.coldStartMs?.p50)} ms`),
        `${r.backend} in: ${warmCold}`,
      );
      assert.ok(memory.includes(`${r.backend} ${fmt(r.pssMb, 1)} MB`), `${r.backend} in: ${memory}`);
    }
    // Every backend's idle instances per GB, the bare peer's beside those that have one.
    const perGb = line('Idle hello instances per GB (1024 MB)');
    for (const r of hellos) {
      const figure = helloPerGb(r);
      if (figure === null) continue;
      const beside = r.densityBeside;
      assert.ok(
        perGb.includes(
          beside
            ? `${r.backend} ${fmt(figure)} (${beside.peer} ${fmt(beside.barePerGb)}: ${fmt(beside.ratio, 2)}x)`
            : `${r.backend} ${fmt(figure)}`,
        ),
        `${r.backend} in: ${perGb}`,
      );
    }
  });

  it('measures CPU, memory, files and the network under every backend against bare, with a table and a chart', () => {
    const resources = results.resources;
    assert.ok(resources, 'the resources dimension ran by default');
    const [bare, ...rows] = resources.rows;
    assert.equal(bare?.target, 'bare');
    const egress = egressSupported().ok;
    const measuredThere: Metric[] = [
      'fileSequential',
      'fileRandom',
      ...(egress ? (['netThroughput', 'netLatency'] as const) : []),
    ];
    for (const metric of ['cpu', 'memory', ...measuredThere] as const)
      assert.ok((bare?.values[metric] ?? 0) > 0, `bare ${metric}: ${bare?.values[metric]}`);
    const available = results.backends.filter((b) => b.available && b.id !== 'microvm:boot').map((b) => b.id);
    assert.deepEqual(resources.unavailable, []);
    assert.deepEqual(rows.map((r) => r.target.replace(' (C)', '')).sort(), [...available].sort());
    for (const row of rows) {
      for (const metric of ['cpu', 'memory'] as const) {
        assert.ok((row.values[metric] ?? 0) > 0, `${row.target} ${metric}: ${row.values[metric]}`);
        assert.equal(typeof row.overhead[metric], 'number', `${row.target} ${metric} overhead`);
      }
      // Every backend with a file system and sockets measured them; the others say why not.
      const inProcess = row.target === 'isolate' || row.target.startsWith('wasm');
      for (const metric of measuredThere) {
        if (inProcess) assert.ok(row.notApplicable[metric], `${row.target} ${metric} says why not`);
        else assert.ok((row.values[metric] ?? 0) > 0, `${row.target} ${metric}: ${row.values[metric]}`);
      }
    }
    assert.match(
      readFileSync(join(out, 'summary.md'), 'utf8'),
      /## Resources against bare\n[\s\S]*\| CPU \(xorshift32 steps\) \| M steps\/s \|/,
    );
    assert.match(
      readFileSync(join(out, 'report.html'), 'utf8'),
      /<h2>Resources against bare<\/h2>[\s\S]*<figure id="chart-resources"><svg [\s\S]*<rect [\s\S]*<\/svg>/,
    );
  });

  it('measures the peers in the same run', () => {
    const nodeHttp = results.peers.find((p) => p.name === 'node:http');
    assert.ok((nodeHttp?.throughputRps ?? 0) > 0);
    const workerd = results.peers.find((p) => p.name === 'workerd' && p.workload === 'hello');
    assert.ok((workerd?.startMs?.p50 ?? 0) > 0 && (workerd?.warmMs?.p50 ?? 0) > 0, JSON.stringify(workerd));
    assert.ok((results.peers.find((p) => p.name === 'bare node start')?.startMs?.p50 ?? 0) > 0);
    for (const [peer, backend] of [
      ['runc run', 'container:runc'],
      ['crun run', 'container:crun'],
      ['runsc run', 'gvisor'],
      ['QEMU boot', 'microvm'],
    ]) {
      if (!results.backends.find((b) => b.id === backend)?.available) continue;
      const found = results.peers.find((p) => p.name === peer);
      assert.ok((found?.startMs?.p50 ?? 0) > 0, `${peer}: ${JSON.stringify(found)}`);
    }
    for (const peer of results.peers) assert.equal(peer.error, undefined, `${peer.name}: ${peer.error}`);
  });

  it('runs the escape battery and tells contained from not contained', () => {
    const attacked = results.backends.filter((b) => b.available && TARGETS.find((t) => t.id === b.id)?.attacks);
    for (const backend of attacked) {
      const rows = results.isolation.filter((r) => r.backend === backend.id);
      assert.deepEqual(
        rows.map((r) => r.attack),
        ATTACKS.map((a) => a.name),
        backend.id,
      );
    }
    const cell = (backend: string, attack: string) => results.isolation.find((r) => r.backend === backend && r.attack === attack);
    // What every sandboxing backend must contain (not timing-dependent, so asserted).
    const strict = [
      'read-host-files',
      'list-host-processes',
      'reach-network',
      'write-host-files',
      'env-leak',
      'proc-leak',
      'memory-bomb',
      // Egress needs root, ip and nft; where it cannot be given, the attack cannot be run at all.
      ...(egressSupported().ok ? ['reach-network-egress'] : []),
    ];
    for (const backend of attacked.filter((b) => b.id !== 'process')) {
      for (const attack of strict)
        assert.equal(cell(backend.id, attack)?.contained, true, `${backend.id} ${attack}: ${cell(backend.id, attack)?.note}`);
    }
    // As root a process sandbox gets an empty network namespace, its own uid and a private /tmp,
    // so reaching the network and writing where the host would see it are contained; without
    // root it shares the server's network, user and /tmp, and the battery must see that too.
    const root = process.getuid?.() === 0;
    assert.equal(cell('process', 'reach-network')?.contained, root, cell('process', 'reach-network')?.note);
    // With egress a process sandbox runs in a network namespace of its own, off the host.
    if (egressSupported().ok) {
      assert.equal(cell('process', 'reach-network-egress')?.contained, true, cell('process', 'reach-network-egress')?.note);
    }
    assert.equal(
      cell('process', 'write-host-files')?.contained,
      process.getuid?.() === 0,
      cell('process', 'write-host-files')?.note,
    );
    assert.equal(cell('process', 'env-leak')?.contained, true, 'the process backend passes a clean environment');
    assert.equal(cell('wasm', 'fork-bomb')?.attempted, false);
  });

  it('answers the headline questions from the run', () => {
    const answered = (question: string) => results.headline.find((h) => h.question.startsWith(question));
    const hasContainer = results.backends.some((b) => b.isolation === 'container' && b.available);
    if (hasContainer) {
      assert.ok((answered('WebAssembly vs container')?.value ?? 0) > 0);
      assert.ok((answered('V8 isolate vs container')?.value ?? 0) > 0);
    }
    if (results.backends.find((b) => b.id === 'microvm')?.available) {
      // Restoring a snapshot must beat booting the same guest.
      assert.ok((answered('microVM snapshot restore vs boot')?.value ?? 0) > 1);
    }
    if (results.backends.find((b) => b.id === 'vm')?.available && results.backends.find((b) => b.id === 'microvm')?.available) {
      assert.ok((answered('Full VM (q35, firmware, PCI) vs microVM')?.value ?? 0) > 0);
    }
    // Every backend's CPU and memory bandwidth against bare.
    const resources = answered('CPU / memory bandwidth overhead against bare');
    for (const row of results.resources?.rows.slice(1) ?? [])
      assert.match(resources?.answer ?? '', new RegExp(`${row.target.replace(/[()]/g, '\\$&')} [-+]?[\\d.]+% / [-+]?[\\d.]+%`));
    if (
      results.backends.find((b) => b.id === 'gvisor')?.available &&
      results.backends.find((b) => b.id === 'container:runc')?.available
    ) {
      assert.ok((answered('gVisor vs runc')?.value ?? 0) > 0);
    }
    // Density beside the bare peer of the same guest, measured in turns in the same run.
    for (const backend of ['process', 'container:runc', 'container:crun', 'gvisor', 'microvm']) {
      if (!results.backends.find((b) => b.id === backend)?.available) continue;
      const hello = results.results.find((r) => r.backend === backend && r.workload === 'hello');
      const beside = hello?.densityBeside;
      assert.ok(beside, `${backend} hello has idle instances beside its bare peer: ${hello?.densityBesideError}`);
      assert.ok(beside.platformMb > 0 && beside.bareMb > 0, JSON.stringify(beside));
      assert.equal(beside.samples.platform.length, beside.rounds);
      assert.ok((answered(`Density of ${backend} vs its bare peer`)?.value ?? 0) > 0, backend);
    }
    assert.match(answered('V8 isolate density')?.answer ?? '', /target at least 1,000, (met|not met)|less than the noise/);
    // The overhead over each runtime's bare CLI comes from samples taken in turns with it.
    for (const backend of ['container:runc', 'container:crun', 'gvisor']) {
      if (!results.backends.find((b) => b.id === backend)?.available) continue;
      const hello = results.results.find((r) => r.backend === backend && r.workload === 'hello');
      assert.ok(hello?.sideBySide, `${backend} hello has side-by-side samples`);
      assert.ok(hello.sideBySide.bareMs.p50 > 0 && hello.sideBySide.apiMs.p50 > 0);
      assert.match(answered(`Platform overhead on a ${backend}`)?.question ?? '', new RegExp(backend));
    }
  });

  it('renders report.html with its charts drawn, in headless Chromium', {
    skip: existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (npx isola setup browser)`,
  }, async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking'],
    });
    try {
      const page = await browser.newPage();
      const requests: string[] = [];
      page.on('request', (request) => {
        if (!request.url().startsWith('file:')) requests.push(request.url());
      });
      await page.goto(`file://${join(out, 'report.html')}`);
      const charts = (await page.evaluate(DRAWN_MARKS)) as {
        id: string;
        marks: number;
        labels: number;
        bars: number;
        texts: number;
      }[];
      const ids = charts.map((c) => c.id);
      for (const id of [
        'chart-cold-start',
        'chart-warm',
        'chart-throughput',
        'chart-memory',
        'chart-peers',
        'chart-isolation',
        'chart-resources',
      ]) {
        assert.ok(ids.includes(id), `${id} is in the report`);
      }
      for (const chart of charts) {
        if (chart.id === 'chart-resources') {
          // A bar per backend and metric measured, and the metrics' names.
          assert.ok(chart.bars > 0 && chart.texts > 0, `${chart.id} draws its data: ${JSON.stringify(chart)}`);
          continue;
        }
        assert.ok(chart.marks > 0, `${chart.id} draws its data: ${JSON.stringify(chart)}`);
        assert.ok(chart.labels > 0, `${chart.id} has axis labels`);
      }
      assert.deepEqual(requests, [], 'the report needs no network');
    } finally {
      await browser.close();
    }
  });
});
