/**
 * A test host in a network namespace of its own, joined to the host by a veth pair: on each /24
 * given, the host's end is `.1` and the test host's `.10`; its default route goes back through the
 * first. A Node.js program runs inside it (it must print a line once it listens). What egress
 * tests and the resource benchmark reach from sandboxes, never a real outside address. Needs root.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8' });
}

export class TestHost {
  private endedAs: string | undefined;

  private constructor(
    readonly namespace: string,
    readonly link: string,
    private readonly program: ChildProcess,
  ) {
    program.once('exit', (code, signal) => {
      this.endedAs = `exited (code ${code}, signal ${signal})`;
    });
  }

  /** `networks`: the first three octets of each /24 (the first is where its default route goes). */
  static async start(options: { networks: readonly string[]; program: string; tag?: string }): Promise<TestHost> {
    const tag = options.tag ?? String(process.pid);
    const namespace = `isolanettest-${tag}`;
    const link = `nth${tag}`;
    const [first] = options.networks;
    if (!first) throw new Error('a test host needs at least one network');
    ip('netns', 'add', namespace);
    ip('link', 'add', link, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', namespace);
    for (const net of options.networks) {
      ip('addr', 'add', `${net}.1/24`, 'dev', link);
      ip('-n', namespace, 'addr', 'add', `${net}.10/24`, 'dev', 'eth0');
    }
    ip('link', 'set', link, 'up');
    ip('-n', namespace, 'link', 'set', 'eth0', 'up');
    ip('-n', namespace, 'link', 'set', 'lo', 'up');
    ip('-n', namespace, 'route', 'add', 'default', 'via', `${first}.1`);
    const program = spawn('ip', ['netns', 'exec', namespace, process.execPath, '-e', options.program], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    await new Promise<void>((resolve, reject) => {
      program.stdout?.once('data', () => resolve());
      program.once('exit', (code) => reject(new Error(`the test host's program exited with ${code}`)));
    });
    return new TestHost(namespace, link, program);
  }

  /** How its program ended, if it did. */
  get ended(): string | undefined {
    return this.endedAs;
  }

  /** Stops its program and removes the link and the namespace. Never throws. */
  stop(): void {
    this.program.kill('SIGKILL');
    for (const args of [
      ['link', 'del', this.link],
      ['netns', 'del', this.namespace],
    ]) {
      try {
        ip(...args);
      } catch {
        // never made, or gone already
      }
    }
  }
}
