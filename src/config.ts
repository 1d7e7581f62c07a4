import { totalmem } from 'node:os';
import { resolve } from 'node:path';
import { DurationSyntaxError, parseDuration as parseDurationText } from './core/duration.js';
import {
  defaultKindOf,
  ISOLATIONS,
  ISOLATIONS_FOR_KIND,
  type Isolation,
  isIsolation,
  type Kind,
  resolveKind,
} from './core/kinds.js';
import { parseCidrList } from './core/network-policy.js';
import { kernelCacheDir } from './images/specialised-kernel.js';
import type { BackendSettings, MicrovmSettings } from './sandbox/registry.js';

/**
 * The server's settings, read once here from flags and environment and handed down: no module
 * below this one reads the environment.
 */

/**
 * What a server does: `all` is the whole platform in one process (the default, and on its own
 * with SQLite the embedded server); `controller` serves the doors and places calls on the
 * cluster's invokers; `invoker` runs them on this host's backends.
 */
export const ROLES = ['all', 'controller', 'invoker'] as const;
export type Role = (typeof ROLES)[number];

export interface ServerConfig {
  role: Role;
  /** The NATS server (`nats://host:port`) a cluster's servers share; unset, the server is on its own. */
  natsUrl?: string;
  /**
   * The URL functions see as `__OW_API_HOST` (ISOLA_API_HOST): by default the server's own; a
   * cluster's invokers set it to the controllers' (their load balancer's), as they serve no API.
   */
  apiHost?: string;
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
  /**
   * A blocking call is answered before its record commits; the record commits with others at most
   * this long after (ISOLA_RECORD_WINDOW; 0 commits before answering). A kill -9 loses at most
   * the records of blocking calls answered within this window; never an accepted asynchronous
   * invocation, which is stored before its 202. A cluster's servers always commit first.
   */
  recordWindowMs: number;
  /** First delay before retrying a failed asynchronous invocation; it doubles each attempt. */
  retryBaseMs: number;
  /** Blank sandboxes kept ready per backend and kind, for the default memory size. */
  prewarm: PrewarmTarget[];
  /** What the backends are made with: container runtime, wasm workers, microVM settings. */
  backendSettings: BackendSettings;
  /** The HTTP server's log level (ISOLA_LOG_LEVEL). */
  logLevel: LogLevel;
  // HTTP connection bounds, so that slow or silent clients cannot hold connections open.
  /** Time a client has to send a request's headers (ISOLA_HEADERS_TIMEOUT). */
  headersTimeoutMs: number;
  /** Time a client has to send a whole request, body included (ISOLA_REQUEST_TIMEOUT). */
  requestTimeoutMs: number;
  /** How long a keep-alive connection may sit idle between requests (ISOLA_IDLE_TIMEOUT). */
  idleTimeoutMs: number;
}

export interface ServerFlags {
  role?: string;
  nats?: string;
  port?: string;
  host?: string;
  dataDir?: string;
  backends?: string;
  database?: string;
  memoryBudget?: string;
  keepAlive?: string;
  prewarm?: string;
  containerRuntime?: string;
  egressAllow?: string;
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** A setting that cannot be used; `setting` names it (the flag or variable), the message says why. */
export class ConfigError extends Error {
  constructor(
    message: string,
    readonly setting?: string,
  ) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Durations as `500ms`, `30s`, `10m`, `4h`, `7d` or a bare number of ms; a ConfigError otherwise. */
export function parseDuration(text: string, setting?: string): number {
  try {
    return parseDurationText(text);
  } catch (error) {
    if (error instanceof DurationSyntaxError) throw new ConfigError(error.message, setting);
    throw error;
  }
}

/** The default record window: short beside any client's patience, long enough to gather a busy second's records in few commits. */
export const DEFAULT_RECORD_WINDOW_MS = 10;
/** The window is what a kill -9 may lose: it stays short. */
export const MAX_RECORD_WINDOW_MS = 1000;

function parseRecordWindow(text: string): number {
  const ms = parseDuration(text, 'ISOLA_RECORD_WINDOW');
  if (ms > MAX_RECORD_WINDOW_MS) {
    throw new ConfigError(
      `ISOLA_RECORD_WINDOW must be at most ${MAX_RECORD_WINDOW_MS} ms; got "${text}".`,
      'ISOLA_RECORD_WINDOW',
    );
  }
  return ms;
}

function parseInteger(name: string, text: string, min: number, max: number): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}; got "${text}".`, name);
  }
  return value;
}

/** One of a few words, or undefined when unset. */
function parseChoice<const T extends string>(name: string, text: string | undefined, choices: readonly T[]): T | undefined {
  if (!text) return undefined;
  if (!(choices as readonly string[]).includes(text)) {
    throw new ConfigError(`${name} must be ${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}; got "${text}".`, name);
  }
  return text as T;
}

export function parseBackendList(text: string): Isolation[] {
  const names = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  for (const name of names) {
    if (!isIsolation(name)) {
      throw new ConfigError(`Unknown backend "${name}"; known backends: ${ISOLATIONS.join(', ')}.`, 'backends');
    }
  }
  return names as Isolation[];
}

/** How many blank sandboxes of a kind a backend keeps ready. */
export interface PrewarmTarget {
  isolation: Isolation;
  kind: Kind;
  count: number;
}

/**
 * `isolate:2,process:1,process:python:1,container:java:17:1`: how many blank sandboxes each
 * backend keeps ready, per kind (`<backend>:<kind>:<count>`, any name of the kind; without one,
 * JavaScript's, or wasm's under wasm). A later entry for the same backend and kind wins.
 */
export function parsePrewarm(text: string): PrewarmTarget[] {
  const result = new Map<string, PrewarmTarget>();
  for (const part of text.split(',').filter((p) => p.trim())) {
    const fields = part.split(':').map((s) => s.trim());
    const name = fields[0] ?? '';
    if (!isIsolation(name)) throw new ConfigError(`Unknown backend "${name}" in the prewarm setting.`, 'prewarm');
    const count = parseInteger(`prewarm count for ${name}`, fields.at(-1) ?? '', 0, 64);
    const kindName = fields.slice(1, -1).join(':');
    let kind = defaultKindOf(name);
    if (kindName) {
      try {
        kind = resolveKind(kindName);
      } catch (error) {
        throw new ConfigError(`${(error as Error).message} (in the prewarm setting "${part.trim()}")`, 'prewarm');
      }
      if (!ISOLATIONS_FOR_KIND[kind].includes(name)) {
        throw new ConfigError(
          `Kind ${kind} cannot run under "${name}" (in the prewarm setting); it runs under: ${ISOLATIONS_FOR_KIND[kind].join(', ')}.`,
          'prewarm',
        );
      }
    }
    result.set(`${name} ${kind}`, { isolation: name, kind, count });
  }
  return [...result.values()];
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
  if (guestAuth && !/^[^:\s]+:[^:\s]+$/.test(guestAuth)) {
    throw new ConfigError('ISOLA_GUEST_AUTH must look like uuid:key.', 'ISOLA_GUEST_AUTH');
  }
  // ISOLA_DATABASE_URL, the earlier name, still works.
  const databaseUrl = pick(flags.database, 'ISOLA_DATABASE') ?? (env.ISOLA_DATABASE_URL || undefined);
  if (databaseUrl && !/^(postgres(ql)?:\/\/|sqlite:)/.test(databaseUrl)) {
    throw new ConfigError(
      'The database must be a postgres://user@host:port/database URL (or sqlite:<file>); unset, SQLite in the data dir.',
      'ISOLA_DATABASE',
    );
  }
  const logLevel = parseChoice('ISOLA_LOG_LEVEL', env.ISOLA_LOG_LEVEL, LOG_LEVELS) ?? 'warn';
  const role = parseChoice('role (--role, ISOLA_ROLE)', pick(flags.role, 'ISOLA_ROLE'), ROLES) ?? 'all';
  const natsUrl = pick(flags.nats, 'ISOLA_NATS_URL');
  if (natsUrl !== undefined && !/^(nats|tls):\/\/[^\s]+$/.test(natsUrl)) {
    throw new ConfigError('The NATS server must be a nats://host:port URL.', 'ISOLA_NATS_URL');
  }
  if (role !== 'all' && (natsUrl === undefined || !databaseUrl?.startsWith('postgres'))) {
    throw new ConfigError(
      `A ${role} is part of a cluster: it needs the cluster's NATS server (--nats, ISOLA_NATS_URL) and PostgreSQL database (--database, ISOLA_DATABASE_URL).`,
      'ISOLA_ROLE',
    );
  }
  if (natsUrl !== undefined && !databaseUrl?.startsWith('postgres')) {
    throw new ConfigError(
      "A server that joins a cluster (--nats) keeps its records in the cluster's PostgreSQL database: give --database postgres://...",
      'ISOLA_NATS_URL',
    );
  }
  const apiHost = env.ISOLA_API_HOST || undefined;
  if (apiHost !== undefined && !/^https?:\/\/[^\s/]+(\/[^\s]*)?$/.test(apiHost)) {
    throw new ConfigError(
      'The API host must be an http:// or https:// URL, e.g. http://isola.example.com:3233.',
      'ISOLA_API_HOST',
    );
  }
  return {
    role,
    ...(natsUrl ? { natsUrl } : {}),
    ...(apiHost ? { apiHost } : {}),
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
    queueTimeoutMs: env.ISOLA_QUEUE_TIMEOUT ? parseDuration(env.ISOLA_QUEUE_TIMEOUT, 'ISOLA_QUEUE_TIMEOUT') : 60_000,
    maxActionBytes: env.ISOLA_MAX_ACTION_BYTES
      ? parseInteger('ISOLA_MAX_ACTION_BYTES', env.ISOLA_MAX_ACTION_BYTES, 1024, 2 ** 30)
      : 48 * 2 ** 20,
    maxPayloadBytes: env.ISOLA_MAX_PAYLOAD_BYTES
      ? parseInteger('ISOLA_MAX_PAYLOAD_BYTES', env.ISOLA_MAX_PAYLOAD_BYTES, 1024, 2 ** 30)
      : 2 ** 20,
    blockingWaitMs: env.ISOLA_BLOCKING_WAIT ? parseDuration(env.ISOLA_BLOCKING_WAIT, 'ISOLA_BLOCKING_WAIT') : 60_000,
    recordWindowMs: env.ISOLA_RECORD_WINDOW ? parseRecordWindow(env.ISOLA_RECORD_WINDOW) : DEFAULT_RECORD_WINDOW_MS,
    retryBaseMs: env.ISOLA_RETRY_BASE ? parseDuration(env.ISOLA_RETRY_BASE, 'ISOLA_RETRY_BASE') : 1000,
    prewarm: parsePrewarm(prewarm ?? 'isolate:2,process:1,container:1,gvisor:1,microvm:1'),
    backendSettings: resolveBackendSettings(flags, env),
    logLevel,
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
    throw new ConfigError('ISOLA_ADMIN_TOKEN must be at least 16 characters, without spaces.', 'ISOLA_ADMIN_TOKEN');
  }
  const retention = flags.activationRetention ?? (env.ISOLA_ACTIVATION_RETENTION || undefined);
  const perNamespace = flags.activationsPerNamespace ?? (env.ISOLA_ACTIVATIONS_PER_NAMESPACE || undefined);
  const off = (text: string | undefined) => text === 'off' || text === '0';
  return {
    ...(adminToken ? { adminToken } : {}),
    activationRetentionMs:
      retention === undefined ? 7 * 86_400_000 : off(retention) ? 0 : parseDuration(retention, 'activation retention'),
    activationsPerNamespace:
      perNamespace === undefined
        ? 10_000
        : off(perNamespace)
          ? 0
          : parseInteger('activations kept per namespace', perNamespace, 1, 1_000_000_000),
    retentionIntervalMs: env.ISOLA_RETENTION_INTERVAL
      ? parseDuration(env.ISOLA_RETENTION_INTERVAL, 'ISOLA_RETENTION_INTERVAL') || 1
      : 60_000,
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
    const ms = parseDuration(text, name);
    if (ms < 100 || ms > 3_600_000) throw new ConfigError(`${name} must be a duration from 100ms to 1h; got "${text}".`, name);
    return ms;
  };
  const timeouts = {
    headersTimeoutMs: timeout('ISOLA_HEADERS_TIMEOUT', 10_000),
    requestTimeoutMs: timeout('ISOLA_REQUEST_TIMEOUT', 60_000),
    idleTimeoutMs: timeout('ISOLA_IDLE_TIMEOUT', 72_000),
  };
  if (timeouts.headersTimeoutMs > timeouts.requestTimeoutMs) {
    throw new ConfigError('ISOLA_HEADERS_TIMEOUT may not be longer than ISOLA_REQUEST_TIMEOUT.', 'ISOLA_HEADERS_TIMEOUT');
  }
  return timeouts;
}

// ---- backends: what each is made with ------------------------------------------------------

/**
 * ISOLA_CONTAINER_RUNTIME (or --container-runtime), ISOLA_CONTAINER_PREWARM, ISOLA_WASM_WORKERS, ISOLA_WASM_FAST_PATH,
 * ISOLA_EGRESS_ALLOW (or --egress-allow) and the microVM's ISOLA_MICROVM_ACCEL, ISOLA_MICROVM_PREWARM, ISOLA_MICROVM_START,
 * ISOLA_MICROVM_SETTLE_MS and ISOLA_MICROVM_GUEST.
 */
export function resolveBackendSettings(flags: ServerFlags, env: NodeJS.ProcessEnv = process.env): BackendSettings {
  const containerRuntime = flags.containerRuntime ?? (env.ISOLA_CONTAINER_RUNTIME || undefined);
  if (containerRuntime && containerRuntime !== 'runc' && containerRuntime !== 'crun') {
    throw new ConfigError(`The container runtime must be runc or crun; got "${containerRuntime}".`, 'container runtime');
  }
  const containerPrewarm = env.ISOLA_CONTAINER_PREWARM || 'started';
  if (containerPrewarm !== 'started' && containerPrewarm !== 'created') {
    throw new ConfigError(
      `ISOLA_CONTAINER_PREWARM must be started or created; got "${containerPrewarm}".`,
      'ISOLA_CONTAINER_PREWARM',
    );
  }
  const wasmWorkers = env.ISOLA_WASM_WORKERS ? parseInteger('ISOLA_WASM_WORKERS', env.ISOLA_WASM_WORKERS, 1, 256) : undefined;
  // On unless turned off: a short module's metered run on the server's thread costs less than the hop.
  const wasmFastPath = parseChoice('ISOLA_WASM_FAST_PATH', env.ISOLA_WASM_FAST_PATH || undefined, ['on', 'off'] as const);
  const egressAllow = resolveEgressAllow(flags.egressAllow ?? (env.ISOLA_EGRESS_ALLOW || undefined));
  return {
    ...(egressAllow.length > 0 ? { egressAllow } : {}),
    ...(containerRuntime ? { containerRuntime: containerRuntime as 'runc' | 'crun' } : {}),
    containerPrewarm,
    ...(wasmWorkers !== undefined ? { wasmWorkers } : {}),
    ...(wasmFastPath === 'off' ? { wasmFastPath: false } : {}),
    microvm: resolveMicrovmSettings(env),
  };
}

/**
 * --egress-allow / ISOLA_EGRESS_ALLOW: IPv4 ranges (`10.1.0.0/16,192.168.5.10`) that functions with
 * `network: egress` may reach although they are private or link-local. Sandboxes have no IPv6
 * route, so an IPv6 range could never be reached and is refused rather than silently ignored.
 */
function resolveEgressAllow(text: string | undefined) {
  if (!text) return [];
  try {
    const ranges = parseCidrList(text);
    const v6 = ranges.find((range) => range.family === 6);
    if (v6) throw new Error(`"${v6.address}/${v6.prefix}" is IPv6; sandboxes have IPv4 egress only`);
    return ranges;
  } catch (error) {
    throw new ConfigError(`--egress-allow (ISOLA_EGRESS_ALLOW): ${(error as Error).message}.`, 'egress allow');
  }
}

function resolveMicrovmSettings(env: NodeJS.ProcessEnv): MicrovmSettings {
  const accelerator = parseChoice('ISOLA_MICROVM_ACCEL', env.ISOLA_MICROVM_ACCEL, ['kvm', 'tcg'] as const);
  const prewarmMode = parseChoice('ISOLA_MICROVM_PREWARM', env.ISOLA_MICROVM_PREWARM, ['restored', 'waiting'] as const);
  const start = parseChoice('ISOLA_MICROVM_START', env.ISOLA_MICROVM_START, ['snapshot', 'boot'] as const);
  const settle = env.ISOLA_MICROVM_SETTLE_MS;
  const guest = parseChoice('ISOLA_MICROVM_GUEST', env.ISOLA_MICROVM_GUEST, ['debian', 'specialised'] as const);
  return {
    ...(guest ? { guest } : {}),
    ...(guest === 'specialised' ? { kernelCacheDir: resolveKernelCacheDir(env) } : {}),
    ...(accelerator ? { accelerator } : {}),
    ...(prewarmMode ? { prewarmMode } : {}),
    ...(start ? { start } : {}),
    ...(settle ? { settleMs: parseInteger('ISOLA_MICROVM_SETTLE_MS', settle, 0, 600_000) } : {}),
  };
}

/** Where the specialised guest kernel is built and kept: `$XDG_CACHE_HOME/isola/kernels`, else `~/.cache/isola/kernels`. */
export function resolveKernelCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return kernelCacheDir(env);
}

/** The operator token from the environment, for commands that talk to a running server's admin API. */
export function adminTokenFromEnvironment(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.ISOLA_ADMIN_TOKEN || undefined;
}
