import { setTimeout as sleep } from 'node:timers/promises';
import type { Result } from 'autocannon';
import { type LoadChild, type Pinning, type ServerChild, startServerChild } from './children.js';
import type { Knobs, PathName } from './knobs.js';
import { cpuTimeMs, machineBusyMs, mainThreadCpuTimeMs, peakRssBytes } from './proc-stats.js';

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
  serverPeakRssBytes: number | null;
  /**
   * CPU used during the measurement by processes outside the benchmark, in % of one CPU. Above
   * a few %, something else shared the machine and the row is suspect.
   */
  otherCpuPercent: number | null;
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

/** Fresh upstream and server processes, a warmup, then the measured run; everything stopped after. */
export async function measurePath(path: PathName, loader: LoadChild, knobs: Knobs, pinning: Pinning, nodeFlags: readonly string[]): Promise<Measurement> {
  const upstream = await startServerChild('upstream', null, pinning.servers, nodeFlags);
  try {
    const server = path === 'direct' ? upstream : await startServerChild(path, upstream.port, pinning.servers, nodeFlags);
    try {
      await load(loader, server, knobs, knobs.warmupS);
      const before = readCounters(server, upstream, loader);
      const startedAt = performance.now();
      const result = await load(loader, server, knobs, knobs.durationS);
      await sleep(SETTLE_MS);
      const after = readCounters(server, upstream, loader);
      const wallMs = performance.now() - startedAt;
      const requests = result.requests.total;
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
        serverCpuUsPerReq: perRequestUs(delta(before.server, after.server), requests),
        serverMainThreadCpuUsPerReq: perRequestUs(delta(before.serverMainThread, after.serverMainThread), requests),
        upstreamCpuUsPerReq: perRequestUs(delta(before.upstream, after.upstream), requests),
        serverPeakRssBytes: peakRssBytes(server.pid),
        otherCpuPercent: otherCpuPercent(before, after, wallMs),
        autocannon: result,
      };
    } finally {
      if (server !== upstream) await server.stop();
    }
  } finally {
    await upstream.stop();
  }
}
