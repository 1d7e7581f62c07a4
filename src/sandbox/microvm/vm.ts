import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { AgentTransport, ExitInfo } from '../agent-sandbox.js';
import { qemuArguments, type VmConfig } from './qemu.js';
import { QmpClient, QmpError } from './qmp.js';

export const QEMU = '/usr/bin/qemu-system-x86_64';
/** setpriv execs QEMU with a parent-death signal: a server that dies, however it dies, takes its VMs with it. */
const SETPRIV = '/usr/bin/setpriv';
// The agent is the guest's init: when it alone fills the guest's memory the kernel cannot kill
// it and panics ("deadlocked on memory") instead.
const OOM_IN_GUEST =
  /JavaScript heap out of memory|Out of memory: Killed process|Reached heap limit|Allocation failed|deadlocked on memory|Out of memory and no killable processes/;

/** One QEMU process running one microVM, in a directory of its own. */
export class Vm {
  readonly process: ChildProcess;
  readonly exited: Promise<ExitInfo>;
  private qmpClient: QmpClient | undefined;
  private removed = false;
  /** For a VM waiting for a restore: QMP connected and QEMU listening for the incoming state. */
  readonly incomingReady: Promise<void> | undefined;

  constructor(
    readonly id: string,
    readonly config: VmConfig,
  ) {
    mkdirSync(config.dir, { recursive: true, mode: 0o700 });
    const [file, args] = existsSync(SETPRIV)
      ? [SETPRIV, ['--pdeathsig=KILL', '--', QEMU, ...qemuArguments(config)]]
      : [QEMU, qemuArguments(config)];
    this.process = spawn(file, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    if (this.process.pid) writeFileSync(join(config.dir, 'qemu.pid'), String(this.process.pid));
    let stderr = '';
    this.process.stderr?.on('data', (chunk: Buffer) => {
      if (stderr.length < 4096) stderr += chunk.toString();
    });
    this.exited = new Promise((resolve) => {
      this.process.once('exit', (code, signal) => {
        if (stderr.trim()) this.appendConsole(`qemu: ${stderr.trim()}\n`);
        // The guest's crash report comes before the kernel's panic dump: look at all of it.
        resolve({ code, signal, oom: OOM_IN_GUEST.test(this.consoleTail(64 * 1024)) });
      });
      this.process.once('error', (error) => {
        this.appendConsole(`qemu: ${error.message}\n`);
        resolve({ code: null, signal: null, oom: false });
      });
    });
    if (config.incoming) {
      this.incomingReady = this.listenForIncoming();
      // Awaited by restore; a VM removed before that must not leave an unhandled rejection.
      this.incomingReady.catch(() => {});
    }
  }

  private get incomingSocket(): string {
    return join(this.config.dir, 'incoming.sock');
  }

  /**
   * Everything a restore can do before it is asked for, done while QEMU waits: connecting QMP,
   * setting the migration capabilities, and having QEMU listen for the state on a socket.
   */
  private async listenForIncoming(): Promise<void> {
    const qmp = await this.qmp(30_000);
    await qmp.execute('migrate-set-capabilities', {
      capabilities: [
        { capability: 'x-ignore-shared', state: true },
        { capability: 'events', state: true },
      ],
    });
    await qmp.execute('migrate-incoming', { uri: `unix:${this.incomingSocket}` });
  }

  get alive(): boolean {
    return this.process.exitCode === null && this.process.signalCode === null;
  }

  async qmp(timeoutMs = 10_000): Promise<QmpClient> {
    this.qmpClient ??= await QmpClient.connect(join(this.config.dir, 'qmp.sock'), timeoutMs);
    return this.qmpClient;
  }

  /**
   * Loads a snapshot's device state into this VM (started with `-incoming defer`): the state is
   * written into the socket QEMU listens on, and this resolves once QEMU says the migration
   * completed, by when QEMU has started the guest itself (the snapshot does not record that it
   * was paused). `running` resolves once that is confirmed, or once a VM found paused (a
   * snapshot taken otherwise) has been continued: nothing need wait for it but a failure.
   */
  async restore(state: Buffer, timeoutMs: number): Promise<{ running: Promise<void> }> {
    if (!this.incomingReady) throw new Error('this VM was not started to wait for a restore');
    await this.incomingReady;
    const qmp = await this.qmp(timeoutMs);
    const settled = qmp.waitForEvent(
      'MIGRATION',
      (data) => ['completed', 'failed', 'cancelled'].includes(String(data.status)),
      timeoutMs,
    );
    // Awaited below only if the state was written; a failure before that must not go unhandled.
    settled.catch(() => {});
    await new Promise<void>((resolve, reject) => {
      const socket = connect(this.incomingSocket);
      socket.once('error', reject);
      socket.end(state, () => resolve());
    });
    const { status } = await settled;
    if (status !== 'completed') {
      const info = await qmp.execute<{ 'error-desc'?: string }>('query-migrate').catch(() => ({}) as { 'error-desc'?: string });
      throw new QmpError(`migration ${String(status)}: ${info['error-desc'] ?? ''}`);
    }
    const running = (async () => {
      const { running: isRunning } = await qmp.execute<{ running: boolean }>('query-status');
      if (!isRunning) await qmp.execute('cont');
    })();
    running.catch(() => {});
    return { running };
  }

  /**
   * Pauses the VM and saves its device state. With x-ignore-shared the RAM, which lives in a
   * shared file, is not copied: the file is the snapshot's memory.
   */
  async snapshot(statePath: string, timeoutMs: number): Promise<void> {
    const qmp = await this.qmp(timeoutMs);
    await qmp.execute('stop');
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    // QEMU sends the state to a socket of ours, written to the file as it comes: no shell, and
    // nothing in the path is interpreted.
    const socketPath = join(this.config.dir, 'outgoing.sock');
    const server = createServer();
    try {
      const written = new Promise<void>((resolve, reject) => {
        server.once('connection', (socket) => {
          server.close();
          pipeline(socket, createWriteStream(statePath, { mode: 0o600 })).then(resolve, reject);
        });
        server.once('error', reject);
      });
      // Not awaited until the migration has finished; a failure before that must not go unhandled.
      written.catch(() => {});
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socketPath, resolve);
      });
      await qmp.execute('migrate', { uri: `unix:${socketPath}` });
      await qmp.waitForMigration(timeoutMs);
      await written;
    } finally {
      server.close();
      await rm(socketPath, { force: true });
    }
  }

  /** Connects to the agent's virtio-serial port, retrying until QEMU has created the socket. */
  async connectAgent(timeoutMs: number): Promise<Socket> {
    const path = join(this.config.dir, 'agent.sock');
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        return await new Promise<Socket>((resolve, reject) => {
          const socket = connect(path);
          socket.once('connect', () => resolve(socket));
          socket.once('error', reject);
        });
      } catch (error) {
        if (Date.now() > deadline || !this.alive)
          throw new Error(`the VM's agent socket did not open: ${(error as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  }

  kill(): void {
    if (this.alive) this.process.kill('SIGKILL');
  }

  /** The end of the guest's console: kernel messages and whatever crashed. */
  consoleTail(length = 2000): string {
    try {
      return readFileSync(join(this.config.dir, 'console.log'), 'utf8').slice(-length);
    } catch {
      return '';
    }
  }

  async remove(): Promise<void> {
    if (this.removed) return;
    this.removed = true;
    this.qmpClient?.close();
    this.kill();
    await this.exited;
    // A VM booted with private RAM has a file of its memory size here.
    await rm(this.config.dir, { recursive: true, force: true });
    await this.config.network?.release();
  }

  private appendConsole(text: string): void {
    try {
      if (existsSync(this.config.dir)) writeFileSync(join(this.config.dir, 'console.log'), text, { flag: 'a' });
    } catch {
      // the directory is already gone
    }
  }
}

/** The agent's channel in a VM: the virtio-serial port's socket; the VM's life is QEMU's. */
export class VmTransport implements AgentTransport {
  readonly input: Socket;
  readonly output: Socket;
  readonly exited: Promise<ExitInfo>;

  constructor(
    private readonly vm: Vm,
    socket: Socket,
  ) {
    this.input = socket;
    this.output = socket;
    this.exited = vm.exited;
  }

  kill(): void {
    this.vm.kill();
  }

  async cleanup(): Promise<void> {
    this.input.destroy();
    await this.vm.remove();
  }
}
