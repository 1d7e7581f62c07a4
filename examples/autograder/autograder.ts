/**
 * A grading service on Isola, the education job executor: students push to a git server; the
 * server's post-receive hook sends a push event in Gitea's webhook shape (signed with the hook's
 * secret) to the grading service; the service fetches the pushed commit, builds the assignment's
 * tests around the submission (Python, Java or C), runs them as an Isola action under the isolation
 * the course picks, with its memory, time, CPU and process limits and no network, and keeps a grade
 * report that the student fetches over HTTP.
 *
 * The service fetches, not the sandbox: the code that runs the submission has no network at all,
 * and it is the service (trusted, on the host) that talks to the git server and to Isola.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { zipSync } from 'fflate';

const run = promisify(execFile);
const COURSE = fileURLToPath(new URL('./course/', import.meta.url));
const GSON = '/usr/share/java/gson.jar';
const MAX_WEBHOOK_BYTES = 1024 * 1024;

export type Language = 'python' | 'java' | 'c';
export type Isolation = 'gvisor' | 'microvm' | 'vm' | 'container' | 'process';

/** A push event as Gitea (and, for these fields, GitLab and GitHub) sends it. */
export interface PushEvent {
  ref: string;
  before: string;
  after: string;
  repository: { name: string; full_name: string; clone_url: string };
  pusher: { login: string };
}

export interface TestResult {
  name: string;
  passed: boolean;
  message?: string;
  output?: string;
  ms?: number;
}

export interface GradeReport {
  student: string;
  commit: string;
  language?: Language;
  isolation: Isolation;
  /** graded: the tests ran; not graded: the submission did not build or was not found; failed: the run itself failed (time or memory limit). */
  status: 'graded' | 'not graded' | 'failed';
  passed: number;
  total: number;
  tests: TestResult[];
  /** Why it was not graded or failed: a compiler's message, the limit it hit. */
  problem?: string;
  /** What the submission printed (its activation's logs, cut to 200 lines). */
  output: string[];
  /** From the push to the report, and the grading run alone (ms). */
  gradingMs: number;
  runMs?: number;
  activationId?: string;
}

// ---------------------------------------------------------------------------------------------
// The git server: git daemon on 127.0.0.1 over bare repositories, one per student and course.

export interface GitServerOptions {
  /** Where the bare repositories live. */
  reposDir: string;
  /** Where the post-receive hooks send push events, and the secret they sign them with. */
  webhookUrl: string;
  secret: string;
}

export class GitServer {
  private constructor(
    private readonly daemon: ChildProcess,
    readonly port: number,
    readonly options: GitServerOptions,
  ) {}

  static async start(options: GitServerOptions): Promise<GitServer> {
    mkdirSync(options.reposDir, { recursive: true });
    const port = await freePort();
    const daemon = spawn(
      'git',
      [
        'daemon',
        '--reuseaddr',
        '--listen=127.0.0.1',
        `--port=${port}`,
        `--base-path=${options.reposDir}`,
        '--export-all',
        '--enable=receive-pack',
        options.reposDir,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const server = new GitServer(daemon, port, options);
    await waitUntil(`git daemon on port ${port}`, () => connects(port), 10_000);
    return server;
  }

  url(student: string): string {
    return `git://127.0.0.1:${this.port}/${student}.git`;
  }

  /** A student's bare repository with the hook that sends each push to the webhook. */
  async createRepository(student: string): Promise<void> {
    if (!/^[a-z][a-z0-9-]{0,30}$/.test(student)) throw new Error(`not a student name: ${student}`);
    const dir = join(this.options.reposDir, `${student}.git`);
    if (existsSync(dir)) return;
    await run('git', ['init', '--quiet', '--bare', dir]);
    const hook = join(dir, 'hooks', 'post-receive');
    const script = fileURLToPath(new URL('./post-receive.mjs', import.meta.url));
    writeFileSync(
      hook,
      `#!/bin/sh\nexec node ${JSON.stringify(script)} ${JSON.stringify(this.options.webhookUrl)} ${JSON.stringify(
        this.url(student),
      )} ${JSON.stringify(student)}\n`,
    );
    chmodSync(hook, 0o755);
    writeFileSync(join(dir, 'hooks', 'secret'), this.options.secret, { mode: 0o600 });
  }

  /** Pushes a directory's files as a new commit of a student's repository (what a student does). */
  async push(student: string, files: Record<string, string | Uint8Array>, message = 'submission'): Promise<string> {
    await this.createRepository(student);
    const work = mkdtempSync(join(tmpdir(), 'autograder-push-'));
    try {
      const git = (...args: string[]) => run('git', ['-C', work, ...args]);
      await git('init', '--quiet', '-b', 'main');
      await git('config', 'user.email', `${student}@students.example`);
      await git('config', 'user.name', student);
      await git('pull', '--quiet', this.url(student), 'main').catch(() => undefined);
      for (const [name, content] of Object.entries(files)) writeFileSync(join(work, name), content);
      await git('add', '-A');
      await git('commit', '--quiet', '--allow-empty', '-m', message);
      await git('push', '--quiet', this.url(student), 'main');
      return (await git('rev-parse', 'HEAD')).stdout.trim();
    } finally {
      rmSync(work, { recursive: true, force: true });
    }
  }

  async stop(): Promise<void> {
    if (this.daemon.exitCode !== null) return;
    const exited = new Promise((resolve) => this.daemon.once('exit', resolve));
    this.daemon.kill('SIGTERM');
    await exited;
  }
}

// ---------------------------------------------------------------------------------------------
// The grading service.

export interface CourseSettings {
  /** The isolation the grading runs in: gVisor by default (microvm for a VM of its own, vm to compare). */
  isolation: Isolation;
  memoryMb: number;
  timeoutMs: number;
  /** Grading runs at once. */
  parallel: number;
}

export interface GraderOptions {
  /** Isola's API, and its credentials (`uuid:key`). */
  isolaUrl: string;
  auth: string;
  secret: string;
  course?: Partial<CourseSettings>;
  port?: number;
}

interface Job {
  event: PushEvent;
  received: number;
}

export class Grader {
  readonly course: CourseSettings;
  private server: Server | undefined;
  private readonly queue: Job[] = [];
  private running = 0;
  private readonly reports = new Map<string, GradeReport[]>();
  private readonly waiting = new Set<(report: GradeReport) => void>();

  constructor(private readonly options: GraderOptions) {
    this.course = { isolation: 'gvisor', memoryMb: 256, timeoutMs: 30_000, parallel: 2, ...options.course };
  }

  async listen(): Promise<string> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((error) => reply(res, 500, { error: (error as Error).message }));
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(this.options.port ?? 0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    await new Promise((resolve) => this.server?.close(resolve));
  }

  /** The student's reports, newest last. */
  reportsOf(student: string): GradeReport[] {
    return this.reports.get(student) ?? [];
  }

  /** Resolves with the report of a commit once it is graded. */
  reportFor(student: string, commit: string, timeoutMs = 600_000): Promise<GradeReport> {
    const known = this.reportsOf(student).find((r) => r.commit === commit);
    if (known) return Promise.resolve(known);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(listener);
        reject(new Error(`no report for ${student}@${commit} after ${timeoutMs} ms`));
      }, timeoutMs);
      const listener = (report: GradeReport) => {
        if (report.student !== student || report.commit !== commit) return;
        clearTimeout(timer);
        this.waiting.delete(listener);
        resolve(report);
      };
      this.waiting.add(listener);
    });
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://grader');
    if (req.method === 'POST' && url.pathname === '/webhook') return this.webhook(req, res);
    const match = /^\/reports\/([a-z][a-z0-9-]{0,30})(?:\/([0-9a-f]{7,40}))?$/.exec(url.pathname);
    if (req.method === 'GET' && match) {
      const reports = this.reportsOf(match[1] as string);
      const report = match[2] ? reports.find((r) => r.commit.startsWith(match[2] as string)) : reports.at(-1);
      return report ? reply(res, 200, report) : reply(res, 404, { error: 'No report (yet) for that student and commit.' });
    }
    reply(res, 404, { error: 'Not found.' });
  }

  /** A push event: checked (event type, signature, shape), then queued for grading. */
  private async webhook(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readBody(req, MAX_WEBHOOK_BYTES);
    if (body === undefined) return reply(res, 413, { error: 'The event is too large.' });
    const event = req.headers['x-gitea-event'] ?? req.headers['x-gitlab-event'] ?? req.headers['x-github-event'];
    if (event !== 'push' && event !== 'Push Hook') return reply(res, 400, { error: 'Only push events are graded.' });
    const signature = String(req.headers['x-gitea-signature'] ?? req.headers['x-hub-signature-256'] ?? '').replace(
      /^sha256=/,
      '',
    );
    const expected = createHmac('sha256', this.options.secret).update(body).digest('hex');
    if (signature.length !== expected.length || !timingSafeEqual(Buffer.from(signature), Buffer.from(expected))) {
      return reply(res, 401, { error: 'The signature does not match.' });
    }
    let parsed: PushEvent;
    try {
      parsed = JSON.parse(body.toString('utf8')) as PushEvent;
    } catch {
      return reply(res, 400, { error: 'The event is not JSON.' });
    }
    if (!isPushEvent(parsed)) return reply(res, 400, { error: 'The event lacks after, repository.clone_url or pusher.login.' });
    this.queue.push({ event: parsed, received: Date.now() });
    this.drain();
    reply(res, 202, { queued: parsed.after });
  }

  private drain(): void {
    while (this.running < this.course.parallel && this.queue.length > 0) {
      const job = this.queue.shift() as Job;
      this.running++;
      void this.grade(job)
        .then((report) => this.record(report))
        .finally(() => {
          this.running--;
          this.drain();
        });
    }
  }

  private record(report: GradeReport): void {
    const list = this.reports.get(report.student) ?? [];
    list.push(report);
    this.reports.set(report.student, list);
    for (const listener of [...this.waiting]) listener(report);
  }

  /** Fetches the commit, builds the tests around it, runs them in Isola, and reports. */
  private async grade(job: Job): Promise<GradeReport> {
    const { event } = job;
    const student = studentOf(event);
    const base: GradeReport = {
      student,
      commit: event.after,
      isolation: this.course.isolation,
      status: 'not graded',
      passed: 0,
      total: 0,
      tests: [],
      output: [],
      gradingMs: 0,
    };
    const dir = mkdtempSync(join(tmpdir(), 'autograder-job-'));
    try {
      await run('git', ['clone', '--quiet', '--no-checkout', event.repository.clone_url, dir]);
      await run('git', ['-C', dir, 'checkout', '--quiet', event.after]);
      const built = await buildSubmission(dir);
      if ('problem' in built)
        return {
          ...base,
          ...(built.language ? { language: built.language } : {}),
          problem: built.problem,
          gradingMs: Date.now() - job.received,
        };
      const outcome = await this.runInIsola(`grade-${student}-${event.after.slice(0, 7)}`, built.exec);
      return { ...base, language: built.language, ...outcome, gradingMs: Date.now() - job.received };
    } catch (error) {
      return {
        ...base,
        status: 'failed',
        problem: (error as Error).message.slice(0, 2000),
        gradingMs: Date.now() - job.received,
      };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  private async isola<T>(method: string, path: string, body?: unknown): Promise<{ status: number; body: T }> {
    const res = await fetch(`${this.options.isolaUrl}${path}`, {
      method,
      headers: {
        authorization: `Basic ${Buffer.from(this.options.auth).toString('base64')}`,
        'content-type': 'application/json',
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    return { status: res.status, body: (await res.json()) as T };
  }

  /** Deploys the graded build as an action under the course's isolation, runs it once, and removes it. */
  private async runInIsola(name: string, exec: Record<string, unknown>): Promise<Partial<GradeReport>> {
    const deployed = await this.isola<{ error?: string }>('PUT', `/api/v1/namespaces/_/actions/${name}?overwrite=true`, {
      exec,
      limits: { memory: this.course.memoryMb, timeout: this.course.timeoutMs, logs: 64 },
      annotations: [
        { key: 'isolation', value: this.course.isolation },
        { key: 'network', value: 'none' },
      ],
    });
    if (deployed.status !== 200)
      return { status: 'not graded', problem: deployed.body.error ?? `deploy answered ${deployed.status}` };
    try {
      const accepted = await this.isola<{ activationId: string }>(
        'POST',
        `/api/v1/namespaces/_/actions/${name}?blocking=false`,
        {},
      );
      const id = accepted.body.activationId;
      const record = await waitUntil(
        `activation ${id}`,
        async () => {
          const got = await this.isola<ActivationRecord>('GET', `/api/v1/namespaces/_/activations/${id}`);
          return got.status === 200 ? got.body : undefined;
        },
        this.course.timeoutMs + 600_000,
      );
      const result = record.response.result as {
        passed?: number;
        total?: number;
        tests?: TestResult[];
        problem?: string;
        error?: string;
      };
      const output = record.logs.slice(0, 200);
      if (record.response.status !== 'success') {
        return {
          status: 'failed',
          problem: String(result?.error ?? record.response.status),
          output,
          runMs: record.duration,
          activationId: id,
        };
      }
      return {
        status: result.problem ? 'not graded' : 'graded',
        passed: result.passed ?? 0,
        total: result.total ?? 0,
        tests: result.tests ?? [],
        ...(result.problem ? { problem: result.problem } : {}),
        output,
        runMs: record.duration,
        activationId: id,
      };
    } finally {
      await this.isola('DELETE', `/api/v1/namespaces/_/actions/${name}`);
    }
  }
}

interface ActivationRecord {
  duration: number;
  logs: string[];
  response: { status: string; success: boolean; result: unknown };
}

function studentOf(event: PushEvent): string {
  return event.repository.name.replace(/\.git$/, '').toLowerCase();
}

function isPushEvent(value: unknown): value is PushEvent {
  const event = value as Partial<PushEvent> | null;
  return (
    typeof event === 'object' &&
    event !== null &&
    typeof event.after === 'string' &&
    /^[0-9a-f]{40}$/.test(event.after) &&
    typeof event.repository?.clone_url === 'string' &&
    typeof event.repository?.name === 'string' &&
    /^[a-z][a-z0-9-]{0,30}$/i.test(event.repository.name.replace(/\.git$/, '')) &&
    typeof event.pusher?.login === 'string'
  );
}

/** The example's sample submissions (submissions/<name>/), with the repositories' real path planted in the hostile one. */
export function sampleSubmission(name: string, reposDir: string): Record<string, string> {
  const dir = fileURLToPath(new URL(`./submissions/${name}/`, import.meta.url));
  return Object.fromEntries(
    readdirSync(dir).map((file) => [
      file,
      readFileSync(join(dir, file), 'utf8').replace('/tmp/isola-autograder/repos', reposDir),
    ]),
  );
}

// ---------------------------------------------------------------------------------------------
// Building a submission into what Isola runs: the assignment's tests around it.

type Built = { language: Language; exec: Record<string, unknown> } | { language?: Language; problem: string };

const text = (value: string) => Buffer.from(value, 'utf8');
const course = (file: string) => readFileSync(join(COURSE, file));

/**
 * By the file the submission holds: submission.py (the tests and runner join it in a zip),
 * Solution.java (compiled with the tests into a jar on the host: javac runs no submitted code), or
 * solution.c (compiled with the tests and the ActionLoop harness into a static executable).
 */
export async function buildSubmission(dir: string): Promise<Built> {
  if (existsSync(join(dir, 'submission.py'))) {
    const zip = zipSync({
      '__main__.py': course('runner.py'),
      'tests.py': course('tests.py'),
      'submission.py': readFileSync(join(dir, 'submission.py')),
    });
    return { language: 'python', exec: { kind: 'python:3', code: Buffer.from(zip).toString('base64'), binary: true } };
  }
  if (existsSync(join(dir, 'Solution.java'))) {
    const out = join(dir, '.classes');
    mkdirSync(out);
    writeFileSync(join(dir, 'Grader.java'), course('Grader.java'));
    try {
      await run(
        'javac',
        ['-J-Xmx256m', '-proc:none', '-encoding', 'UTF-8', '-cp', GSON, '-d', out, 'Solution.java', 'Grader.java'],
        {
          cwd: dir,
          timeout: 120_000,
        },
      );
    } catch (error) {
      return { language: 'java', problem: `javac: ${compilerMessage(error)}` };
    }
    const classes: Record<string, Uint8Array> = { 'META-INF/MANIFEST.MF': text('Manifest-Version: 1.0\n') };
    for (const file of (await run('find', ['.', '-name', '*.class'], { cwd: out })).stdout.split('\n').filter(Boolean)) {
      classes[file.replace(/^\.\//, '')] = readFileSync(join(out, file));
    }
    return {
      language: 'java',
      exec: { kind: 'java:17', code: Buffer.from(zipSync(classes)).toString('base64'), binary: true, main: 'Grader' },
    };
  }
  if (existsSync(join(dir, 'solution.c'))) {
    writeFileSync(join(dir, 'tests.c'), course('tests.c'));
    writeFileSync(join(dir, 'harness.c'), course('harness.c'));
    try {
      await run('gcc', ['-O1', '-static', '-o', 'exec', 'harness.c', 'tests.c', 'solution.c'], { cwd: dir, timeout: 120_000 });
    } catch (error) {
      return { language: 'c', problem: `gcc: ${compilerMessage(error)}` };
    }
    return { language: 'c', exec: { kind: 'native', code: readFileSync(join(dir, 'exec')).toString('base64'), binary: true } };
  }
  return { problem: 'The commit has none of submission.py, Solution.java or solution.c.' };
}

function compilerMessage(error: unknown): string {
  return String((error as { stderr?: string }).stderr || (error as Error).message).slice(0, 2000);
}

// ---------------------------------------------------------------------------------------------

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        resolve(undefined);
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function connects(port: number): Promise<boolean> {
  return fetch(`http://127.0.0.1:${port}/`).then(
    () => true,
    (error: Error & { cause?: { code?: string } }) => error.cause?.code !== 'ECONNREFUSED',
  );
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let delay = 20; ; delay = Math.min(delay * 2, 500)) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
