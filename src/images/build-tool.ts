import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';

/**
 * Runs one tool of an image or kernel build and returns what it printed. A failure becomes an
 * error of the caller's class carrying the tail of the tool's stderr, the part that says why.
 * With `log`, both streams are appended to that file, failed or not.
 */
export function runBuildTool(
  command: string,
  args: string[],
  options: { cwd?: string; log?: string; error: new (message: string) => Error },
): string {
  try {
    const output = execFileSync(command, args, {
      cwd: options.cwd,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      maxBuffer: 256 * 1024 * 1024,
    });
    if (options.log) writeFileSync(options.log, output, { flag: 'a' });
    return output;
  } catch (error) {
    const failure = error as { stdout?: string; stderr?: string; message: string };
    if (options.log) writeFileSync(options.log, `${failure.stdout ?? ''}${failure.stderr ?? ''}`, { flag: 'a' });
    const stderr = String(failure.stderr ?? '').trim();
    throw new options.error(`${command} ${args.slice(0, 3).join(' ')} failed: ${stderr.slice(-600) || failure.message}`);
  }
}
