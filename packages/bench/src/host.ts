import { execFileSync } from 'node:child_process';
import { cpus, freemem, hostname, release, totalmem } from 'node:os';

/** What the figures were measured on: they mean little without it. */
export function hostInfo() {
  let debian = '';
  try {
    debian = execFileSync('cat', ['/etc/debian_version'], { encoding: 'utf8' }).trim();
  } catch {
    // not Debian
  }
  return {
    hostname: hostname(),
    kernel: release(),
    debian,
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    freeMemoryGiB: Math.round((freemem() / 2 ** 30) * 10) / 10,
    node: process.version,
    date: new Date().toISOString(),
  };
}
