import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { waitFor } from './server-process.js';

/**
 * A private service a test starts (PostgreSQL, nats-server): one child process on a port of its
 * own, its files in a temp dir, stopped by its pid, restartable on the same port and files as
 * an operator restarting it would. Subclasses say how to start it and how to tell it is ready.
 */
export abstract class ServiceProcess {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private removed = false;
  /** The tail of what the server wrote to stderr, for errors. */
  protected log = '';

  protected constructor(
    readonly port: number,
    protected readonly dir: string,
    private readonly service: {
      /** For messages: `nats-server`, `PostgreSQL`. */
      name: string;
      /** What stops it cleanly. */
      stopSignal: NodeJS.Signals;
      /** What its log says when another process holds the port. */
      portTaken: RegExp;
    },
  ) {}

  /** Starts the server process; its stderr is read by the base. */
  protected abstract spawnServer(): ChildProcess;

  /** One readiness probe: true once the server takes clients. */
  protected abstract accepts(): Promise<boolean>;

  /**
   * Makes instances on fresh free ports (`make`) until one starts: another process may take a
   * port between the probe and the start. The temp dir goes when none does.
   */
  protected static async startOnFreePort<T extends ServiceProcess>(dir: string, make: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const instance = await make();
      try {
        await instance.launch();
        return instance;
      } catch (error) {
        await instance.kill();
        if (attempt < 3 && instance.portTaken) continue;
        rmSync(dir, { recursive: true, force: true });
        throw error;
      }
    }
  }

  /** The server's pid while it runs. */
  get pid(): number | undefined {
    return this.running ? this.proc?.pid : undefined;
  }

  /** Stops the server by its pid, cleanly, and keeps its files. */
  async shutdown(): Promise<void> {
    if (this.running) this.proc?.kill(this.service.stopSignal);
    await this.exited;
  }

  /** Kills the server by its pid (SIGKILL), as a crash would. */
  async kill(): Promise<void> {
    if (this.running) this.proc?.kill('SIGKILL');
    await this.exited;
  }

  /** Stops the server if it runs and starts it again on the same port and files. */
  async restart(): Promise<void> {
    await this.shutdown();
    // The port was just released; if something else grabbed it meanwhile, wait a little for it.
    await waitFor(
      `${this.service.name} to start again on its port`,
      async () => {
        try {
          await this.launch();
          return true;
        } catch (error) {
          await this.kill();
          if (this.portTaken) return undefined;
          throw error;
        }
      },
      30_000,
    );
  }

  /** Stops the server by its pid and removes its files. */
  async stop(): Promise<void> {
    await this.shutdown();
    if (!this.removed) rmSync(this.dir, { recursive: true, force: true });
    this.removed = true;
  }

  private get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  private get portTaken(): boolean {
    return this.service.portTaken.test(this.log);
  }

  private async launch(): Promise<void> {
    this.log = '';
    const proc = this.spawnServer();
    this.proc = proc;
    proc.stderr?.on('data', (chunk: Buffer) => {
      this.log = (this.log + chunk.toString()).slice(-4000);
    });
    this.exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    const killOnExit = () => proc.kill('SIGKILL');
    process.once('exit', killOnExit);
    void this.exited.then(() => process.off('exit', killOnExit));
    let gone = false;
    void this.exited.then(() => {
      gone = true;
    });
    const { name } = this.service;
    await waitFor(
      `${name} to accept connections`,
      async () => {
        if (gone) throw new Error(`${name} exited while starting:\n${this.log}`);
        return (await this.accepts()) ? true : undefined;
      },
      30_000,
    ).catch((error: Error) => {
      throw error.message.startsWith('timed out') ? new Error(`${name} did not start within 30 s:\n${this.log}`) : error;
    });
  }
}

/** One instance per test process, started by the first `get` and stopped by `stop`. */
export function sharedService<T extends ServiceProcess>(start: () => Promise<T>): { get(): Promise<T>; stop(): Promise<void> } {
  let shared: Promise<T> | undefined;
  return {
    get: () => {
      shared ??= start();
      return shared;
    },
    stop: async () => {
      const instance = shared;
      shared = undefined;
      if (instance) await (await instance).stop();
    },
  };
}
