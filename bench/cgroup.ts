// A memory cgroup around one server process, read the way Kubernetes reads a container's: the
// working set is usage minus inactive file pages (cAdvisor's container_memory_working_set_bytes,
// what the kubelet evicts on and what `kubectl top` shows), next to the anonymous memory (heaps,
// stacks) that no reclaim can take back. cgroup v2 (memory.current, memory.max, memory.events) and
// v1 (memory.usage_in_bytes, memory.limit_in_bytes, memory.oom_control) both work.
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** One reading of a cgroup's memory, bytes. */
export interface CgroupMemory {
  usage: number;
  workingSet: number;
  anon: number;
  /** Page cache charged to it (its files, the journal's LMDB map): reclaimed before any OOM kill. */
  file: number;
}

export interface MemoryCgroup {
  readonly path: string;
  readonly version: 1 | 2;
  /** Runs program inside the cgroup from its first instruction: a shell joins it, then execs (same pid). */
  wrap(program: readonly string[]): string[];
  read(): CgroupMemory | null;
  /** Processes of this cgroup the kernel's OOM killer has killed so far. */
  oomKills(): number;
  /** Removes the cgroup once its processes have exited (their page cache moves to the parent). */
  remove(): void;
}

const V1_ROOT = '/sys/fs/cgroup/memory';
const V2_ROOTS = ['/sys/fs/cgroup', '/sys/fs/cgroup/unified'];

function read(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** Where cgroups that this process may create live, or why there is none. */
function parentOf(cgroupFile = '/proc/self/cgroup'): { dir: string; version: 1 | 2 } | { error: string } {
  const lines = (read(cgroupFile) ?? '').split('\n');
  for (const root of V2_ROOTS) {
    if (!(read(join(root, 'cgroup.controllers')) ?? '').split(/\s+/).includes('memory')) continue;
    const own = lines.find((l) => l.startsWith('0::'))?.slice(3) ?? '/';
    if (own === '/') return { dir: root, version: 2 };
    // v2 keeps processes out of inner nodes: a sibling of ours, under a parent that gives memory to its children (ours has memory.current).
    if (existsSync(join(root, own, 'memory.current'))) return { dir: dirname(join(root, own)), version: 2 };
  }
  const v1 = lines.map((l) => l.split(':')).find((f) => f[1]?.split(',').includes('memory'));
  if (v1 !== undefined && existsSync(join(V1_ROOT, 'memory.usage_in_bytes'))) return { dir: join(V1_ROOT, v1[2] ?? '/'), version: 1 };
  return { error: 'no writable memory cgroup (cgroup v2 without the memory controller, and no v1 memory hierarchy)' };
}

/** Fields of memory.stat as numbers. */
export function statFields(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const [key, value] = line.split(' ');
    if (key !== undefined && key !== '' && value !== undefined) out.set(key, Number(value));
  }
  return out;
}

/** usage and memory.stat → the reading, as cAdvisor computes it per version. */
export function memoryOf(version: 1 | 2, usage: number, stat: ReadonlyMap<string, number>): CgroupMemory {
  // v1 reports the subtree in total_* fields; v2's fields are hierarchical already.
  const field = (v1: string, v2: string): number => stat.get(version === 1 ? v1 : v2) ?? 0;
  const inactiveFile = field('total_inactive_file', 'inactive_file');
  return {
    usage,
    workingSet: Math.max(0, usage - inactiveFile),
    anon: field('total_rss', 'anon'),
    file: field('total_cache', 'file'),
  };
}

/** The oom_kill count from memory.events (v2) or memory.oom_control (v1, kernel >= 4.13). */
export function oomKillCount(text: string): number {
  return statFields(text).get('oom_kill') ?? 0;
}

function tryWrite(file: string, value: string): void {
  try {
    writeFileSync(file, value);
  } catch {
    // Optional knobs (swap accounting) may be absent.
  }
}

/**
 * Creates a memory cgroup named `name` (with `limitBytes`, and swap kept out of it, as the kubelet
 * does; without a limit, only measured). Needs root or a delegated cgroup; returns why not otherwise.
 */
export function createMemoryCgroup(name: string, limitBytes?: number): MemoryCgroup | { error: string } {
  const parent = parentOf();
  if ('error' in parent) return parent;
  const { version } = parent;
  const path = join(parent.dir, name);
  try {
    mkdirSync(path);
    if (limitBytes !== undefined) {
      if (version === 2) {
        writeFileSync(join(path, 'memory.max'), String(limitBytes));
        tryWrite(join(path, 'memory.swap.max'), '0');
      } else {
        writeFileSync(join(path, 'memory.limit_in_bytes'), String(limitBytes));
        tryWrite(join(path, 'memory.memsw.limit_in_bytes'), String(limitBytes));
      }
    }
  } catch (err) {
    try {
      rmdirSync(path);
    } catch {
      // never made
    }
    return { error: `cannot create memory cgroup ${path}: ${(err as Error).message}` };
  }
  const procs = join(path, 'cgroup.procs');
  return {
    path,
    version,
    wrap: (program) => ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procs, ...program],
    read() {
      const usage = read(join(path, version === 2 ? 'memory.current' : 'memory.usage_in_bytes'));
      const stat = read(join(path, 'memory.stat'));
      return usage === null || stat === null ? null : memoryOf(version, Number(usage), statFields(stat));
    },
    oomKills: () => oomKillCount(read(join(path, version === 2 ? 'memory.events' : 'memory.oom_control')) ?? ''),
    remove() {
      try {
        rmdirSync(path);
      } catch {
        // Still busy or already gone: a leftover empty cgroup holds nothing.
      }
    },
  };
}

/** The largest working set and anonymous memory seen while sampling every intervalMs. */
export interface CgroupPeak {
  workingSet: number;
  anon: number;
  usage: number;
  samples: number;
}

export function sampleCgroup(cgroup: MemoryCgroup, intervalMs: number): { stop(): CgroupPeak } {
  const peak: CgroupPeak = { workingSet: 0, anon: 0, usage: 0, samples: 0 };
  const take = (): void => {
    const m = cgroup.read();
    if (m === null) return;
    peak.workingSet = Math.max(peak.workingSet, m.workingSet);
    peak.anon = Math.max(peak.anon, m.anon);
    peak.usage = Math.max(peak.usage, m.usage);
    peak.samples++;
  };
  take();
  const timer = setInterval(take, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      return { ...peak };
    },
  };
}
