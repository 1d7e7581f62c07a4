import { readFileSync } from 'node:fs';

/** The parts of the OCI runtime spec (1.0.2) that Isola sets. */
export interface OciSpec {
  ociVersion: '1.0.2';
  process: {
    terminal: false;
    user: { uid: number; gid: number; additionalGids?: number[] };
    args: string[];
    env: string[];
    cwd: string;
    capabilities: { bounding: string[]; effective: string[]; inheritable: string[]; permitted: string[]; ambient: string[] };
    rlimits: { type: string; hard: number; soft: number }[];
    noNewPrivileges: true;
  };
  root: { path: string; readonly: true };
  hostname: string;
  mounts: { destination: string; type: string; source: string; options: string[] }[];
  linux: {
    cgroupsPath: string;
    resources: {
      memory: { limit: number; swap: number; disableOOMKiller: false };
      pids: { limit: number };
      cpu: { shares: number; quota: number; period: number };
    };
    namespaces: { type: 'pid' | 'network' | 'ipc' | 'uts' | 'mount'; path?: string }[];
    maskedPaths: string[];
    readonlyPaths: string[];
    seccomp?: SeccompProfile;
  };
}

export interface SeccompProfile {
  defaultAction: string;
  defaultErrnoRet?: number;
  architectures: string[];
  syscalls: { names: string[]; action: string; errnoRet?: number; args?: unknown[] }[];
}

/** What one sandbox's configuration is made from. */
export interface ContainerSpecInput {
  /** Absolute path of the shared read-only root file system. */
  rootfs: string;
  /** The command: node with its flags, the agent and its channel. */
  args: string[];
  memoryMb: number;
  /** Bytes of memory the runtime itself needs on top of the function's (gVisor's Sentry). */
  overheadMb: number;
  /** Tasks (processes and threads) the cgroup allows. */
  pidsLimit: number;
  /** RLIMIT_NPROC for the function's user; gVisor enforces it inside the sandbox. */
  nprocLimit: number;
  /**
   * The unprivileged host uid (and gid) the function runs as, one per container: RLIMIT_NPROC
   * counts every process of a uid on the host, so a shared uid would let one container's fork
   * bomb stop others from starting.
   */
  uid: number;
  cgroupsPath: string;
  seccomp: boolean;
  /** A network namespace made for the sandbox (network: egress) to join; a new, empty one when absent. */
  networkNamespace?: string;
}

const CPU_PERIOD_US = 100_000;

let defaultProfile: SeccompProfile | undefined;

/** Isola's default seccomp profile (see scripts/generate-seccomp.mjs), kept as data. */
export function defaultSeccompProfile(): SeccompProfile {
  if (!defaultProfile) {
    const { comment: _comment, ...profile } = JSON.parse(
      readFileSync(new URL('./seccomp-default.json', import.meta.url), 'utf8'),
    ) as SeccompProfile & { comment?: string };
    defaultProfile = profile;
  }
  return defaultProfile;
}

/**
 * A locked-down configuration: read-only root, a /tmp tmpfs sized by the memory limit, an
 * unprivileged uid of its own with no capabilities and no new privileges, a seccomp profile, its own pid, mount, IPC,
 * UTS and network namespaces (the network namespace has only a loopback device, down, unless the
 * function has egress: then it joins the namespace made for it), and cgroup
 * limits on memory (no swap), tasks and CPU.
 */
export function containerSpec(input: ContainerSpecInput): OciSpec {
  const memoryBytes = (input.memoryMb + input.overheadMb) * 1024 * 1024;
  const tmpMb = Math.max(8, Math.floor(input.memoryMb / 4));
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: input.uid, gid: input.uid },
      args: input.args,
      env: ['PATH=/usr/bin:/bin', 'HOME=/tmp', 'TMPDIR=/tmp', 'LANG=C.UTF-8'],
      cwd: '/app',
      capabilities: { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] },
      rlimits: [
        { type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 },
        { type: 'RLIMIT_NPROC', hard: input.nprocLimit, soft: input.nprocLimit },
        { type: 'RLIMIT_CORE', hard: 0, soft: 0 },
      ],
      noNewPrivileges: true,
    },
    root: { path: input.rootfs, readonly: true },
    hostname: 'isola',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      {
        destination: '/dev/pts',
        type: 'devpts',
        source: 'devpts',
        options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'],
      },
      {
        destination: '/dev/shm',
        type: 'tmpfs',
        source: 'shm',
        options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
      },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', `size=${tmpMb}m`] },
    ],
    linux: {
      cgroupsPath: input.cgroupsPath,
      resources: {
        memory: { limit: memoryBytes, swap: memoryBytes, disableOOMKiller: false },
        pids: { limit: input.pidsLimit },
        // Relative weight by memory, as Lambda sizes CPU by memory; never more than one core.
        cpu: { shares: Math.max(2, input.memoryMb), quota: CPU_PERIOD_US, period: CPU_PERIOD_US },
      },
      namespaces: [
        { type: 'pid' },
        input.networkNamespace ? { type: 'network', path: input.networkNamespace } : { type: 'network' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
      ],
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/proc/scsi',
        '/sys/firmware',
        '/sys/fs/cgroup',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
      ...(input.seccomp ? { seccomp: defaultSeccompProfile() } : {}),
    },
  };
}
