import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { isAbsolute } from 'node:path';

export type RuntimeName = 'runc' | 'crun' | 'runsc';

/** How a container comes to be: created (started later), run at once, or restored from a checkpoint. */
export type ContainerLaunch = { kind: 'create' } | { kind: 'run' } | { kind: 'restore'; imagePath: string };

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Where a runtime binary is, if anywhere on the usual paths. */
export function findBinary(name: string): string | undefined {
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    const path = `${dir}/${name}`;
    if (existsSync(path)) return path;
  }
  return undefined;
}

/** True on a host with cgroup v1 controllers and the v2 hierarchy mounted beside them. */
export function hybridCgroups(): boolean {
  return existsSync('/sys/fs/cgroup/unified/cgroup.controllers') && existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes');
}

/**
 * One OCI runtime CLI (runc, crun or runsc) with its own state directory. Every path handed to it
 * is absolute: relative paths mean different things to different runtimes.
 */
export class OciRuntime {
  constructor(
    readonly name: RuntimeName,
    readonly binary: string,
    readonly stateRoot: string,
    /** crun 1.8 refuses a hybrid cgroup layout; it works in a mount namespace without cgroup2. */
    private readonly hideUnifiedCgroup: boolean,
    private readonly globalArgs: readonly string[] = [],
    /** A command the runtime's command line runs under (see container-backend's gVisor egress). */
    private readonly wrapper: readonly string[] = [],
  ) {
    if (!isAbsolute(stateRoot)) throw new Error(`the runtime state root must be absolute: ${stateRoot}`);
    mkdirSync(stateRoot, { recursive: true, mode: 0o700 });
  }

  /**
   * The same runtime and state with more global flags (a later flag overrides an earlier one:
   * runsc's `--network`), run under `wrapper` (a command that ends by running its arguments).
   */
  withGlobalArgs(extra: readonly string[], wrapper: readonly string[] = []): OciRuntime {
    return new OciRuntime(
      this.name,
      this.binary,
      this.stateRoot,
      this.hideUnifiedCgroup,
      [...this.globalArgs, ...extra],
      [...this.wrapper, ...wrapper],
    );
  }

  /** The full command line for a runtime command. */
  commandLine(args: readonly string[]): [string, string[]] {
    const [command, argv] = this.unwrappedCommandLine(args);
    const [wrapper, ...wrapperArgs] = this.wrapper;
    return wrapper === undefined ? [command, argv] : [wrapper, [...wrapperArgs, command, ...argv]];
  }

  private unwrappedCommandLine(args: readonly string[]): [string, string[]] {
    const full = ['--root', this.stateRoot, ...this.globalArgs, ...args];
    if (!this.hideUnifiedCgroup) return [this.binary, full];
    return [
      '/usr/bin/unshare',
      ['-m', '/bin/sh', '-c', 'umount -l /sys/fs/cgroup/unified 2>/dev/null; exec "$0" "$@"', this.binary, ...full],
    ];
  }

  exec(args: readonly string[], timeoutMs = 30_000): Promise<CommandResult> {
    const [command, argv] = this.commandLine(args);
    return new Promise((resolve) => {
      execFile(command, argv, { timeout: timeoutMs, maxBuffer: 4 * 1024 * 1024 }, (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : 1) : 0;
        resolve({ code, stdout: String(stdout), stderr: String(stderr) });
      });
    });
  }

  /**
   * `create` sets the container up with its process waiting for `start`; `run --detach` also
   * starts it, in one command. The pipes given to the command become the container process's
   * stdio; the command exits once the container exists, and the pipes stay open with the
   * container (so never wait for them to close).
   */
  spawnContainer(how: ContainerLaunch, id: string, bundle: string, pidFile: string, stdinFd: number): ChildProcess {
    const verb =
      how.kind === 'create'
        ? ['create']
        : how.kind === 'run'
          ? ['run', '--detach']
          : ['restore', '--detach', '--image-path', how.imagePath];
    const [command, argv] = this.commandLine([...verb, '--bundle', bundle, '--pid-file', pidFile, id]);
    return spawn(command, argv, { stdio: [stdinFd, 'pipe', 'pipe'] });
  }

  async start(id: string): Promise<CommandResult> {
    return this.exec(['start', id]);
  }

  async kill(id: string, signal = 'KILL'): Promise<CommandResult> {
    return this.exec(['kill', id, signal]);
  }

  /** Saves the container's state into `imagePath` (runsc); the container stops. */
  async checkpoint(id: string, imagePath: string): Promise<CommandResult> {
    return this.exec(['checkpoint', '--image-path', imagePath, id], 120_000);
  }

  async delete(id: string): Promise<CommandResult> {
    return this.exec(['delete', '--force', id]);
  }

  /** Ids of the containers in this runtime's state directory. */
  async list(): Promise<string[]> {
    const result = await this.exec(['list', '--quiet']);
    if (result.code !== 0) return [];
    return result.stdout
      .split('\n')
      .map((s) => s.trim())
      .filter(Boolean);
  }

  async version(): Promise<string> {
    const [command, argv] = [this.binary, ['--version']];
    return new Promise((resolve) => {
      execFile(command, argv, { timeout: 10_000 }, (_error, stdout) => resolve(String(stdout).split('\n')[0]?.trim() ?? ''));
    });
  }
}
