/**
 * Runs the grading service against an Isola server: the git server, the service, and (with
 * --demo) the sample submissions pushed and their reports printed.
 *
 *   npx tsx examples/autograder/main.ts [--apihost http://127.0.0.1:3233] [--auth uuid:key]
 *       [--isolation gvisor|microvm|vm|container] [--data /tmp/isola-autograder]
 *       [--students alice,bob] [--demo]
 *
 * --auth defaults to ISOLA_AUTH, then to the data dir's .isola/guest.auth.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { GitServer, Grader, type Isolation, sampleSubmission } from './autograder.js';

const { values } = parseArgs({
  options: {
    apihost: { type: 'string', default: process.env.ISOLA_APIHOST ?? 'http://127.0.0.1:3233' },
    auth: { type: 'string', default: process.env.ISOLA_AUTH ?? '' },
    isolation: { type: 'string', default: 'gvisor' },
    data: { type: 'string', default: '/tmp/isola-autograder' },
    students: { type: 'string', default: 'alice,bob' },
    demo: { type: 'boolean', default: false },
  },
});

const ISOLATIONS = ['gvisor', 'microvm', 'vm', 'container', 'process'];
if (!ISOLATIONS.includes(values.isolation)) throw new Error(`--isolation must be one of ${ISOLATIONS.join(', ')}`);
const authFile = join('.isola', 'guest.auth');
const auth = values.auth || (existsSync(authFile) ? readFileSync(authFile, 'utf8').trim() : '');
if (!auth) throw new Error('No credentials: pass --auth uuid:key or set ISOLA_AUTH.');

const secret = randomBytes(16).toString('hex');
const grader = new Grader({ isolaUrl: values.apihost, auth, secret, course: { isolation: values.isolation as Isolation } });
const graderUrl = await grader.listen();
const reposDir = join(values.data, 'repos');
const git = await GitServer.start({ reposDir, webhookUrl: `${graderUrl}/webhook`, secret });
const students = values.students.split(',').filter(Boolean);
for (const student of students) await git.createRepository(student);

process.stdout.write(
  [
    `grading service: ${graderUrl} (reports: ${graderUrl}/reports/<student>), grading under ${values.isolation}`,
    `git server: git://127.0.0.1:${git.port}/<student>.git for ${students.join(', ')}`,
    `  a student: git clone ${git.url(students[0] ?? 'alice')} && cd ${students[0] ?? 'alice'} && cp <submission.py|Solution.java|solution.c> . && git add -A && git commit -m done && git push origin HEAD:main`,
    '',
  ].join('\n'),
);

if (values.demo) {
  const samples = ['python-pass', 'python-fail', 'java-pass', 'java-fail', 'c-pass', 'c-fail', 'hostile'];
  const pushed = await Promise.all(
    samples.map(async (sample) => {
      const student = sample.replace(/-/g, '');
      return { student, sample, commit: await git.push(student, sampleSubmission(sample, reposDir)) };
    }),
  );
  for (const { student, sample, commit } of pushed) {
    const report = await grader.reportFor(student, commit);
    const detail = report.status === 'graded' ? `${report.passed}/${report.total}` : `${report.status}: ${report.problem}`;
    process.stdout.write(
      `${sample.padEnd(12)} ${detail.padEnd(40)} ${report.gradingMs} ms  ${graderUrl}/reports/${student}/${commit.slice(0, 7)}\n`,
    );
    const hostile = report.output.filter((line) => line.includes('HOSTILE'));
    for (const line of hostile) process.stdout.write(`  ${line.slice(line.indexOf('HOSTILE'))}\n`);
  }
  await git.stop();
  await grader.close();
} else {
  process.stdout.write('Serving; Ctrl-C stops.\n');
  process.on('SIGINT', () => {
    void git.stop().then(() => grader.close().then(() => process.exit(0)));
  });
}
