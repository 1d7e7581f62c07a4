// The grading service example (examples/autograder) end to end: a real git server (git daemon)
// whose post-receive hook sends signed push events, the grading service, and a real `isola serve`
// running the graded builds under gVisor with no network. Passing and failing submissions in
// Python, Java and C get the right grades; a hostile one is contained and the next is graded.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GitServer, type GradeReport, Grader, sampleSubmission } from '../examples/autograder/autograder.js';
import type { BackendStatus } from '../src/sandbox/backend.js';
import { probeBackends } from '../src/sandbox/registry.js';
import { TestServer } from './helpers/server.js';

const root = mkdtempSync(join(tmpdir(), 'isola-autograder-'));
const SECRET = 'a course secret';
const { backends, statuses } = await probeBackends({ dataDir: join(root, 'probe') }, ['gvisor']);
await Promise.all([...backends.values()].map((b) => b.close()));
const gvisor = statuses.find((s) => s.isolation === 'gvisor') as BackendStatus;
const languages = ['python:3', 'java:17', 'native'];
const missing = languages.filter((kind) => gvisor.kinds?.find((k) => k.kind === kind)?.available === false);
const skip = !gvisor.available ? gvisor.detail : missing.length > 0 ? `gVisor cannot run ${missing.join(', ')} here` : false;

describe('the grading service example', { skip }, () => {
  let server: TestServer;
  let grader: Grader;
  let git: GitServer;
  let graderUrl = '';
  const reposDir = join(root, 'repos');

  before(async () => {
    server = await TestServer.start({ env: { ISOLA_BACKENDS: 'gvisor', ISOLA_PREWARM: 'gvisor:0' } });
    grader = new Grader({
      isolaUrl: server.url,
      auth: server.auth,
      secret: SECRET,
      course: { isolation: 'gvisor', timeoutMs: 30_000 },
    });
    graderUrl = await grader.listen();
    git = await GitServer.start({ reposDir, webhookUrl: `${graderUrl}/webhook`, secret: SECRET });
  });
  after(async () => {
    await git?.stop();
    await grader?.close();
    await server?.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  /** A student's push, and the report the student then fetches from the service. */
  async function submit(student: string, sample: string): Promise<GradeReport> {
    const commit = await git.push(student, sampleSubmission(sample, reposDir));
    await grader.reportFor(student, commit);
    const res = await fetch(`${graderUrl}/reports/${student}/${commit}`);
    assert.equal(res.status, 200);
    return (await res.json()) as GradeReport;
  }

  it('grades passing and failing submissions in Python, Java and C under gVisor', async () => {
    const [pyPass, pyFail, javaPass, javaFail, cPass, cFail] = await Promise.all([
      submit('ada', 'python-pass'),
      submit('bob', 'python-fail'),
      submit('cy', 'java-pass'),
      submit('dee', 'java-fail'),
      submit('eve', 'c-pass'),
      submit('fay', 'c-fail'),
    ]);
    for (const report of [pyPass, javaPass, cPass]) {
      assert.equal(report.status, 'graded', JSON.stringify(report));
      assert.deepEqual([report.passed, report.total], [4, 4], JSON.stringify(report));
      assert.equal(report.isolation, 'gvisor');
    }
    assert.deepEqual([pyPass.language, javaPass.language, cPass.language], ['python', 'java', 'c']);
    // Python: gcd(x, 0) is wrong; Java: isPrime takes odd numbers for primes; C: crashes on gcd(0, b).
    assert.deepEqual(
      pyFail.tests.filter((t) => !t.passed).map((t) => t.name),
      ['test_gcd_zero'],
    );
    assert.match(pyFail.tests.find((t) => t.name === 'test_gcd_zero')?.message ?? '', /AssertionError/);
    assert.deepEqual([javaFail.status, javaFail.passed, javaFail.total], ['graded', 2, 4], JSON.stringify(javaFail));
    assert.deepEqual([cFail.status, cFail.passed, cFail.total], ['graded', 3, 4], JSON.stringify(cFail));
    assert.match(cFail.tests.find((t) => t.name === 'test_gcd_zero')?.message ?? '', /Segmentation fault/);
  });

  it('contains a hostile submission (other students’ work, the network, a fork bomb), then grades the next one', async () => {
    await git.createRepository('gus');
    const hostile = await submit('gus', 'hostile');
    // Graded, or ended by one of its limits (the fork bomb may exhaust its memory first).
    if (hostile.status !== 'graded') assert.match(hostile.problem ?? '', /memory|time limit|processes/, JSON.stringify(hostile));
    const line = hostile.output.find((l) => l.includes('HOSTILE '));
    assert.ok(line, `the hostile submission reported: ${JSON.stringify(hostile)}`);
    const findings = JSON.parse(line.slice(line.indexOf('HOSTILE ') + 8)) as Record<string, unknown>;
    assert.match(String(findings.read_other_students), /^refused: FileNotFoundError/);
    assert.match(String(findings.read_host_passwd), /^refused: /);
    assert.match(String(findings.network_git_server), /^refused: /);
    assert.match(String(findings.network_internet), /^refused: /);
    const fork = hostile.output.find((l) => l.includes('HOSTILE-FORK '));
    if (fork) {
      const bomb = JSON.parse(fork.slice(fork.indexOf('HOSTILE-FORK ') + 13)) as { children: number; stopped: string };
      // Refused at the sandbox's process limit, or (a VM's own kernel, a slow moment) still within it at the bomb's 3 s.
      assert.match(bomb.stopped, /^(refused: .*|time)$/, `the fork bomb stopped by ${bomb.stopped}`);
      assert.ok(bomb.children <= 1024, `${bomb.children} processes`);
    }
    const next = await submit('hal', 'python-pass');
    assert.deepEqual([next.status, next.passed, next.total], ['graded', 4, 4], JSON.stringify(next));
  });

  it('refuses webhooks that are unsigned, wrongly signed or not pushes, and grades nothing for them', async () => {
    const body = JSON.stringify({
      after: 'f'.repeat(40),
      repository: { name: 'ivy', clone_url: git.url('ivy') },
      pusher: { login: 'ivy' },
    });
    const send = (headers: Record<string, string>) => fetch(`${graderUrl}/webhook`, { method: 'POST', body, headers });
    const signed = createHmac('sha256', SECRET).update(body).digest('hex');
    assert.equal((await send({ 'x-gitea-event': 'push' })).status, 401);
    // One hex digit changed, always to another one (the body holds a port, so its signature varies).
    const wrong = `${signed.slice(0, -1)}${signed.endsWith('0') ? '1' : '0'}`;
    assert.equal((await send({ 'x-gitea-event': 'push', 'x-gitea-signature': wrong })).status, 401);
    assert.equal((await send({ 'x-gitea-event': 'issues', 'x-gitea-signature': signed })).status, 400);
    assert.equal((await fetch(`${graderUrl}/reports/ivy`)).status, 404);
  });
});
