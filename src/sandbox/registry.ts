import { join } from 'node:path';
import { ISOLATIONS, type Isolation } from '../core/kinds.js';
import { buildAgent, buildBundle } from '../guest/bundle.js';
import type { Backend, BackendStatus } from './backend.js';
import { IsolateBackend } from './isolate/isolate-backend.js';
import { ProcessBackend } from './process/process-backend.js';
import { WasmBackend } from './wasm/wasm-backend.js';

export interface BackendContext {
  dataDir: string;
}

/** Makes the backend for an isolation, or says why this build or host cannot. */
export async function createBackend(isolation: Isolation, context: BackendContext): Promise<Backend | BackendStatus> {
  switch (isolation) {
    case 'isolate':
      return new IsolateBackend();
    case 'process':
      return new ProcessBackend({ agentPath: buildAgent(join(context.dataDir, 'runtime')) });
    case 'wasm':
      return new WasmBackend({
        workerScript: buildBundle('wasm-worker', join(context.dataDir, 'runtime')),
        ...(process.env.ISOLA_WASM_WORKERS ? { workers: Number(process.env.ISOLA_WASM_WORKERS) } : {}),
      });
    default:
      return {
        isolation,
        available: false,
        detail: 'This build does not include the backend yet.',
        fix: 'Use isolation isolate or process.',
      };
  }
}

export interface ProbedBackends {
  backends: Map<Isolation, Backend>;
  statuses: BackendStatus[];
}

/** Creates and checks every backend; keeps those that work (and, if given, only those wanted). */
export async function probeBackends(context: BackendContext, wanted?: readonly Isolation[]): Promise<ProbedBackends> {
  const backends = new Map<Isolation, Backend>();
  const statuses: BackendStatus[] = [];
  for (const isolation of ISOLATIONS) {
    if (wanted && !wanted.includes(isolation)) {
      statuses.push({ isolation, available: false, detail: 'Not enabled by the backends setting.' });
      continue;
    }
    let status: BackendStatus;
    let backend: Backend | undefined;
    try {
      const made = await createBackend(isolation, context);
      if ('create' in made) {
        backend = made;
        status = await made.status();
      } else {
        status = made;
      }
    } catch (error) {
      status = { isolation, available: false, detail: error instanceof Error ? error.message : String(error) };
    }
    statuses.push(status);
    if (backend && status.available) backends.set(isolation, backend);
    else await backend?.close();
  }
  return { backends, statuses };
}
