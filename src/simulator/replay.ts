import type { ActivationRecord } from '../core/types.js';
import { MINUTE_MS } from './simulate.js';
import type { TraceApp } from './trace.js';

/** What a replay needs of an API client: JSON requests to a live server (the CLI's client is one). */
export interface ReplayClient {
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<{ data: T }>;
}

export interface ReplayOptions {
  client: ReplayClient;
  apps: readonly TraceApp[];
  /** The policy in the annotation's syntax, already scaled (e.g. fixed:1s, hybrid:100ms). */
  policy: string;
  /** Real ms per trace minute. */
  minuteMs: number;
  /** Names are prefixed with this, so that replays do not share functions. */
  prefix: string;
}

export interface ReplayReport {
  policy: string;
  invocations: number;
  coldStarts: number;
  coldStartPct: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * Replays apps against a live server on a compressed time axis: one action per app (it sleeps
 * for the app's scaled duration), its keep-alive policy set by annotation, and each minute's
 * invocations fired at their scaled time (the first alone, the rest once it has found or started
 * an instance, as the simulator counts them). Cold starts are read off the activation records.
 */
export async function replay(options: ReplayOptions): Promise<ReplayReport> {
  const { client, apps, minuteMs } = options;
  const scale = minuteMs / MINUTE_MS;
  const names = apps.map((_, i) => `${options.prefix}-${i}`);
  for (const [i, app] of apps.entries()) {
    await client.request('PUT', `/api/v1/namespaces/_/actions/${names[i]}?overwrite=true`, {
      exec: {
        kind: 'nodejs:20',
        code: 'async function main(p) { await new Promise((r) => setTimeout(r, p.ms)); return { ok: true }; }',
      },
      limits: { memory: 64, concurrency: 100, timeout: 60_000 },
      parameters: [{ key: 'ms', value: Math.round(app.durationMs * scale) }],
      annotations: [{ key: 'keepAlive', value: options.policy }],
    });
  }
  const minutes = Math.max(...apps.map((a) => a.perMinute.length));
  const started = Date.now() + 200;
  let invocations = 0;
  let coldStarts = 0;
  const pending: Promise<void>[] = [];
  const invoke = async (name: string) => {
    const { data } = await client.request<ActivationRecord>('POST', `/api/v1/namespaces/_/actions/${name}?blocking=true`, {});
    invocations++;
    if (data.annotations.find((a) => a.key === 'coldStart')?.value === true) coldStarts++;
  };
  for (let minute = 0; minute < minutes; minute++) {
    await sleep(started + minute * minuteMs - Date.now());
    for (const [i, app] of apps.entries()) {
      const count = app.perMinute[minute] ?? 0;
      if (count === 0) continue;
      const name = names[i] as string;
      pending.push(
        (async () => {
          await invoke(name);
          await Promise.all(Array.from({ length: count - 1 }, () => invoke(name)));
        })(),
      );
    }
  }
  await Promise.all(pending);
  for (const name of names) await client.request('DELETE', `/api/v1/namespaces/_/actions/${name}`);
  return {
    policy: options.policy,
    invocations,
    coldStarts,
    coldStartPct: Math.round((invocations > 0 ? (coldStarts / invocations) * 100 : 0) * 1000) / 1000,
  };
}
