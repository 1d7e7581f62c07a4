import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { after, describe, it } from 'node:test';
import { resourceGroups, TARGETS } from '../src/harness.js';
import {
  METRICS,
  overheadPercent,
  type ResourceRow,
  receiverProgram,
  resourcesChart,
  resourcesTable,
  runBare,
} from '../src/resources.js';

describe('resource benchmark', () => {
  let receiver: ChildProcess | undefined;
  after(() => {
    receiver?.kill('SIGKILL');
  });

  it('measures CPU, memory, file I/O in the scratch directory and the network to a real receiver', async () => {
    receiver = spawn(process.execPath, ['-e', receiverProgram(0, 0)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const ports = await new Promise<[number, number]>((resolve, reject) => {
      receiver?.stdout?.once('data', (line: Buffer) => {
        const [, sink, echo] = line.toString().trim().split(' ');
        resolve([Number(sink), Number(echo)]);
      });
      receiver?.once('exit', (code) => reject(new Error(`the receiver exited with ${code}`)));
    });
    const result = await runBare({
      tests: [...METRICS],
      ms: 50,
      mb: 4,
      host: '127.0.0.1',
      sinkPort: ports[0],
      echoPort: ports[1],
      pings: 20,
    });
    for (const metric of METRICS) {
      const value = result[metric];
      assert.ok(typeof value === 'number' && Number.isFinite(value) && value > 0, `${metric}: ${value}`);
    }
    assert.equal(typeof result.scratch, 'string');
    assert.notEqual(result.scratch, 'unknown', 'the scratch directory is found in the mount table');
  });

  it('runs only the tests it is asked for', async () => {
    const result = await runBare({ tests: ['cpu'], ms: 20, mb: 1 });
    assert.deepEqual(Object.keys(result), ['cpu']);
  });

  it('counts doing less, or taking longer, as overhead', () => {
    assert.equal(overheadPercent('cpu', 100, 80), 20);
    assert.equal(overheadPercent('memory', 10, 12), -20);
    assert.equal(overheadPercent('netLatency', 0.1, 0.15), 50);
    assert.equal(overheadPercent('netLatency', 0.2, 0.1), -50);
  });

  it('tabulates and charts the backends against bare, saying what was not applicable', () => {
    const rows: ResourceRow[] = [
      { target: 'bare', notApplicable: {}, values: { cpu: 500, memory: 20 }, overhead: {}, scratch: 'ext4' },
      {
        target: 'isolate',
        notApplicable: { fileSequential: 'no file system' },
        values: { cpu: 450, memory: 10 },
        overhead: { cpu: 10, memory: 50 },
      },
    ];
    const table = resourcesTable(rows);
    assert.match(table, /^\| CPU \(xorshift32 steps\) \| M steps\/s \| 500 \| 450 \(\+10%\) \|$/m);
    assert.match(table, /^\| file, sequential write \+ fsync \| MB\/s \| – \| n\/a \|$/m);
    assert.match(table, /^- isolate, file, sequential write \+ fsync: no file system$/m);
    const chart = resourcesChart(rows);
    assert.match(chart, /^<svg /);
    assert.match(chart, />10%</);
    assert.match(chart, />isolate: n\/a</);
  });

  it("gives each server configuration of the harness's targets a server of its own, one target per isolation", () => {
    const groups = resourceGroups(TARGETS).map((g) => g.map((t) => t.id));
    assert.deepEqual(groups, [
      ['isolate', 'wasm', 'process', 'container:runc', 'gvisor', 'microvm', 'vm'],
      ['container:crun', 'microvm:specialised'],
    ]);
    const onlyCrun = resourceGroups(TARGETS.filter((t) => t.id === 'container:crun' || t.id === 'process'));
    assert.deepEqual(
      onlyCrun.map((g) => g.map((t) => t.id)),
      [['process', 'container:crun']],
    );
  });
});
