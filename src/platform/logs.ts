import type { LogStream } from '../sandbox/backend.js';

/**
 * Collects what a function prints as OpenWhisk log lines (`<ISO time> stdout: <text>`), up to the
 * action's log limit in UTF-8 bytes; beyond it one line says the rest was dropped.
 */
export class LogCollector {
  private readonly lines: string[] = [];
  private readonly partial: Record<LogStream, string> = { stdout: '', stderr: '' };
  private bytes = 0;
  private truncated = false;

  constructor(private readonly limitBytes: number) {}

  readonly sink = (stream: LogStream, text: string): void => {
    const pending = this.partial[stream] + text;
    const parts = pending.split('\n');
    this.partial[stream] = parts.pop() ?? '';
    for (const line of parts) this.add(stream, line);
    // A partial line longer than the limit is flushed rather than buffered without bound. (A
    // string has at most 3 bytes per UTF-16 code unit: most writes skip the byte count.)
    const partial = this.partial[stream];
    if (partial.length * 3 > this.limitBytes && Buffer.byteLength(partial) > this.limitBytes) {
      this.add(stream, this.partial[stream]);
      this.partial[stream] = '';
    }
  };

  /** Lines in order, the unfinished last line of each stream included. */
  finish(): string[] {
    for (const stream of ['stdout', 'stderr'] as const) {
      if (this.partial[stream]) this.add(stream, this.partial[stream]);
      this.partial[stream] = '';
    }
    return this.lines;
  }

  private add(stream: LogStream, text: string): void {
    if (this.truncated) return;
    const line = `${new Date().toISOString()} ${stream}: ${text}`;
    // The limit is in bytes, as stored and sent (UTF-8), not in UTF-16 code units.
    const bytes = Buffer.byteLength(line);
    if (this.bytes + bytes > this.limitBytes) {
      this.truncated = true;
      this.lines.push(
        `${new Date().toISOString()} stderr: Logs were truncated because the total bytes size exceeds the limit of ${this.limitBytes} bytes.`,
      );
      return;
    }
    this.bytes += bytes;
    this.lines.push(line);
  }
}
