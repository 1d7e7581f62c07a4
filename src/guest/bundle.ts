import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildSync, version as esbuildVersion } from 'esbuild';

const AGENT_SOURCES = ['agent.ts', 'protocol.ts'].map((f) => fileURLToPath(new URL(`./${f}`, import.meta.url)));

/** A content hash of the agent's sources: sandboxes and images built for one agent are keyed by it. */
export function agentHash(): string {
  const hash = createHash('sha256').update(esbuildVersion);
  for (const file of AGENT_SOURCES) hash.update(readFileSync(file));
  return hash.digest('hex').slice(0, 16);
}

/**
 * Bundles the guest agent into one CommonJS file that runs on a bare node binary, cached in
 * `dir` by content hash so that it is rebuilt only when the agent changes.
 */
export function buildAgent(dir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const file = join(dir, `agent-${agentHash()}.cjs`);
  if (existsSync(file)) return file;
  const temp = `${file}.${process.pid}.tmp`;
  buildSync({
    entryPoints: [AGENT_SOURCES[0] as string],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    outfile: temp,
    logLevel: 'silent',
    legalComments: 'none',
  });
  renameSync(temp, file);
  return file;
}
