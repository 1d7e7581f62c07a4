import { totalmem } from 'node:os';
import { resolve } from 'node:path';
import { ISOLATIONS, type Isolation, isIsolation } from './core/kinds.js';

export interface ServerConfig {
  port: number;
  host: string;
  dataDir: string;
  /** `uuid:key` for the guest namespace; generated and saved in the data dir when absent. */
  guestAuth?: string;
  /** Backends to enable; all that work on this host when absent. */
  backends?: Isolation[];
  /** The database setting: `postgres://...` selects PostgreSQL; unset, the SQLite file in the data dir. */
  databaseUrl?: string;
  memoryBudgetMb: number;
  /** The default keep-alive policy: `fixed:<duration>` or `hybrid`. */
  keepAlive: string;
  queueTimeoutMs: number;
  /** Largest action (code included) a PUT may carry. */
  maxActionBytes: number;
  /** Largest invocation payload. */
  maxPayloadBytes: number;
  /** How long a blocking invoke waits before answering 202 with the activation id. */
  blockingWaitMs: number;
  /** First delay before retrying a failed asynchronous invocation; it doubles each attempt. */
  retryBaseMs: number;
  /** Blank sandboxes kept ready per backend, for the default memory size. */
  prewarm: Partial<Record<Isolation, number>>;
  /** runc or crun for isolation "container"; the faster one that works when absent. */
  containerRuntime?: 'runc' | 'crun';
  /** Whether prewarmed containers are started (agent booted) or only created. */
  containerPrewarm: 'started' | 'created';
  // HTTP connection bounds, so that slow or silent clients cannot hold connections open.
  /** Time a client has to send a request's headers (ISOLA_HEADERS_TIMEOUT). */
  headersTimeoutMs: number;
  /** Time a client has to send a whole request, body included (ISOLA_REQUEST_TIMEOUT). */
  requestTimeoutMs: number;
  /** How long a keep-alive connection may sit idle between requests (ISOLA_IDLE_TIMEOUT). */
  idleTimeoutMs: number;
}

export interface ServerFlags {
  port?: string;
  host?: string;
  dataDir?: string;
  backends?: string;
  database?: string;
  memoryBudget?: string;
  keepAlive?: string;
  prewarm?: string;
  containerRuntime?: string;
}

export class ConfigError extends Error {}

/** Durations as `500ms`, `30s`, `10m`, `4h`, `7d` or a bare number of ms. */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!match) throw new ConfigError(`"${text}" is not a duration: use e.g. 500ms, 30s, 10m, 4h or 7d.`);
  const value = Number(match[1]);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(match[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h' | 'd'];
  return Math.round(value * unit);
}

function parseInteger(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}; got "${text}".`);
  }
  return value;
}

export function parseBackendList(text: string): Isolation[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const name of names) {
    if (!isIsolation(name)) throw new ConfigError(`Unknown backend "${name}"; known backends: ${ISOLATIONS.join(', ')}.`);
  }
  return names as Isolation[];
}

/** `isolate:2,process:1`: how many blank sandboxes each backend keeps ready. */
export function parsePrewarm(text: string): Partial<Record<Isolation, number>> {
  const result: Partial<Record<Isolation, number>> = {};
  for (const part of text.split(',').filter((p) => p.trim())) {
    const [name = '', count = ''] = part.split(':').map((s) => s.trim());
    if (!isIsolation(name)) throw new ConfigError(`Unknown backend "${name}" in the prewarm setting.`);
    result[name] = parseInteger(`prewarm count for ${name}`, count, 0, 64);
  }
  return result;
}

/** Settings from flags, then environment, then defaults: flags win. */
export function resolveServerConfig(flags: ServerFlags, env: NodeJS.ProcessEnv = process.env): ServerConfig {
  const pick = (flag: string | undefined, envName: string) => flag ?? (env[envName] || undefined);
  const port = pick(flags.port, 'ISOLA_PORT');
  const backends = pick(flags.backends, 'ISOLA_BACKENDS');
  const budget = pick(flags.memoryBudget, 'ISOLA_MEMORY_BUDGET_MB');
  const keepAlive = pick(flags.keepAlive, 'ISOLA_KEEP_ALIVE');
  const prewarm = pick(flags.prewarm, 'ISOLA_PREWARM');
  const guestAuth = env.ISOLA_GUEST_AUTH || undefined;
  if (guestAuth && !/^[^:\s]+:[^:\s]+$/.test(guestAuth)) throw new ConfigError('ISOLA_GUEST_AUTH must look like uuid:key.');
  // ISOLA_DATABASE_URL, the earlier name, still works.
  const databaseUrl = pick(flags.database, 'ISOLA_DATABASE') ?? (env.ISOLA_DATABASE_URL || undefined);
  if (databaseUrl && !/^(postgres(ql)?:\/\/|sqlite:)/.test(databaseUrl)) {
    throw new ConfigError(
      'The database must be a postgres://user@host:port/database URL (or sqlite:<file>); unset, SQLite in the data dir.',
    );
  }
  const containerRuntime = pick(flags.containerRuntime, 'ISOLA_CONTAINER_RUNTIME');
  if (containerRuntime && containerRuntime !== 'runc' && containerRuntime !== 'crun') {
    throw new ConfigError(`The container runtime must be runc or crun; got "${containerRuntime}".`);
  }
  const containerPrewarm = env.ISOLA_CONTAINER_PREWARM || 'started';
  if (containerPrewarm !== 'started' && containerPrewarm !== 'created') {
    throw new ConfigError(`ISOLA_CONTAINER_PREWARM must be started or created; got "${containerPrewarm}".`);
  }
  return {
    port: port === undefined ? 3233 : parseInteger('port', port, 0, 65535),
    host: pick(flags.host, 'ISOLA_HOST') ?? '127.0.0.1',
    dataDir: resolve(pick(flags.dataDir, 'ISOLA_DATA_DIR') ?? './.isola'),
    ...(guestAuth ? { guestAuth } : {}),
    ...(backends ? { backends: parseBackendList(backends) } : {}),
    ...(databaseUrl ? { databaseUrl } : {}),
    // Half the host's memory by default, like an invoker's user memory on a shared machine.
    memoryBudgetMb: budget ? parseInteger('memory budget (MB)', budget, 64, 1 << 24) : Math.floor(totalmem() / 2 / 2 ** 20),
    // A bare duration means a fixed keep-alive of that length.
    keepAlive: keepAlive ? (/^\d/.test(keepAlive) ? `fixed:${keepAlive}` : keepAlive) : 'fixed:10m',
    queueTimeoutMs: env.ISOLA_QUEUE_TIMEOUT ? parseDuration(env.ISOLA_QUEUE_TIMEOUT) : 60_000,
    maxActionBytes: env.ISOLA_MAX_ACTION_BYTES
      ? parseInteger('ISOLA_MAX_ACTION_BYTES', env.ISOLA_MAX_ACTION_BYTES, 1024, 2 ** 30)
      : 48 * 2 ** 20,
    maxPayloadBytes: env.ISOLA_MAX_PAYLOAD_BYTES
      ? parseInteger('ISOLA_MAX_PAYLOAD_BYTES', env.ISOLA_MAX_PAYLOAD_BYTES, 1024, 2 ** 30)
      : 2 ** 20,
    blockingWaitMs: env.ISOLA_BLOCKING_WAIT ? parseDuration(env.ISOLA_BLOCKING_WAIT) : 60_000,
    retryBaseMs: env.ISOLA_RETRY_BASE ? parseDuration(env.ISOLA_RETRY_BASE) : 1000,
    prewarm: prewarm ? parsePrewarm(prewarm) : { isolate: 2, process: 1, container: 1, gvisor: 1, microvm: 1 },
    ...(containerRuntime ? { containerRuntime: containerRuntime as 'runc' | 'crun' } : {}),
    containerPrewarm,
    ...httpTimeouts(env),
    ...resolveOperatorSettings(flags, env),
  };
}

// ---- operator settings: the admin token, activation retention, bounded metrics ---------------

export interface ServerConfig {
  /** The operator's token for /metrics and the admin API; read from the data dir when absent. */
  adminToken?: string;
  /** Finished activations older than this are pruned; 0 keeps them whatever their age. */
  activationRetentionMs: number;
  /** At most this many finished activations are kept per namespace, the newest; 0 for no limit. */
  activationsPerNamespace: number;
  /** How often the retention runs. */
  retentionIntervalMs: number;
  /** Functions with series of their own in /metrics (the most recently active); the rest are summed. */
  metricsFunctions: number;
}

export interface ServerFlags {
  activationRetention?: string;
  activationsPerNamespace?: string;
}

type OperatorSettings = Pick<
  ServerConfig,
  'adminToken' | 'activationRetentionMs' | 'activationsPerNamespace' | 'retentionIntervalMs' | 'metricsFunctions'
>;

export function resolveOperatorSettings(flags: ServerFlags, env: NodeJS.ProcessEnv): OperatorSettings {
  const adminToken = env.ISOLA_ADMIN_TOKEN || undefined;
  if (adminToken !== undefined && !/^\S{16,}$/.test(adminToken)) {
    throw new ConfigError('ISOLA_ADMIN_TOKEN must be at least 16 characters, without spaces.');
  }
  const retention = flags.activationRetention ?? (env.ISOLA_ACTIVATION_RETENTION || undefined);
  const perNamespace = flags.activationsPerNamespace ?? (env.ISOLA_ACTIVATIONS_PER_NAMESPACE || undefined);
  const off = (text: string | undefined) => text === 'off' || text === '0';
  return {
    ...(adminToken ? { adminToken } : {}),
    activationRetentionMs: retention === undefined ? 7 * 86_400_000 : off(retention) ? 0 : parseDuration(retention),
    activationsPerNamespace:
      perNamespace === undefined
        ? 10_000
        : off(perNamespace)
          ? 0
          : parseInteger('activations kept per namespace', perNamespace, 1, 1_000_000_000),
    retentionIntervalMs: env.ISOLA_RETENTION_INTERVAL ? parseDuration(env.ISOLA_RETENTION_INTERVAL) || 1 : 60_000,
    metricsFunctions: env.ISOLA_METRICS_FUNCTIONS
      ? parseInteger('ISOLA_METRICS_FUNCTIONS', env.ISOLA_METRICS_FUNCTIONS, 1, 100_000)
      : 100,
  };
}

/**
 * ISOLA_HEADERS_TIMEOUT (default 10s), ISOLA_REQUEST_TIMEOUT (60s: a 48 MB action at 1 MB/s) and
 * ISOLA_IDLE_TIMEOUT (72s, longer than the 60 s idle timeout of common load balancers, so that
 * they close first), each from 100ms to 1h; the headers must be allowed no longer than the request.
 */
function httpTimeouts(env: NodeJS.ProcessEnv): Pick<ServerConfig, 'headersTimeoutMs' | 'requestTimeoutMs' | 'idleTimeoutMs'> {
  const timeout = (name: string, fallback: number) => {
    const text = env[name];
    if (!text) return fallback;
    const ms = parseDuration(text);
    if (ms < 100 || ms > 3_600_000) throw new ConfigError(`${name} must be a duration from 100ms to 1h; got "${text}".`);
    return ms;
  };
  const timeouts = {
    headersTimeoutMs: timeout('ISOLA_HEADERS_TIMEOUT', 10_000),
    requestTimeoutMs: timeout('ISOLA_REQUEST_TIMEOUT', 60_000),
    idleTimeoutMs: timeout('ISOLA_IDLE_TIMEOUT', 72_000),
  };
  if (timeouts.headersTimeoutMs > timeouts.requestTimeoutMs) {
    throw new ConfigError('ISOLA_HEADERS_TIMEOUT may not be longer than ISOLA_REQUEST_TIMEOUT.');
  }
  return timeouts;
}
