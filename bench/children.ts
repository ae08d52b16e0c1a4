import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { Options, Result } from 'autocannon';
import { SIDECAR_NODE_FLAGS } from '../control/injector/sidecar-containers.js';
import type { MemoryCgroup } from './cgroup.js';
import { type ServersFrom, benchEntry } from './compiled.js';
import type { LoadReply, LoadRequest } from './load.js';
import type { RateOptions, RateResult } from './rate-load.js';
import type { ServerKind } from './server-kind.js';

const SERVER_START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 10_000;
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const LOAD_SCRIPT = fileURLToPath(new URL('./load.ts', import.meta.url));

/** Which CPUs the load generator and the servers run on; null: not pinned. */
export interface Pinning {
  load: string | null;
  servers: string | null;
  note: string;
}

function parseCpuList(list: string): number[] {
  return list.split(',').flatMap((part) => {
    const [from, to] = part.split('-').map(Number) as [number, number | undefined];
    return Array.from({ length: (to ?? from) - from + 1 }, (_, i) => from + i);
  });
}

/**
 * The load generator gets the first CPU this process may use, every server (upstream and the
 * proxy under test) the others, so autocannon never takes CPU from what it measures.
 */
export function choosePinning(wanted: boolean): Pinning {
  if (!wanted) return { load: null, servers: null, note: 'not pinned (PIN=0)' };
  let cpus: number[];
  try {
    const out = execFileSync('taskset', ['-pc', String(process.pid)], { encoding: 'utf8' });
    cpus = parseCpuList(out.slice(out.lastIndexOf(':') + 1).trim());
  } catch {
    return { load: null, servers: null, note: 'not pinned (no taskset)' };
  }
  if (cpus.length < 2) return { load: null, servers: null, note: `not pinned (only CPU ${cpus.join(',')} available)` };
  const [load, ...servers] = cpus.map(String);
  return { load: load!, servers: servers.join(','), note: `autocannon on CPU ${load}, upstream and server under test on CPU ${servers.join(',')} (taskset)` };
}

/** Spawns a program on the given CPUs (null: anywhere); taskset execs it in place, so the pid is the program's. */
export function spawnPinned(cpus: string | null, program: readonly string[], stdio: 'pipe' | 'ipc', env: NodeJS.ProcessEnv = process.env, cgroup: MemoryCgroup | null = null): ChildProcess {
  const pinned = cpus === null ? program : ['taskset', '-c', cpus, ...program];
  const [command, ...rest] = cgroup === null ? pinned : cgroup.wrap(pinned);
  return spawn(command!, rest, {
    cwd: REPO_ROOT,
    env,
    stdio: stdio === 'pipe' ? ['ignore', 'pipe', 'inherit'] : ['ignore', 'inherit', 'inherit', 'ipc'],
  });
}

function spawnNode(cpus: string | null, args: string[], stdio: 'pipe' | 'ipc'): ChildProcess {
  return spawnPinned(cpus, [process.execPath, '--import=tsx', ...args], stdio);
}

/** SIGTERM, then SIGKILL after a grace period; resolves once the process has exited. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
  await exited;
  clearTimeout(timer);
}

/**
 * What a Node server's V8 reported of its garbage collections since it started (`--trace-gc-nvp`,
 * one line per collection on its stdout, worker threads' isolates included): bytes allocated and
 * pause. Unlike CPU time, neither moves with how busy the shared machine is, so they show a change
 * of a few percent that CPU per request on this VM cannot.
 */
export interface GcTotals {
  allocatedBytes: number;
  pauseMs: number;
  collections: number;
}

/** One server (bench/serve.ts, or nginx) in its own process. */
export interface ServerChild {
  readonly kind: ServerKind | 'nginx' | (string & {});
  readonly pid: number;
  readonly port: number;
  /** Everything else on the line that gave its port (bench/mesh-serve.ts adds its admin port). */
  readonly ready?: Readonly<Record<string, unknown>>;
  /** Its collections so far; null for a server that is not Node (nginx). */
  gc(): GcTotals | null;
  stop(): Promise<void>;
}

const NVP_PAUSE = /(?:^|\s)pause=([\d.]+)/;
const NVP_ALLOCATED = /\sallocated=(\d+)/;

/** Adds one `--trace-gc-nvp` line to the totals; other lines are left alone. */
export function addGcLine(totals: GcTotals, line: string): void {
  const allocated = NVP_ALLOCATED.exec(line);
  const pause = NVP_PAUSE.exec(line);
  if (allocated === null || pause === null) return;
  totals.allocatedBytes += Number(allocated[1]);
  totals.pauseMs += Number(pause[1]);
  totals.collections++;
}

/** Where and how a server child runs, beyond its kind and pinning. */
export interface ServerOptions {
  /** The memory cgroup it runs in from its start. */
  cgroup?: MemoryCgroup | null;
  /** Another compiled tree (tsconfig.bench.json's layout), to compare code: bench/ab.ts. */
  buildDir?: string;
  /** Its environment; default: ours. */
  env?: NodeJS.ProcessEnv;
  /** false: a sidecar without the injected container's V8 flags (sidecarFlags), to compare. */
  deployedFlags?: boolean;
}

/** The node flags a server of this kind runs with: a sidecar gets the injected container's V8 settings, as deployed. */
export function sidecarFlags(kind: string, deployed = true): readonly string[] {
  return deployed && kind.startsWith('sidecar') ? SIDECAR_NODE_FLAGS : [];
}

/** Starts bench/serve <kind> pinned to cpus; from source (tsx) unless told to run the compiled build. */
export function startServerChild(kind: ServerKind, upstreamPort: number | null, cpus: string | null, nodeFlags: readonly string[], from: ServersFrom = 'source', options: ServerOptions = {}): Promise<ServerChild> {
  return startEntryChild('serve', kind, [kind, ...(upstreamPort === null ? [] : [String(upstreamPort)])], cpus, nodeFlags, from, options);
}

/**
 * Starts another bench/ server entry (`entry`, e.g. 'mesh-serve') with `args`, as startServerChild
 * starts bench/serve: pinned, with the sidecar's deployed V8 flags when `kind` names a sidecar,
 * resolved once it prints {"port":N} on stdout.
 */
export function startEntryChild<K extends string>(entry: string, kind: K, args: readonly string[], cpus: string | null, nodeFlags: readonly string[], from: ServersFrom = 'source', options: ServerOptions = {}): Promise<ServerChild & { kind: K }> {
  const [node, ...script] = benchEntry(entry, from, options.buildDir);
  const env = options.env ?? process.env;
  const child = spawnPinned(cpus, [node!, '--trace-gc-nvp', ...sidecarFlags(kind, options.deployedFlags), ...nodeFlags, ...script, ...args], 'pipe', env, options.cgroup ?? null);
  const gc: GcTotals = { allocatedBytes: 0, pauseMs: 0, collections: 0 };
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => {
      void stopChild(child);
      reject(new Error(`${kind}: no port within ${SERVER_START_TIMEOUT_MS} ms`));
    }, SERVER_START_TIMEOUT_MS);
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`${kind}: exited with ${code} before listening (its stderr is above)`));
    };
    child.once('exit', onExit);
    child.once('error', onExit.bind(null, null));
    let listening = false;
    lines.on('line', (line) => {
      // Read to the end: the GC lines go on for the server's life (and keep its stdout drained).
      if (listening || line.includes(' allocated=')) return addGcLine(gc, line);
      let ready: Record<string, unknown>;
      try {
        ready = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      const port = ready?.port;
      if (typeof port !== 'number') return;
      clearTimeout(timer);
      child.off('exit', onExit);
      listening = true;
      resolve({ kind, pid: child.pid!, port, ready, gc: () => ({ ...gc }), stop: () => stopChild(child) });
    });
  });
}

/** The load generator in its own process (bench/load.ts), run over IPC one measurement at a time. */
export interface LoadChild {
  readonly pid: number;
  /** autocannon, closed loop: maximum throughput at a fixed number of connections. */
  run(options: Options): Promise<Result>;
  /** Open loop at a fixed request rate (bench/rate-load.ts). */
  runRate(options: RateOptions): Promise<RateResult>;
  close(): Promise<void>;
}

export function startLoadChild(cpus: string | null): LoadChild {
  const child = spawnNode(cpus, [LOAD_SCRIPT], 'ipc');
  child.on('error', () => {});
  const request = async (message: LoadRequest): Promise<Result | RateResult> => {
    if (!child.connected) throw new Error('load generator is not running');
    // The signal drops whichever listener did not fire, so none pile up across runs.
    const settled = new AbortController();
    const reply = Promise.race([
      once(child, 'message', { signal: settled.signal }) as Promise<[LoadReply]>,
      once(child, 'exit', { signal: settled.signal }).then(([code]) => {
        throw new Error(`load generator exited with ${String(code)}`);
      }),
    ]);
    child.send(message);
    const [answer] = await reply.finally(() => settled.abort());
    if (!answer.ok) throw new Error(`${message.kind}: ${answer.error}`);
    return answer.result;
  };
  return {
    pid: child.pid ?? -1,
    run: (options) => request({ kind: 'autocannon', options }) as Promise<Result>,
    runRate: (options) => request({ kind: 'rate', options }) as Promise<RateResult>,
    async close() {
      if (child.connected) child.disconnect();
      await stopChild(child);
    },
  };
}
