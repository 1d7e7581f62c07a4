import { connect, type Socket } from 'node:net';

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
}

export class QmpError extends Error {}

interface EventWaiter {
  name: string;
  accept: (data: Record<string, unknown>) => boolean;
  resolve: (data: Record<string, unknown>) => void;
  reject: (error: Error) => void;
}

/** A client for QEMU's machine protocol (QMP): JSON lines over a unix socket. */
export class QmpClient {
  private buffer = '';
  private readonly pending: Pending[] = [];
  private readonly eventWaiters = new Set<EventWaiter>();
  private closedError: Error | undefined;

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (text: string) => this.onData(text));
    socket.on('close', () => this.fail(new QmpError('the QMP connection closed')));
    socket.on('error', (error) => this.fail(new QmpError(`QMP: ${error.message}`)));
  }

  /** Connects, retrying while QEMU has not opened the socket yet, and negotiates capabilities. */
  static async connect(path: string, timeoutMs: number): Promise<QmpClient> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      try {
        const socket = await new Promise<Socket>((resolve, reject) => {
          const s = connect(path);
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        });
        const client = new QmpClient(socket);
        await client.greeting();
        await client.execute('qmp_capabilities');
        return client;
      } catch (error) {
        if (Date.now() > deadline) throw new QmpError(`QMP did not answer on ${path}: ${(error as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  }

  private greeting(): Promise<unknown> {
    return new Promise((resolve, reject) => this.pending.push({ resolve, reject }));
  }

  execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise<T>((resolve, reject) => {
      this.pending.push({ resolve: resolve as (value: unknown) => void, reject });
      this.socket.write(`${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}) })}\n`);
    });
  }

  /**
   * Resolves with the data of the next event of this name that `accept` takes (events seen before
   * the call are not kept: call it before causing the event).
   */
  waitForEvent(
    name: string,
    accept: (data: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ): Promise<Record<string, unknown>> {
    if (this.closedError) return Promise.reject(this.closedError);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.eventWaiters.delete(waiter);
        reject(new QmpError(`no ${name} event within ${timeoutMs} ms`));
      }, timeoutMs);
      const waiter: EventWaiter = {
        name,
        accept,
        resolve: (data) => {
          clearTimeout(timer);
          resolve(data);
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      this.eventWaiters.add(waiter);
    });
  }

  /** Polls query-migrate until the migration completes (or fails). */
  async waitForMigration(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const state = await this.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (state.status === 'completed') return;
      if (state.status === 'failed' || state.status === 'cancelled') {
        throw new QmpError(`migration ${state.status}: ${state['error-desc'] ?? ''}`);
      }
      if (Date.now() > deadline) throw new QmpError('migration did not finish in time');
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  }

  close(): void {
    this.socket.destroy();
  }

  private onData(text: string): void {
    this.buffer += text;
    for (let newline = this.buffer.indexOf('\n'); newline >= 0; newline = this.buffer.indexOf('\n')) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (!line) continue;
      let message: { QMP?: unknown; return?: unknown; error?: { desc?: string }; event?: string; data?: Record<string, unknown> };
      try {
        message = JSON.parse(line);
      } catch {
        continue;
      }
      if (message.event) {
        this.dispatchEvent(message.event, message.data ?? {});
        continue;
      }
      const waiter = this.pending.shift();
      if (!waiter) continue;
      if (message.error) waiter.reject(new QmpError(message.error.desc ?? 'QMP error'));
      else waiter.resolve(message.QMP ?? message.return);
    }
  }

  private dispatchEvent(name: string, data: Record<string, unknown>): void {
    for (const waiter of this.eventWaiters) {
      if (waiter.name !== name || !waiter.accept(data)) continue;
      this.eventWaiters.delete(waiter);
      waiter.resolve(data);
    }
  }

  private fail(error: Error): void {
    this.closedError ??= error;
    for (const waiter of this.pending.splice(0)) waiter.reject(error);
    for (const waiter of this.eventWaiters) waiter.reject(error);
    this.eventWaiters.clear();
  }
}
