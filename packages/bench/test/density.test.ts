import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { waitFor } from '../../../test/helpers/server-process.js';
import type { HarnessResults, Target, WorkloadResult } from '../src/harness.js';
import { barePeerOf, startTargetServer, TARGETS, TargetRun } from '../src/harness.js';
import { perGb, processesNaming, serverProcesses } from '../src/pss.js';
import { headline } from '../src/report.js';
import { WORKLOADS, type Workload } from '../src/workloads.js';

const target = (id: string) => TARGETS.find((t) => t.id === id) as Target;

function hello(backend: string, pssMb: number, beside?: WorkloadResult['densityBeside']): WorkloadResult {
  return {
    backend,
    workload: 'hello',
    kind: 'nodejs:20',
    coldStartMs: { p50: 10, p99: 12 },
    coldInitMs: { p50: 5, p99: 6 },
    warmMs: { p50: 1, p99: 2 },
    throughputRps: 100,
    pssMb,
    density: perGb(pssMb),
    samples: { cold: 3, warm: 20, throughputSeconds: 1 },
    ...(beside ? { densityBeside: beside } : {}),
  };
}

function beside(peer: string, platformMb: number, bareMb: number): NonNullable<WorkloadResult['densityBeside']> {
  return {
    peer,
    instances: 3,
    rounds: 2,
    platformMb,
    bareMb,
    platformPerGb: perGb(platformMb),
    barePerGb: perGb(bareMb),
    ratio: Math.round((bareMb / platformMb) * 1000) / 1000,
    serverMb: { platform: 0.1, bare: -0.4 },
    samples: { platform: [platformMb, platformMb], bare: [bareMb, bareMb] },
  };
}

function results(rows: WorkloadResult[]): HarnessResults {
  return {
    version: 1,
    quick: true,
    host: { cpu: 'test', cores: 2 } as HarnessResults['host'],
    settings: { concurrency: 1, memoryBudgetMb: 1024, coldSamples: 3, warmSamples: 20, throughputSeconds: 1 },
    durationSeconds: 1,
    backends: TARGETS.map((t) => ({ id: t.id, isolation: t.isolation, description: t.description, available: true, detail: '' })),
    workloads: [],
    results: rows,
    peers: [],
    isolation: [],
    warnings: [],
    dimensions: ['backends'],
  };
}

describe('idle instances per GB', () => {
  it('is 1024 MB over the cost of an instance, and nothing for a cost not above zero', () => {
    assert.equal(perGb(8), 128);
    assert.equal(perGb(0.9), 1137);
    assert.equal(perGb(0), null);
    assert.equal(perGb(-0.2), null);
    assert.equal(perGb(null), null);
  });

  it('pairs each backend that has one with its bare peer', () => {
    assert.equal(barePeerOf(target('process'))?.kind, 'node');
    assert.equal(barePeerOf(target('container:runc'))?.kind, 'runc');
    assert.equal(barePeerOf(target('container:crun'))?.kind, 'crun');
    assert.equal(barePeerOf(target('gvisor'))?.kind, 'runsc');
    assert.equal(barePeerOf(target('microvm'))?.kind, 'qemu');
    assert.equal(barePeerOf(target('isolate')), undefined);
    assert.equal(barePeerOf(target('wasm')), undefined);
  });

  it('heads the report with every backend per GB, the bare peer beside, and the targets judged', () => {
    const rows = headline(
      results([
        hello('isolate', 1.25),
        hello('wasm', 0.25),
        hello('container:runc', 12, beside('bare `runc run --detach`', 12.5, 12.25)),
        hello('container:crun', 12, beside('bare `crun run --detach`', 12, 12.5)),
        hello('process', 12, beside('bare `node` running the agent', 12, 12)),
      ]),
    );
    const perGbRow = rows.find((r) => r.question === 'Idle hello instances per GB (1024 MB)');
    assert.ok(perGbRow, JSON.stringify(rows.map((r) => r.question)));
    // Densest first (ties in the report's order of backends); the figure beside a peer is the one
    // measured in turns with it.
    assert.equal(
      perGbRow.answer,
      'wasm 4,096, isolate 819, process 85 (bare `node` running the agent 85: 1x), container:crun 85 (bare `crun run --detach` 81: 1.04x), container:runc 81 (bare `runc run --detach` 83: 0.98x)',
    );
    const isolate = rows.find((r) => r.question === 'V8 isolate density');
    assert.equal(isolate?.value, 819);
    assert.match(isolate?.answer ?? '', /target at least 1,000, not met/);
    const runc = rows.find((r) => r.question === 'Density of container:runc vs its bare peer');
    assert.equal(runc?.value, 0.98);
    assert.match(runc?.answer ?? '', /not met/);
    assert.match(rows.find((r) => r.question === 'Density of container:crun vs its bare peer')?.answer ?? '', /, met$/);
    // The process backend has a bare peer but no container target.
    assert.doesNotMatch(rows.find((r) => r.question === 'Density of process vs its bare peer')?.answer ?? '', /target/);
  });

  it('says so when a bare peer failed', () => {
    const failed = { ...hello('gvisor', 30), densityBesideError: 'runsc run --detach failed: boom' };
    const row = headline(results([failed])).find((r) => r.question === 'Density of gvisor vs its bare peer');
    assert.equal(row?.value, null);
    assert.equal(row?.basis, 'runsc run --detach failed: boom');
  });
});

describe("a server's processes", () => {
  const children: ChildProcess[] = [];
  const dataDir = mkdtempSync(join(tmpdir(), 'isola-density-test-'));
  after(() => {
    for (const child of children) child.kill('SIGKILL');
    rmSync(dataDir, { recursive: true, force: true });
  });
  const idle = (...args: string[]) => {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)', '--', ...args], { stdio: 'ignore' });
    children.push(child);
    return child;
  };
  const started = (child: ChildProcess, marker: string) =>
    new Promise<void>((resolve, reject) => {
      const deadline = Date.now() + 10_000;
      const poll = () => {
        if (processesNaming(marker).includes(child.pid as number)) resolve();
        else if (Date.now() > deadline) reject(new Error(`${marker} never showed in /proc`));
        else setTimeout(poll, 20);
      };
      poll();
    });

  it("include a runtime's own process outside the server's tree and cgroups that names one of its containers", async () => {
    const server = idle('stand-in-server');
    await started(server, 'stand-in-server');
    const marker = `isola-${server.pid}-7`;
    const helper = idle(`--bundle=/data/containers/runsc/${marker}`);
    const stranger = idle('isola-1-7');
    await started(helper, marker);
    await started(stranger, 'isola-1-7');
    const pids = serverProcesses(server.pid as number, dataDir);
    assert.ok(pids.includes(server.pid as number));
    assert.ok(pids.includes(helper.pid as number), 'the process naming its container');
    assert.ok(!pids.includes(stranger.pid as number), "another server's container");
  });
});

describe("idle instances of a backend in the server's own process", { timeout: 120_000 }, () => {
  const hello = WORKLOADS.find((w) => w.name === 'hello' && w.kind === 'nodejs:20') as Workload;

  /** An isolate server with room for `instances` hello instances, and a run on it. */
  async function withIsolateRun(instances: number, body: (run: TargetRun) => Promise<void>): Promise<void> {
    const isolate = target('isolate');
    const dataDir = mkdtempSync(join(tmpdir(), 'isola-density-test-'));
    const server = await startTargetServer(isolate, dataDir, { ISOLA_MEMORY_BUDGET_MB: String(instances * hello.memoryMb) });
    const run = new TargetRun(isolate, server, { quick: true, concurrency: 1, memoryBudgetMb: 1024 });
    try {
      await run.init();
      await body(run);
    } finally {
      run.close();
      await server.dispose();
      rmSync(dataDir, { recursive: true, force: true });
    }
  }

  it('are stacked turn on turn, each turn counted by what it added, and removed after the last', () =>
    withIsolateRun(16, async (run) => {
      const samples = await run.stackedIdleInstanceMb(hello, 3, 2, 'stacked');
      assert.equal(samples.totalMb.length, 2);
      assert.equal(samples.serverHeapMb.length, 2);
      for (const mb of [...samples.totalMb, ...samples.serverHeapMb])
        assert.ok(Number.isFinite(mb), `a turn's cost is a number: ${mb}`);
      await waitFor('the idle instances to be removed', async () => ((await run.instances()) === 0 ? true : undefined), 30_000);
      assert.equal(await run.instances(), 0);
    }));

  // Room for two instances: the third of a turn evicts one.
  it('fail a turn whose instances did not all stay (one evicted for want of room)', () =>
    withIsolateRun(2, async (run) => {
      await assert.rejects(run.stackedIdleInstanceMb(hello, 3, 1, 'evicted'), /expected 3 more idle instances, found 2/);
    }));
});
