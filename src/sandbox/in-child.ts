import { execFile } from 'node:child_process';

/**
 * Calls a synchronous, slow export of one of the platform's modules (an image build) in a child
 * Node.js process, so that the server's event loop keeps answering meanwhile. Arguments and the
 * result travel as JSON. `module` is a URL made with `sourceUrl`.
 */
export function callInChild<T>(module: URL, exportName: string, args: readonly unknown[]): Promise<T> {
  const script = [
    `const m = await import(${JSON.stringify(module.href)});`,
    `const result = await m[${JSON.stringify(exportName)}](...${JSON.stringify(args)});`,
    'process.stdout.write(JSON.stringify(result ?? null));',
  ].join('\n');
  return new Promise((resolve, reject) => {
    // The same loader flags as this process (under a TypeScript loader the module is a .ts file).
    execFile(
      process.execPath,
      [...process.execArgv, '--input-type=module', '--eval', script],
      { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) {
          // The thrown error's message, without its class name and the stack.
          const reason = /(?:^|\n)\w*Error: ([^\n]+)/.exec(stderr)?.[1] ?? (stderr.trim().split('\n').at(-1) || error.message);
          reject(new Error(reason));
        } else resolve(JSON.parse(stdout) as T);
      },
    );
  });
}

/** The URL of a sibling source module of `base`, with base's own extension (.ts under a loader, .js when built). */
export function sourceUrl(relativePath: string, base: string): URL {
  const extension = /\.[cm]?[jt]s$/.exec(new URL(base).pathname)?.[0] ?? '.js';
  return new URL(`${relativePath}${extension}`, base);
}
