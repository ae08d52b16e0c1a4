// A/B of one server kind in two variants (node flags, or another compiled tree), side by side
// under the same load in alternating slices (ABBA), each in its own memory cgroup: what a change
// does to CPU per request, bytes allocated per request, and working set, on a machine whose speed
// drifts between minutes. Prints the per-slice numbers and the medians of B/A pair by pair.
//
//   npm run bench:ab       knobs: KIND=sidecar-async PAIRS=6 SLICE=3 CONNECTIONS=50 RATE=0 (0: closed loop)
//                          A_FLAGS / B_FLAGS (node flags, space-separated, after the injected container's V8
//                          flags; DEPLOYED_FLAGS=0: without those), A_ENV / B_ENV ("K=V K=V" over our
//                          environment), A_BUILD / B_BUILD (a tree compiled with tsconfig.bench.json;
//                          default: this one, compiled first)
import { readdirSync } from 'node:fs';
import { type CgroupPeak, createMemoryCgroup, sampleCgroup, type MemoryCgroup } from './cgroup.js';
import { choosePinning, sidecarFlags, startLoadChild, startServerChild, type ServerChild } from './children.js';
import { BENCH_BUILD_DIR, compileServers } from './compiled.js';
import { REQUEST } from './measure.js';
import { cpuTimeMs, minorFaults } from './proc-stats.js';
import type { ServerKind } from './server-kind.js';
import { spread } from './summary.js';
import { formatTable } from './table.js';

const env = process.env;
const KIND = (env.KIND ?? 'sidecar-async') as ServerKind;
const PAIRS = Number(env.PAIRS ?? 6);
const SLICE_S = Number(env.SLICE ?? 3);
const CONNECTIONS = Number(env.CONNECTIONS ?? 50);
const RATE = Number(env.RATE ?? 0);
const flags = (v: string | undefined): string[] => (v ?? '').split(' ').filter((f) => f !== '');
const DEPLOYED = env.DEPLOYED_FLAGS !== '0';
/** "K=V K=V" over our environment. */
const envOf = (v: string | undefined): NodeJS.ProcessEnv => ({
  ...process.env,
  ...Object.fromEntries(flags(v).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)])),
});
const VARIANTS = [
  { name: 'A', flags: flags(env.A_FLAGS), build: env.A_BUILD ?? BENCH_BUILD_DIR, env: envOf(env.A_ENV) },
  { name: 'B', flags: flags(env.B_FLAGS), build: env.B_BUILD ?? BENCH_BUILD_DIR, env: envOf(env.B_ENV) },
];

interface Slice {
  rps: number;
  cpuUs: number;
  allocKiB: number | null;
  /** Minor page faults per request: a cost that, unlike CPU time here, does not move with the neighbours' load. */
  faults: number | null;
  p99Ms: number;
  /** Only at a fixed RATE (autocannon keeps whole milliseconds and no p99.9). */
  p999Ms: number | null;
  memory: CgroupPeak | null;
}

interface Running {
  server: ServerChild;
  cgroup: MemoryCgroup | null;
}

async function slice({ server, cgroup }: Running, load: ReturnType<typeof startLoadChild>): Promise<Slice> {
  const cpu = cpuTimeMs(server.pid)!;
  const faults = minorFaults(server.pid);
  const gc = server.gc();
  const sampling = cgroup === null ? null : sampleCgroup(cgroup, 100);
  const url = `http://127.0.0.1:${server.port}${REQUEST.path}`;
  let requests: number;
  let rps: number;
  let p99Ms: number;
  let p999Ms: number | null = null;
  if (RATE > 0) {
    const r = await load.runRate({ url, method: REQUEST.method, headers: { ...REQUEST.headers }, ratePerS: RATE, durationS: SLICE_S, connections: CONNECTIONS, timeoutMs: 10_000 });
    [requests, rps, p99Ms, p999Ms] = [r.completed, r.completedPerS, r.latencyMs.p99, r.latencyMs.p99_9];
  } else {
    const r = await load.run({ url, method: REQUEST.method, headers: { ...REQUEST.headers }, connections: CONNECTIONS, duration: SLICE_S, timeout: 10 });
    [requests, rps, p99Ms] = [r.requests.total, r.requests.average, r.latency.p99];
  }
  const memory = sampling?.stop() ?? null;
  const gcAfter = server.gc();
  const allocKiB = gc === null || gcAfter === null || gcAfter.collections === gc.collections ? null : (gcAfter.allocatedBytes - gc.allocatedBytes) / 1024 / requests;
  const faultsAfter = minorFaults(server.pid);
  return { rps, cpuUs: ((cpuTimeMs(server.pid)! - cpu) * 1000) / requests, allocKiB, faults: faults === null || faultsAfter === null ? null : (faultsAfter - faults) / requests, p99Ms, p999Ms, memory };
}

const MIB = 2 ** 20;
const med = (xs: (number | null)[]): string => {
  const s = spread(xs);
  return s === null ? '-' : `${s.median.toFixed(2)} (${s.min.toFixed(2)}..${s.max.toFixed(2)})`;
};

async function main(): Promise<void> {
  if (env.A_BUILD === undefined || env.B_BUILD === undefined) compileServers();
  const pin = choosePinning(env.PIN !== '0');
  const upstream = await startServerChild('upstream', null, pin.servers, [], 'build');
  const load = startLoadChild(pin.load);
  const running: Running[] = [];
  try {
    for (const v of VARIANTS) {
      const made = createMemoryCgroup(`auditmesh-ab-${process.pid}-${v.name}`);
      const cgroup = 'error' in made ? null : made;
      running.push({ server: await startServerChild(KIND, upstream.port, pin.servers, v.flags, 'build', { cgroup, buildDir: v.build, env: v.env, deployedFlags: DEPLOYED }), cgroup });
    }
    for (const r of running) await slice(r, load);
    const describe = (k: number): string => `${VARIANTS[k]!.flags.join(' ')} ${env[k === 0 ? 'A_ENV' : 'B_ENV'] ?? ''} ${VARIANTS[k]!.build}`;
    process.stderr.write(`${KIND}: A ${describe(0)}; B ${describe(1)}; both with ${sidecarFlags(KIND, DEPLOYED).join(' ') || 'no deployed flags'}; ${PAIRS} pairs of ${SLICE_S} s ${RATE > 0 ? `at ${RATE}/s` : 'closed loop'}\n`);
    const pairs: Slice[][] = [];
    for (let i = 0; i < PAIRS; i++) {
      const got: Slice[] = [];
      for (const k of i % 2 === 0 ? [0, 1] : [1, 0]) got[k] = await slice(running[k]!, load);
      pairs.push(got);
      process.stderr.write(`pair ${i + 1}: ${got.map((s, k) => `${VARIANTS[k]!.name} ${s.rps.toFixed(0)}/s ${s.cpuUs.toFixed(0)} µs ${s.allocKiB?.toFixed(1)} KiB ${s.faults?.toFixed(2)} flt ws ${((s.memory?.workingSet ?? NaN) / MIB).toFixed(1)} anon ${((s.memory?.anon ?? NaN) / MIB).toFixed(1)} p99 ${s.p99Ms.toFixed(2)}`).join(' | ')}\n`);
    }
    const col = (k: number, pick: (s: Slice) => number | null): string => med(pairs.map((p) => pick(p[k]!)));
    const ratio = (pick: (s: Slice) => number | null): string => med(pairs.map(([a, b]) => (pick(a!) === null || pick(b!) === null ? null : pick(b!)! / pick(a!)!)));
    const rows: [string, (s: Slice) => number | null][] = [
      ['req/s', (s) => s.rps],
      ['CPU µs/req', (s) => s.cpuUs],
      ['alloc KiB/req', (s) => s.allocKiB],
      ['minor faults/req', (s) => s.faults],
      ['p99 ms', (s) => s.p99Ms],
      ['p99.9 ms', (s) => s.p999Ms],
      ['working set MiB (max in slice)', (s) => (s.memory === null ? null : s.memory.workingSet / MIB)],
      ['anon MiB (max in slice)', (s) => (s.memory === null ? null : s.memory.anon / MIB)],
    ];
    for (const [k, r] of running.entries()) console.log(`${VARIANTS[k]!.name}: ${readdirSync(`/proc/${r.server.pid}/task`).length} threads`);
    console.log(formatTable(['measure', 'A median (min..max)', 'B median (min..max)', 'B / A pair by pair'], rows.map(([name, pick]) => [name, col(0, pick), col(1, pick), ratio(pick)])));
  } finally {
    await load.close();
    for (const r of running) {
      await r.server.stop();
      r.cgroup?.remove();
    }
    await upstream.stop();
  }
}

await main();
