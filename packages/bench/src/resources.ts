/**
 * The resource benchmark's parts (the DESMET study's axes): one Node.js function that measures
 * CPU, memory bandwidth, file I/O in its scratch space and the network to a receiver, run under
 * each backend and bare on the host in the same run; the receiver the test host runs; and the
 * overhead per backend as a table and a chart.
 */

import { spawn } from 'node:child_process';

/** What the function measures; each a figure where more is better, except the latency. */
export const METRICS = ['cpu', 'memory', 'fileSequential', 'fileRandom', 'netThroughput', 'netLatency'] as const;
export type Metric = (typeof METRICS)[number];

export const METRIC_LABELS: Record<Metric, { label: string; unit: string; lowerIsBetter?: boolean }> = {
  cpu: { label: 'CPU (xorshift32 steps)', unit: 'M steps/s' },
  memory: { label: 'memory bandwidth (copy of 64 MiB)', unit: 'GB/s' },
  fileSequential: { label: 'file, sequential write + fsync', unit: 'MB/s' },
  fileRandom: { label: 'file, random 4 KiB write + fdatasync', unit: 'writes/s' },
  netThroughput: { label: 'network throughput to the test host', unit: 'MB/s' },
  netLatency: { label: 'network round trip to the test host (p50)', unit: 'ms', lowerIsBetter: true },
};

export interface ResourceParams {
  tests: Metric[];
  /** Each time-bounded test's duration. */
  ms: number;
  /** Sequential write size and network transfer size. */
  mb: number;
  host?: string;
  sinkPort?: number;
  echoPort?: number;
  pings?: number;
}

export type ResourceResult = Partial<Record<Metric, number>> & { scratch?: string };

/** Ports of the receiver on the test host. */
export const SINK_PORT = 9000;
export const ECHO_PORT = 9001;

/**
 * The test host's program: a sink that reads a 4-byte length and that many bytes, then answers
 * one byte, and an echo server. Prints `ready <sink port> <echo port>` once both listen (port 0:
 * any free one).
 */
export function receiverProgram(sinkPort: number, echoPort: number): string {
  return `
const net = require('net');
const sink = net.createServer((socket) => {
  let expected = -1, got = 0, head = Buffer.alloc(0);
  socket.on('data', (chunk) => {
    if (expected < 0) {
      head = Buffer.concat([head, chunk]);
      if (head.length < 4) return;
      expected = head.readUInt32BE(0);
      got = head.length - 4;
    } else got += chunk.length;
    if (got >= expected) socket.end('k');
  });
  socket.on('error', () => {});
});
const echo = net.createServer((socket) => { socket.setNoDelay(true); socket.on('error', () => {}); socket.pipe(socket); });
sink.listen(${sinkPort}, '0.0.0.0', () => echo.listen(${echoPort}, '0.0.0.0', () => console.log('ready', sink.address().port, echo.address().port)));
`;
}

/**
 * The function, the same source under every backend and bare: CommonJS, `main(params)`. The file
 * and network tests need require (not under isolate); each test runs for `ms` or moves `mb` MB.
 */
export const RESOURCES_FUNCTION = `
const MB = 1 << 20;
const now = () => (typeof performance !== 'undefined' ? performance.now() : Date.now());

function cpu(ms) {
  let x = 2463534242 | 0;
  let steps = 0;
  const start = now();
  let elapsed = 0;
  while ((elapsed = now() - start) < ms) {
    for (let i = 0; i < 100000; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; }
    steps += 100000;
  }
  if (x === 0) throw new Error('the generator stopped');
  return steps / (elapsed / 1000) / 1e6;
}

function memory(ms) {
  const a = new Uint8Array(64 * MB);
  const b = new Uint8Array(64 * MB);
  a.fill(7);
  b.fill(1);
  let copies = 0;
  const start = now();
  let elapsed = 0;
  while ((elapsed = now() - start) < ms) { b.set(a); copies++; }
  if (b[12345] !== 7) throw new Error('the copy did not land');
  return (copies * 64 * MB) / (elapsed / 1000) / 1e9;
}

function scratchFile(name) {
  return require('path').join(require('os').tmpdir(), 'isola-resources-' + name);
}

/** The file system the scratch directory is on, from the mount table. */
function scratchKind() {
  const dir = require('os').tmpdir();
  let best = { point: '', type: 'unknown' };
  for (const line of require('fs').readFileSync('/proc/mounts', 'utf8').split('\\n')) {
    const [, point, type] = line.split(' ');
    if (!point || !type) continue;
    const inside = dir === point || dir.startsWith(point.endsWith('/') ? point : point + '/');
    if (inside && point.length >= best.point.length) best = { point, type };
  }
  return best.type;
}

function fileSequential(mb) {
  const fs = require('fs');
  const file = scratchFile('seq');
  const chunk = Buffer.alloc(MB, 7);
  const fd = fs.openSync(file, 'w');
  try {
    const start = now();
    for (let i = 0; i < mb; i++) fs.writeSync(fd, chunk);
    fs.fsyncSync(fd);
    return mb / ((now() - start) / 1000);
  } finally {
    fs.closeSync(fd);
    fs.unlinkSync(file);
  }
}

function fileRandom(ms) {
  const fs = require('fs');
  const file = scratchFile('rand');
  const size = 16 * MB;
  const block = Buffer.alloc(4096, 3);
  const fd = fs.openSync(file, 'w+');
  try {
    fs.ftruncateSync(fd, size);
    let seed = 12345;
    let writes = 0;
    const start = now();
    let elapsed = 0;
    while ((elapsed = now() - start) < ms) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      fs.writeSync(fd, block, 0, 4096, (seed % (size / 4096)) * 4096);
      fs.fdatasyncSync(fd);
      writes++;
    }
    return writes / (elapsed / 1000);
  } finally {
    fs.closeSync(fd);
    fs.unlinkSync(file);
  }
}

function connect(host, port) {
  const net = require('net');
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    socket.setNoDelay(true);
    socket.setTimeout(30000, () => socket.destroy(new Error('the test host did not answer within 30 s')));
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

async function netThroughput(host, port, mb) {
  const socket = await connect(host, port);
  const head = Buffer.alloc(4);
  head.writeUInt32BE(mb * MB);
  const chunk = Buffer.alloc(MB, 5);
  const start = now();
  const done = new Promise((resolve, reject) => { socket.once('data', resolve); socket.once('error', reject); });
  socket.write(head);
  for (let i = 0; i < mb; i++) {
    if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
  }
  await done;
  const elapsed = now() - start;
  socket.destroy();
  return mb / (elapsed / 1000);
}

async function netLatency(host, port, pings) {
  const socket = await connect(host, port);
  let answered = () => {};
  let failed = () => {};
  socket.on('data', () => answered());
  socket.on('error', (error) => failed(error));
  const rtts = [];
  for (let i = 0; i < pings; i++) {
    const start = now();
    await new Promise((resolve, reject) => { answered = resolve; failed = reject; socket.write('p'); });
    rtts.push(now() - start);
  }
  socket.destroy();
  rtts.sort((a, b) => a - b);
  return rtts[Math.floor(rtts.length / 2)];
}

async function main(params) {
  const out = {};
  for (const test of params.tests) {
    if (test === 'cpu') out.cpu = cpu(params.ms);
    else if (test === 'memory') out.memory = memory(params.ms);
    else if (test === 'fileSequential') out.fileSequential = fileSequential(params.mb);
    else if (test === 'fileRandom') out.fileRandom = fileRandom(params.ms);
    else if (test === 'netThroughput') out.netThroughput = await netThroughput(params.host, params.sinkPort, params.mb);
    else if (test === 'netLatency') out.netLatency = await netLatency(params.host, params.echoPort, params.pings || 200);
  }
  if (params.tests.some((t) => t.startsWith('file'))) out.scratch = scratchKind();
  return out;
}
`;

/** Runs the function bare: a `node` on the host with the same source; what it measured. */
export function runBare(params: ResourceParams): Promise<ResourceResult> {
  const program = `${RESOURCES_FUNCTION}\nmain(JSON.parse(process.argv[1])).then((r) => process.stdout.write(JSON.stringify(r)), (e) => { console.error(e); process.exit(1); });`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', program, JSON.stringify(params)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    child.once('error', reject);
    child.once('close', (code) =>
      code === 0 ? resolve(JSON.parse(out) as ResourceResult) : reject(new Error(`bare run exited ${code}: ${err}`)),
    );
  });
}

/**
 * The overhead of a backend against bare, in %: how much less it does (or for the latency, how
 * much longer it takes). 0 is bare's figure; negative means it did better than bare.
 */
export function overheadPercent(metric: Metric, bare: number, backend: number): number {
  const lower = METRIC_LABELS[metric].lowerIsBetter === true;
  const percent = lower ? ((backend - bare) / bare) * 100 : ((bare - backend) / bare) * 100;
  return Math.round(percent * 10) / 10;
}

export interface ResourceRow {
  target: string;
  /** Why a metric was not measured under it. */
  notApplicable: Partial<Record<Metric, string>>;
  /** Median over the rounds. */
  values: Partial<Record<Metric, number>>;
  overhead: Partial<Record<Metric, number>>;
  scratch?: string;
}

function figure(value: number): string {
  if (value >= 100) return Math.round(value).toLocaleString('en-US');
  if (value >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

/** The table's cells: one row per metric and one for the scratch file system; bare first, then each backend's figure and overhead. */
export function resourcesCells(rows: readonly ResourceRow[]): { head: string[]; body: string[][]; notes: string[] } {
  const [bare, ...backends] = rows;
  if (!bare) return { head: [], body: [], notes: [] };
  const body = METRICS.map((metric) => [
    METRIC_LABELS[metric].label,
    METRIC_LABELS[metric].unit,
    ...rows.map((row) => {
      const value = row.values[metric];
      if (value === undefined) return row.notApplicable[metric] ? 'n/a' : '–';
      const overhead = row === bare ? undefined : row.overhead[metric];
      return overhead === undefined ? figure(value) : `${figure(value)} (${overhead > 0 ? '+' : ''}${overhead}%)`;
    }),
  ]);
  body.push(['scratch file system', '', ...rows.map((r) => r.scratch ?? '–')]);
  const notes = backends.flatMap((row) =>
    Object.entries(row.notApplicable).map(([metric, why]) => `${row.target}, ${METRIC_LABELS[metric as Metric].label}: ${why}`),
  );
  return { head: ['metric', 'unit', ...rows.map((r) => r.target)], body, notes };
}

/** The table in Markdown, with why each n/a is one. */
export function resourcesTable(rows: readonly ResourceRow[]): string {
  const { head, body, notes } = resourcesCells(rows);
  if (head.length === 0) return '';
  return [
    `| ${head.join(' | ')} |`,
    `| --- | --- | ${rows.map(() => '---:').join(' | ')} |`,
    ...body.map((cells) => `| ${cells.join(' | ')} |`),
    '',
    ...(notes.length > 0 ? ['n/a:', ...notes.map((n) => `- ${n}`)] : []),
  ].join('\n');
}

// Tableau 10: a colour for each of the harness's ten targets.
const COLOURS = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];

/** A horizontal bar chart of the overhead in % per metric, a bar per backend, from -100 to 100 around bare's 0. */
export function resourcesChart(rows: readonly ResourceRow[]): string {
  const backends = rows.slice(1);
  const barHeight = 12;
  const groupGap = 14;
  const labels = 290;
  const scale = 2.2;
  const zero = labels + 60 + 100 * scale;
  const width = zero + 100 * scale + 70;
  const groupHeight = backends.length * barHeight + groupGap;
  const plotBottom = 30 + METRICS.length * groupHeight - groupGap;
  const height = plotBottom + 20 + 20 * Math.ceil(backends.length / 4);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<text x="${labels + 60}" y="14">overhead against bare, % (right: worse than bare, left: better; bars stop at 100)</text>`,
    `<line x1="${zero}" y1="22" x2="${zero}" y2="${plotBottom}" stroke="#333"/>`,
  ];
  METRICS.forEach((metric, m) => {
    const top = 30 + m * groupHeight;
    parts.push(
      `<text x="${labels}" y="${top + (backends.length * barHeight) / 2 + 4}" text-anchor="end">${METRIC_LABELS[metric].label}</text>`,
    );
    backends.forEach((row, b) => {
      const overhead = row.overhead[metric];
      const y = top + b * barHeight;
      if (overhead === undefined) {
        parts.push(`<text x="${zero + 4}" y="${y + barHeight - 2}" fill="#888">${row.target}: n/a</text>`);
        return;
      }
      const shown = Math.max(-100, Math.min(100, overhead));
      const x = shown >= 0 ? zero : zero + shown * scale;
      const label = shown >= 0 ? `x="${zero + shown * scale + 4}"` : `x="${zero + shown * scale - 4}" text-anchor="end"`;
      parts.push(
        `<rect x="${x}" y="${y + 1}" width="${Math.max(1, Math.abs(shown) * scale)}" height="${barHeight - 2}" fill="${COLOURS[b % COLOURS.length]}"/>`,
        `<text ${label} y="${y + barHeight - 2}">${overhead}%</text>`,
      );
    });
  });
  const legendTop = plotBottom + 20;
  backends.forEach((row, b) => {
    const x = labels + 60 + (b % 4) * 110;
    const y = legendTop + Math.floor(b / 4) * 20;
    parts.push(
      `<rect x="${x}" y="${y - 9}" width="10" height="10" fill="${COLOURS[b % COLOURS.length]}"/>`,
      `<text x="${x + 14}" y="${y}">${row.target}</text>`,
    );
  });
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}
