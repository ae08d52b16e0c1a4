import { setTimeout as sleep } from 'node:timers/promises';
import type { Result } from 'autocannon';
import { type CgroupPeak, type MemoryCgroup, createMemoryCgroup, sampleCgroup } from './cgroup.js';
import { type LoadChild, type Pinning, type ServerChild, startServerChild } from './children.js';
import type { Knobs, PathName } from './knobs.js';
import { startNginxChild } from './nginx.js';
import { type RssParts, cpuTimeMs, machineBusyMs, mainThreadCpuTimeMs, peakRssBytes, rssParts } from './proc-stats.js';
import type { RateResult } from './rate-load.js';

/** The request every path is loaded with: a typical inbound API call, credential included. */
export const REQUEST = {
  method: 'GET',
  path: '/api/items/42?q=1',
  headers: { accept: 'application/json', authorization: 'Bearer bench-token' },
} as const;

// After the load stops, the sidecar may still flush a batch (hash, journal): let it, so that
// work is counted in the server's CPU time.
const SETTLE_MS = 300;
const REQUEST_TIMEOUT_S = 10;
// As often as the kubelet's own housekeeping would never sample: a short peak still shows.
const CGROUP_SAMPLE_MS = 100;

/** One fixed offered rate on one path: measured, or skipped because the path does not sustain it. */
export interface RatePoint {
  offeredPerS: number;
  /** Why it was not measured (above what the path sustained in this round's throughput run). */
  skipped?: string;
  result?: RateResult;
  /** CPU time of the server under test per completed request at this rate. */
  serverCpuUsPerReq?: number | null;
}

/** One measurement of one path. CPU and RSS are null where /proc is missing. */
export interface Measurement {
  path: PathName;
  rps: number;
  requests: number;
  latencyP50Ms: number;
  latencyP99Ms: number;
  latencyMeanMs: number;
  errors: number;
  non2xx: number;
  timeouts: number;
  /** CPU time of the server under test per completed request (for direct: the upstream). */
  serverCpuUsPerReq: number | null;
  /** The part of it spent on the server's main thread (event loop); the rest ran off it. */
  serverMainThreadCpuUsPerReq: number | null;
  /** CPU time of the upstream per completed request, to show it is not the limit. */
  upstreamCpuUsPerReq: number | null;
  /** Bytes the server's JavaScript allocated per request, and its GC pause per request (GcTotals); null for nginx. */
  serverAllocBytesPerReq: number | null;
  serverGcPauseUsPerReq: number | null;
  serverPeakRssBytes: number | null;
  /** The server's resident set at the end, by kind: what the peak is made of. */
  serverRssParts: RssParts | null;
  /**
   * The server's memory as Kubernetes counts it, in its own memory cgroup, largest over the
   * samples taken during the throughput run: working set (usage - inactive file) and anonymous
   * memory. Null when no cgroup could be made (CGROUP=0, not root).
   */
  serverCgroup: CgroupPeak | null;
  /**
   * CPU used during the measurement by processes outside the benchmark, in % of one CPU. Above
   * a few %, something else shared the machine and the row is suspect.
   */
  otherCpuPercent: number | null;
  /** Latency at fixed offered rates, after the throughput run, ascending. */
  rates: RatePoint[];
  autocannon: Result;
}

/** Every CPU counter a measurement diffs, read together (ms; null where /proc is missing). */
interface Counters {
  server: number | null;
  serverMainThread: number | null;
  upstream: number | null;
  /** The whole machine, and the benchmark's own processes within it. */
  machine: number | null;
  ours: number | null;
}

function readCounters(server: ServerChild, upstream: ServerChild, loader: LoadChild): Counters {
  let ours: number | null = 0;
  for (const pid of new Set([server.pid, upstream.pid, loader.pid, process.pid])) {
    const ms = cpuTimeMs(pid);
    ours = ours === null || ms === null ? null : ours + ms;
  }
  return {
    server: cpuTimeMs(server.pid),
    serverMainThread: mainThreadCpuTimeMs(server.pid),
    upstream: cpuTimeMs(upstream.pid),
    machine: machineBusyMs(),
    ours,
  };
}

const delta = (before: number | null, after: number | null): number | null => (before === null || after === null ? null : after - before);

function perRequestUs(ms: number | null, requests: number): number | null {
  return ms === null || requests === 0 ? null : (ms * 1000) / requests;
}

function otherCpuPercent(before: Counters, after: Counters, wallMs: number): number | null {
  const machine = delta(before.machine, after.machine);
  const ours = delta(before.ours, after.ours);
  return machine === null || ours === null ? null : Math.max(0, ((machine - ours) / wallMs) * 100);
}

async function load(loader: LoadChild, server: ServerChild, knobs: Knobs, durationS: number): Promise<Result> {
  return loader.run({
    url: `http://127.0.0.1:${server.port}${REQUEST.path}`,
    method: REQUEST.method,
    headers: { ...REQUEST.headers },
    connections: knobs.connections,
    pipelining: knobs.pipelining,
    duration: durationS,
    timeout: REQUEST_TIMEOUT_S,
  });
}

/** Each rate up to the share of maxRps the path sustains, one after the other on the same servers. */
async function measureRates(loader: LoadChild, server: ServerChild, knobs: Knobs, maxRps: number): Promise<RatePoint[]> {
  const points: RatePoint[] = [];
  for (const offeredPerS of knobs.rates) {
    if (offeredPerS > maxRps * knobs.sustainFraction) {
      points.push({ offeredPerS, skipped: `above ${Math.round(knobs.sustainFraction * 100)}% of the path's ${Math.round(maxRps)} req/s` });
      continue;
    }
    const cpuBefore = cpuTimeMs(server.pid);
    const result = await loader.runRate({
      url: `http://127.0.0.1:${server.port}${REQUEST.path}`,
      method: REQUEST.method,
      headers: { ...REQUEST.headers },
      ratePerS: offeredPerS,
      durationS: knobs.rateDurationS,
      connections: knobs.rateConnections,
      timeoutMs: REQUEST_TIMEOUT_S * 1000,
    });
    await sleep(SETTLE_MS);
    points.push({ offeredPerS, result, serverCpuUsPerReq: perRequestUs(delta(cpuBefore, cpuTimeMs(server.pid)), result.completed) });
  }
  return points;
}

/** The server under test in front of the upstream; direct is the upstream itself. */
function startPath(path: PathName, upstream: ServerChild, knobs: Knobs, pinning: Pinning, nodeFlags: readonly string[], nginxBinary: string | null, cgroup: MemoryCgroup | null): Promise<ServerChild> {
  if (path === 'direct') return Promise.resolve(upstream);
  if (path === 'nginx') {
    if (nginxBinary === null) throw new Error('nginx is not available');
    return startNginxChild(nginxBinary, upstream.port, pinning.servers, cgroup);
  }
  return startServerChild(path, upstream.port, pinning.servers, nodeFlags, knobs.serversFrom, { cgroup });
}

let cgroupsMade = 0;

/** A fresh memory cgroup for one server process, or null (CGROUP=0, or none can be made: the reason is printed once). */
function serverCgroup(knobs: Knobs, role: string): MemoryCgroup | null {
  if (!knobs.cgroup) return null;
  const made = createMemoryCgroup(`auditmesh-bench-${process.pid}-${role}-${++cgroupsMade}`);
  if ('error' in made) {
    if (!cgroupWarned) process.stderr.write(`\nmemory not measured in a cgroup: ${made.error}\n`);
    cgroupWarned = true;
    return null;
  }
  return made;
}
let cgroupWarned = false;

/**
 * Fresh upstream and server processes, a warmup, the throughput run, then the fixed rates
 * (knobs.rates, capped at what the throughput run sustained); everything stopped after.
 */
export async function measurePath(
  path: PathName,
  loader: LoadChild,
  knobs: Knobs,
  pinning: Pinning,
  nodeFlags: readonly string[],
  nginxBinary: string | null = null,
): Promise<Measurement> {
  const upstreamCgroup = serverCgroup(knobs, 'upstream');
  const cgroup = path === 'direct' ? upstreamCgroup : serverCgroup(knobs, path);
  const upstream = await startServerChild('upstream', null, pinning.servers, nodeFlags, knobs.serversFrom, { cgroup: upstreamCgroup });
  try {
    const server = await startPath(path, upstream, knobs, pinning, nodeFlags, nginxBinary, cgroup);
    try {
      await load(loader, server, knobs, knobs.warmupS);
      const before = readCounters(server, upstream, loader);
      const gcBefore = server.gc();
      const startedAt = performance.now();
      const sampling = cgroup === null ? null : sampleCgroup(cgroup, CGROUP_SAMPLE_MS);
      const result = await load(loader, server, knobs, knobs.durationS);
      const memory = sampling?.stop() ?? null;
      await sleep(SETTLE_MS);
      const after = readCounters(server, upstream, loader);
      const gcAfter = server.gc();
      const wallMs = performance.now() - startedAt;
      const requests = result.requests.total;
      const counted = {
        server: delta(before.server, after.server),
        serverMainThread: delta(before.serverMainThread, after.serverMainThread),
        upstream: delta(before.upstream, after.upstream),
      };
      const rates = await measureRates(loader, server, knobs, result.requests.average);
      return {
        path,
        rps: result.requests.average,
        requests,
        latencyP50Ms: result.latency.p50,
        latencyP99Ms: result.latency.p99,
        latencyMeanMs: result.latency.average,
        errors: result.errors,
        non2xx: result.non2xx,
        timeouts: result.timeouts,
        serverCpuUsPerReq: perRequestUs(counted.server, requests),
        serverMainThreadCpuUsPerReq: perRequestUs(counted.serverMainThread, requests),
        upstreamCpuUsPerReq: perRequestUs(counted.upstream, requests),
        // A collection reports what was allocated since the one before: over a run of dozens of
        // collections, the totals between the two readings are the run's to within one of them.
        // With none in the run (a short one on a busy machine) there is nothing to read: not measured.
        serverAllocBytesPerReq: gcBefore === null || gcAfter === null || gcAfter.collections === gcBefore.collections || requests === 0 ? null : (gcAfter.allocatedBytes - gcBefore.allocatedBytes) / requests,
        serverGcPauseUsPerReq: gcBefore === null || gcAfter === null || requests === 0 ? null : ((gcAfter.pauseMs - gcBefore.pauseMs) * 1000) / requests,
        serverPeakRssBytes: peakRssBytes(server.pid),
        serverRssParts: rssParts(server.pid),
        serverCgroup: memory,
        otherCpuPercent: otherCpuPercent(before, after, wallMs),
        rates,
        autocannon: result,
      };
    } finally {
      if (server !== upstream) await server.stop();
    }
  } finally {
    await upstream.stop();
    if (cgroup !== upstreamCgroup) cgroup?.remove();
    upstreamCgroup?.remove();
  }
}
