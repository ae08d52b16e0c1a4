import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

function clockTicksPerSecond(): number {
  try {
    const ticks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return ticks > 0 ? ticks : 100;
  } catch {
    return 100;
  }
}

const CLK_TCK = clockTicksPerSecond();

/**
 * CPU time (user + system, all threads: piscina workers and libuv included) a process has used
 * so far, in ms, from /proc/<pid>/stat; null where there is no /proc. Resolution is one clock
 * tick (10 ms), which is why run.ts reads it over a whole measurement.
 */
export function cpuTimeMs(pid: number): number | null {
  return statCpuMs(`/proc/${pid}/stat`);
}

/**
 * CPU time of a process's main thread only (its event loop and what runs on it, main-thread GC
 * included), in ms: the rest of cpuTimeMs is worker threads, V8's GC helpers and libuv's pool.
 */
export function mainThreadCpuTimeMs(pid: number): number | null {
  return statCpuMs(`/proc/${pid}/task/${pid}/stat`);
}

/**
 * CPU time of each thread of a process so far, in ms, keyed "name tid", from /proc/<pid>/task;
 * empty where there is no /proc. Node 20 leaves its threads unnamed, so every one reads `node`
 * (the profiler's read `v8:ProfEvntProc`): the event loop is the tid equal to the pid, and the
 * rest are told apart by their share (bench/README.md reads them for the ingest benchmark).
 */
export function threadCpuMs(pid: number): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const ms = statCpuMs(`/proc/${pid}/task/${tid}/stat`);
    let name = '?';
    try {
      name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
    } catch {
      continue;
    }
    if (ms !== null) out.set(`${name} ${tid}`, ms);
  }
  return out;
}

function statCpuMs(file: string): number | null {
  try {
    const stat = readFileSync(file, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return ((utime + stime) * 1000) / CLK_TCK;
  } catch {
    return null;
  }
}

/** Minor page faults of a process so far (all threads), from /proc/<pid>/stat; null where there is no /proc. */
export function minorFaults(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7]);
  } catch {
    return null;
  }
}

/** Peak resident set size of a process so far (VmHWM), in bytes; null where there is no /proc. */
export function peakRssBytes(pid: number): number | null {
  try {
    const match = /^VmHWM:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

/** Resident memory now, by kind (bytes): anonymous (heaps, stacks), file-backed (code, mapped files such as LMDB's), shared. */
export interface RssParts {
  anon: number;
  file: number;
  shmem: number;
}

/** What the resident set is made of now (RssAnon/RssFile/RssShmem); null where there is no /proc. */
export function rssParts(pid: number): RssParts | null {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+)\\s+kB$`, 'm').exec(status)?.[1] ?? NaN) * 1024;
    const parts = { anon: kb('RssAnon'), file: kb('RssFile'), shmem: kb('RssShmem') };
    return Object.values(parts).every(Number.isFinite) ? parts : null;
  } catch {
    return null;
  }
}

/**
 * CPU time the whole machine has spent busy so far (every CPU, every process, kernel included),
 * in ms, from /proc/stat; null where there is no /proc. Compared with the benchmark's own
 * processes, it shows how much other work shared the machine during a measurement.
 */
export function machineBusyMs(): number | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!;
    // cpu  user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
    const [user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map(Number);
    return (((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) * 1000) / CLK_TCK;
  } catch {
    return null;
  }
}

/** Resident set size of a process now (VmRSS), in bytes; null where there is no /proc. */
export function rssBytes(pid: number): number | null {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match === null ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

/** File descriptors a process holds open (sockets included); null where there is no /proc. */
export function openFds(pid: number): number | null {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return null;
  }
}
