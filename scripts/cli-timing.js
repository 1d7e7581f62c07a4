#!/usr/bin/env node
// How long each `isola` command takes to answer, as a user runs it (node bin/isola.js, the built
// platform): the median and spread of several runs of each, against a real server started here.
// Writes packages/bench/results/cli-timing.json and .md.
//   node scripts/cli-timing.js [--runs=N]
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const bin = join(root, 'bin/isola.js');
const runs = Number(process.argv.find((a) => a.startsWith('--runs='))?.slice(7) ?? 9);
const outDir = join(root, 'packages/bench/results');
const work = mkdtempSync(join(tmpdir(), 'isola-cli-timing-'));
const dataDir = join(work, 'data');
const elsewhere = join(work, 'elsewhere');
mkdirSync(elsewhere);
const config = join(work, 'xdg');

const server = spawn(process.execPath, [bin, 'serve', '--port', '0', '--data-dir', dataDir], {
  env: { ...process.env, ISOLA_BACKENDS: 'isolate', ISOLA_LOG_LEVEL: 'error', ISOLA_PREWARM: 'isolate:1' },
  stdio: ['ignore', 'pipe', 'inherit'],
});
const url = await new Promise((resolve, reject) => {
  let output = '';
  const timer = setTimeout(() => reject(new Error(`server did not start:\n${output}`)), 60_000);
  server.stdout.on('data', (chunk) => {
    output += chunk;
    const match = /listening on (http:\/\/\S+)/.exec(output);
    if (match) {
      clearTimeout(timer);
      resolve(match[1]);
    }
  });
  server.once('exit', (code) => reject(new Error(`server exited with ${code}:\n${output}`)));
});
server.stdout.resume();
const auth = readFileSync(join(dataDir, 'guest.auth'), 'utf8').trim();
const hello = join(work, 'hello.js');
writeFileSync(hello, 'function main(params) { return { greeting: "Hello " + (params.name ?? "world") }; }\n');

// From another directory, with the server named by the config file: as a user would after
// `isola property set`.
const env = { ...process.env, XDG_CONFIG_HOME: config };
for (const name of ['ISOLA_APIHOST', 'ISOLA_AUTH', 'ISOLA_DATA_DIR', 'ISOLA_GUEST_AUTH']) delete env[name];
// GNU time reports the child's CPU time, which the other load on a shared machine disturbs less
// than the wall clock.
const GNU_TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : undefined;
const cpuFile = join(work, 'cpu');
function timed(argv, options = {}) {
  const [file, args] = GNU_TIME ? [GNU_TIME, ['-f', '%U %S', '-o', cpuFile, ...argv]] : [argv[0], argv.slice(1)];
  const started = process.hrtime.bigint();
  const run = spawnSync(file, args, { cwd: elsewhere, env, encoding: 'utf8', ...options });
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  const cpuMs = GNU_TIME
    ? readFileSync(cpuFile, 'utf8')
        .trim()
        .split('\n')
        .at(-1)
        .split(' ')
        .reduce((sum, seconds) => sum + Number(seconds) * 1000, 0)
    : undefined;
  return { run, ms, cpuMs };
}
function isola(args) {
  const { run, ms, cpuMs } = timed([process.execPath, bin, ...args]);
  if (run.status !== 0) throw new Error(`isola ${args.join(' ')} failed (${run.status}): ${run.stderr}`);
  return { ms, cpuMs, stdout: run.stdout };
}

isola(['property', 'set', '--apihost', url, '--auth', auth]);
isola(['action', 'create', 'hello', hello]);
const activation = JSON.parse(isola(['--json', 'action', 'invoke', 'hello', '-p', 'name', 'Ada']).stdout).activationId;

/** Every command that answers from the server or local files; `serve`, `bench`, `images build`, `setup` run for long by design. */
const COMMANDS = [
  ['--version'],
  ['--help'],
  ['property', 'get'],
  ['property', 'set', '--apihost', url],
  ['action', 'list'],
  ['action', 'get', 'hello'],
  ['action', 'update', 'hello', hello],
  ['action', 'invoke', 'hello', '-r', '-p', 'name', 'Ada'],
  ['action', 'invoke', 'hello'],
  ['activation', 'list'],
  ['activation', 'get', activation],
  ['activation', 'logs', activation],
  ['activation', 'result', activation],
  ['namespace', 'list', '--data-dir', dataDir],
  ['simulate', '--generate', join(work, 'trace'), '--apps', '20'],
  ['doctor'],
];

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
};
const label = (args) =>
  `isola ${args.map((a) => (a === url ? '<url>' : a === activation ? '<id>' : a.startsWith(work) ? '<tmp>' : a)).join(' ')}`;
// Rounds of every command in turn, so that a burst of load elsewhere spreads over all of them;
// `node -e 0` in each round is the floor that any Node.js command pays.
const samples = new Map([['node -e 0', []], ...COMMANDS.map((args) => [label(args), []])]);
try {
  for (let round = 0; round < runs; round++) {
    samples.get('node -e 0').push(timed([process.execPath, '-e', '0']));
    for (const args of COMMANDS) samples.get(label(args)).push(isola(args));
  }
  isola(['action', 'delete', 'hello']);
} finally {
  server.kill('SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  rmSync(work, { recursive: true, force: true });
}
const results = [...samples].map(([command, list]) => {
  const times = list.map((s) => s.ms);
  const cpu = list.map((s) => s.cpuMs).filter((c) => c !== undefined);
  const row = {
    command,
    medianMs: Math.round(median(times)),
    minMs: Math.round(Math.min(...times)),
    maxMs: Math.round(Math.max(...times)),
    ...(cpu.length > 0 ? { medianCpuMs: Math.round(median(cpu)) } : {}),
  };
  process.stdout.write(
    `${row.command}: median ${row.medianMs} ms (min ${row.minMs}, max ${row.maxMs}), cpu ${row.medianCpuMs ?? '?'} ms\n`,
  );
  return row;
});
const host = { cpus: cpus().length, model: cpus()[0]?.model, node: process.version, loadavg: loadavg().map((l) => l.toFixed(2)) };
const summary = { measured: new Date().toISOString(), runs, host, commands: results };
mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'cli-timing.json'), `${JSON.stringify(summary, null, 2)}\n`);
const table = [
  `# isola command times (median of ${runs} runs, wall clock, process start to exit)`,
  '',
  `Measured ${summary.measured} on ${host.cpus} cores (${host.model}), Node.js ${host.node}, load average ${host.loadavg.join(' ')}.`,
  'Run from a directory with no data dir, the server named by the config file (`isola property set`);',
  'the server (isolate backend only) runs on the same machine. CPU is user + system time of the command.',
  'Written by `npm run bench:cli` (scripts/cli-timing.js).',
  '',
  '| command | median ms | min ms | max ms | median CPU ms |',
  '| --- | ---: | ---: | ---: | ---: |',
  ...results.map((r) => `| \`${r.command}\` | ${r.medianMs} | ${r.minMs} | ${r.maxMs} | ${r.medianCpuMs ?? ''} |`),
  '',
].join('\n');
writeFileSync(join(outDir, 'cli-timing.md'), table);
process.stdout.write(`${join(outDir, 'cli-timing.json')}\n`);
