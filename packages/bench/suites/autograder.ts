/**
 * The grading service (examples/autograder) under each isolation an education job executor would
 * weigh (the DESMET study's four: containers, gVisor, microVMs, full VMs): N submissions pushed to
 * the git server at once (Python, Java and C, passing and failing), graded through the webhook and
 * Isola, reporting jobs per minute and p50/p99 time from push to report; then the hostile
 * submission under each, and what it reached. Writes packages/bench/results/autograder.{json,md}.
 *
 *   npm run bench:autograder [-- --quick]
 */

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  GitServer,
  type GradeReport,
  Grader,
  type Isolation,
  sampleSubmission,
} from '../../../examples/autograder/autograder.js';
import { ServerProcess } from '../../../test/helpers/server-process.js';
import { hostInfo } from '../src/host.js';
import { summarize } from '../src/stats.js';

const quick = process.argv.includes('--quick');
const outDir =
  process.argv.find((a) => a.startsWith('--out='))?.slice(6) ?? fileURLToPath(new URL('../results', import.meta.url));
const TARGETS: Isolation[] = ['container', 'gvisor', 'microvm', 'vm'];
const SAMPLES = ['python-pass', 'python-fail', 'java-pass', 'java-fail', 'c-pass', 'c-fail'];
const EXPECTED: Record<string, number> = {
  'python-pass': 4,
  'python-fail': 3,
  'java-pass': 4,
  'java-fail': 2,
  'c-pass': 4,
  'c-fail': 3,
};
const N = quick ? SAMPLES.length : SAMPLES.length * 2;
const SECRET = 'bench secret';
const log = (message: string) => process.stderr.write(`${message}\n`);

interface Figures {
  jobs: number;
  wrongGrades: number;
  jobsPerMinute: number;
  gradingMs: ReturnType<typeof summarize>;
  hostile: Record<string, string>;
}

/** What the hostile submission got, from the lines it printed, or the limit that ended it. */
function hostileFindings(report: GradeReport): Record<string, string> {
  const findings: Record<string, string> = {};
  const line = (tag: string) => report.output.find((l) => l.includes(`${tag} `));
  const main = line('HOSTILE');
  if (main) Object.assign(findings, JSON.parse(main.slice(main.indexOf('HOSTILE ') + 8)) as Record<string, string>);
  const fork = line('HOSTILE-FORK');
  findings.fork_bomb = fork
    ? (() => {
        const bomb = JSON.parse(fork.slice(fork.indexOf('HOSTILE-FORK ') + 13)) as { children: number; stopped: string };
        return `${bomb.children} processes, then ${bomb.stopped}`;
      })()
    : `the sandbox was ended: ${report.problem ?? report.status}`;
  return findings;
}

async function main() {
  const started = Date.now();
  const root = mkdtempSync(join(tmpdir(), 'isola-bench-autograder-'));
  const reposDir = join(root, 'repos');
  const server = await ServerProcess.start({
    env: { ISOLA_BACKENDS: TARGETS.join(','), ISOLA_PREWARM: TARGETS.map((t) => `${t}:0`).join(','), ISOLA_LOG_LEVEL: 'error' },
  });
  const figures: Partial<Record<Isolation, Figures>> = {};
  try {
    for (const isolation of TARGETS) {
      const grader = new Grader({
        isolaUrl: server.url,
        auth: server.auth,
        secret: SECRET,
        course: { isolation, timeoutMs: 120_000, parallel: 2 },
      });
      const graderUrl = await grader.listen();
      const git = await GitServer.start({
        reposDir: join(reposDir, isolation),
        webhookUrl: `${graderUrl}/webhook`,
        secret: SECRET,
      });
      try {
        // One warm-up per language: the first start builds its image or snapshot.
        log(`${isolation}: warming up (images, snapshots)`);
        for (const sample of ['python-pass', 'java-pass', 'c-pass']) {
          const commit = await git.push(`warm-${sample.split('-')[0]}`, sampleSubmission(sample, reposDir));
          await grader.reportFor(`warm-${sample.split('-')[0]}`, commit);
        }
        const pushed: { student: string; commit: string; sample: string }[] = [];
        const t0 = Date.now();
        await Promise.all(
          Array.from({ length: N }, async (_, i) => {
            const sample = SAMPLES[i % SAMPLES.length] as string;
            const student = `s${i}`;
            pushed.push({ student, commit: await git.push(student, sampleSubmission(sample, reposDir)), sample });
          }),
        );
        const reports = await Promise.all(pushed.map((p) => grader.reportFor(p.student, p.commit)));
        const minutes = (Date.now() - t0) / 60_000;
        const wrong = reports.filter((r, i) => r.status !== 'graded' || r.passed !== EXPECTED[pushed[i]?.sample as string]);
        for (const r of wrong) log(`${isolation}: unexpected grade ${JSON.stringify(r).slice(0, 400)}`);
        const hostileCommit = await git.push('mallory', sampleSubmission('hostile', join(reposDir, isolation)));
        const hostile = await grader.reportFor('mallory', hostileCommit);
        figures[isolation] = {
          jobs: reports.length,
          wrongGrades: wrong.length,
          jobsPerMinute: Math.round((reports.length / minutes) * 10) / 10,
          gradingMs: summarize(reports.map((r) => r.gradingMs)),
          hostile: hostileFindings(hostile),
        };
        log(`${isolation}: ${JSON.stringify(figures[isolation])}`);
      } finally {
        await git.stop();
        await grader.close();
      }
    }
  } finally {
    await server.dispose();
    rmSync(root, { recursive: true, force: true });
  }
  const host = hostInfo();
  const tookS = Math.round((Date.now() - started) / 1000);
  writeFileSync(join(outDir, 'autograder.json'), `${JSON.stringify({ host, quick, tookS, n: N, figures }, null, 2)}\n`);
  // "refused: FileNotFoundError: [Errno 2] No such file or directory: '/x'" -> "refused (FileNotFoundError, No such file or directory)"
  const short = (text: string | undefined) =>
    (text ?? 'n/a')
      .replace(
        /^refused: (\w+): (?:\[Errno \d+\] )?([^:'[]+).*$/,
        (_, name: string, why: string) => `refused (${name}, ${why.trim()})`,
      )
      .replace(/\|/g, '/')
      .slice(0, 90);
  const md = [
    '# The grading service under each isolation (npm run bench:autograder)',
    '',
    `Host: ${JSON.stringify(host)}. Took ${tookS} s. ${N} submissions (Python, Java and C; passing and failing) pushed at once per isolation, graded two at a time; 256 MB, no network.`,
    '',
    '| isolation | jobs | wrong grades | jobs per minute | push to report p50 / p99, ms |',
    '| --- | ---: | ---: | ---: | ---: |',
    ...TARGETS.map((t) => {
      const f = figures[t];
      return f
        ? `| ${t} | ${f.jobs} | ${f.wrongGrades} | ${f.jobsPerMinute} | ${f.gradingMs.p50} / ${f.gradingMs.p99} |`
        : `| ${t} | not run | | | |`;
    }),
    '',
    'The hostile submission (reads the other students’ repositories on the grading host, /etc/shadow, connects to the git server and the internet, then forks until refused):',
    '',
    `| attempt | ${TARGETS.join(' | ')} |`,
    `| --- | ${TARGETS.map(() => '---').join(' | ')} |`,
    ...['read_other_students', 'read_host_passwd', 'network_git_server', 'network_internet', 'fork_bomb'].map(
      (key) => `| ${key} | ${TARGETS.map((t) => short(figures[t]?.hostile[key])).join(' | ')} |`,
    ),
    '',
  ].join('\n');
  writeFileSync(join(outDir, 'autograder.md'), md);
  log(md);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
