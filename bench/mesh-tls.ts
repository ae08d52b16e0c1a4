// What sidecar-to-sidecar mTLS (proxy/mesh/, docs/MESH-TLS.md) costs over plaintext between the
// same two sidecars, issue 25's targets: at most +15% CPU per request (both sidecars together)
// and +0.1 ms p50, on keep-alive connections.
//
//   app client (autocannon) -> caller sidecar (outbound) -> callee sidecar (inbound) -> app
//
// Two such pairs run side by side, every sidecar its own process (bench/mesh-serve.ts, so /proc
// gives each one's CPU, all threads), pinned to the servers' CPUs like the report's: `plain`,
// whose caller's mesh directory is empty, and `mtls`, whose caller's directory lists the callee
// (TLS 1.3, ALPN auditmesh/1, workload certificates of one mesh CA, the collector's CA code).
// Nothing else differs. Before measuring, one request through each pair is looked up in the
// callee's /tail: `mtls` must be recorded with the caller proven, `plain` without.
//
// The load alternates between the pairs (AB, then BA, ...: both see the same drifting machine, and
// neither always goes first). Each turn: 20 unmeasured requests a connection, then DURATION s at
// full speed (closed loop, CONNECTIONS connections: CPU per request summed over both sidecars,
// req/s), then 20 a connection again, then DURATION s at the fixed offered RATE (open loop,
// bench/rate-load.ts: p50 and p99, µs resolution). The unmeasured requests reopen the caller's
// pooled connections to the callee, which close after 3 s idle (the callee's `Keep-Alive:
// timeout=5` less undici's 2 s margin) and whenever autocannon ends a timed run with requests in
// flight: what is measured is keep-alive traffic, not handshakes. Each pair of turns gives one
// CPU ratio and one p50 difference; the targets are judged on their medians.
//
//   npm run bench:mesh-tls    knobs: PAIRS=8 (1) DURATION=3 (1) s RATE=500 (200) req/s
//                             CONNECTIONS=50 QUICK=1 (the values in brackets) PIN=1
//                             SERVERS_FROM=build|source JSON_OUT=file (everything, as JSON)
//                             PROFILE=1 (each sidecar with --cpu-prof into bench/results/profiles/)
// `new conns` counts connections the callee accepted during the full-speed runs: 0 when every
// measured request went over a kept-alive connection.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { takeSseEvents } from '../control/cli/sse.js';
import { openMeshCa } from '../control/collector/ingest/mesh-ca.js';
import { choosePinning, startEntryChild, startLoadChild, startServerChild, type LoadChild, type ServerChild } from './children.js';
import { compileServers, type ServersFrom } from './compiled.js';
import { REQUEST } from './measure.js';
import { cpuTimeMs } from './proc-stats.js';
import { spread } from './summary.js';

/** Issue 25's targets. */
export const MESH_TLS_TARGETS = { cpuRatio: 1.15, p50AddedMs: 0.1 } as const;

const VARIANTS = ['plain', 'mtls'] as const;
type Variant = (typeof VARIANTS)[number];

function knob(name: string, full: number, quick: number, integer = true): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return process.env.QUICK === '1' ? quick : full;
  const value = Number(raw);
  if (!(value > 0) || (integer && !Number.isInteger(value))) throw new Error(`${name}: expected a positive ${integer ? 'integer' : 'number'}, got ${JSON.stringify(raw)}`);
  return value;
}

const QUICK = process.env.QUICK === '1';
const PAIRS = knob('PAIRS', 8, 1);
const DURATION_S = knob('DURATION', 3, 1, false);
const RATE = knob('RATE', 500, 200);
/** Above this share of a path's full speed, a fixed rate measures queueing rather than the path. */
const BELOW_SATURATION = 0.5;
const CONNECTIONS = knob('CONNECTIONS', 50, 50);
const FROM = (process.env.SERVERS_FROM ?? 'build') as ServersFrom;
if (FROM !== 'build' && FROM !== 'source') throw new Error(`SERVERS_FROM: build or source, not ${String(FROM)}`);
/** The name the app calls; bench/mesh-serve.ts's caller resolves it (--resolve) to its callee sidecar. */
const MESH_BENCH_HOST = 'inventory';
/** Requests per connection sent before each turn's measurements, to reopen the pooled connections. */
const REWARM_PER_CONNECTION = 20;
/** PROFILE=1: every sidecar runs with --cpu-prof; its profile lands in bench/results/profiles/ when it stops. */
const PROFILE_FLAGS = process.env.PROFILE === '1' ? ['--cpu-prof', '--cpu-prof-dir=bench/results/profiles'] : [];
// After the load stops, the sidecars may still flush a batch (hash, journal): counted as theirs.
const SETTLE_MS = 300;
const TIMEOUT_S = 10;

/** One pair of sidecars: the caller's outbound port is where the load goes. */
interface MeshPath {
  variant: Variant;
  caller: ServerChild;
  callee: ServerChild;
}

/** One turn of one path. CPU figures are null without /proc. */
interface Turn {
  rps: number;
  /** Full speed: CPU µs per request of the caller, the callee, and both. */
  callerCpuUs: number | null;
  calleeCpuUs: number | null;
  cpuUs: number | null;
  /** At RATE: latency in ms, and both sidecars' CPU µs per request at that rate. */
  p50Ms: number;
  p99Ms: number;
  completedPerS: number;
  rateCpuUs: number | null;
  errors: number;
  /** Connections the callee accepted during the full-speed run: 0 when all of it was keep-alive. */
  newConnections: number;
}

const cpuOf = (path: MeshPath): [number | null, number | null] => [cpuTimeMs(path.caller.pid), cpuTimeMs(path.callee.pid)];
const perRequestUs = (before: number | null, after: number | null, requests: number): number | null => (before === null || after === null || requests === 0 ? null : ((after - before) * 1000) / requests);

/** The request the app sends: origin-form to the caller's outbound listener, routed by Host. */
function target(path: MeshPath) {
  return { url: `http://127.0.0.1:${path.caller.port}${REQUEST.path}`, method: REQUEST.method, headers: { ...REQUEST.headers, host: MESH_BENCH_HOST } };
}

/** Connections the callee's inbound listener has accepted so far, from its /metrics. */
async function calleeConnections(path: MeshPath): Promise<number> {
  const text = await new Promise<string>((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: adminPort(path), path: '/metrics', agent: false }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
  const line = text.split('\n').find((l) => l.startsWith('auditmesh_tcp_connections_opened_total{') && l.includes('direction="inbound"'));
  if (line === undefined) throw new Error(`${path.variant}: the callee's /metrics has no auditmesh_tcp_connections_opened_total for inbound`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}

function adminPort(path: MeshPath): number {
  const admin = path.callee.ready?.admin;
  if (typeof admin !== 'number') throw new Error('mesh-serve: the callee did not print its admin port');
  return admin;
}

async function turn(load: LoadChild, path: MeshPath): Promise<Turn> {
  const req = target(path);
  // By count, not by time: autocannon ends a timed run by dropping its connections with requests
  // in flight, and the caller then drops its pooled connections to the callee that carried them.
  const rewarm = () => load.run({ ...req, connections: CONNECTIONS, amount: CONNECTIONS * REWARM_PER_CONNECTION, timeout: TIMEOUT_S });
  await rewarm();
  const connectionsBefore = await calleeConnections(path);
  const [callerBefore, calleeBefore] = cpuOf(path);
  const full = await load.run({ ...req, connections: CONNECTIONS, duration: DURATION_S, timeout: TIMEOUT_S });
  await sleep(SETTLE_MS);
  const [callerAfter, calleeAfter] = cpuOf(path);
  const newConnections = (await calleeConnections(path)) - connectionsBefore;
  await rewarm();
  const [rateCallerBefore, rateCalleeBefore] = cpuOf(path);
  const rate = await load.runRate({ ...req, ratePerS: RATE, durationS: DURATION_S, connections: CONNECTIONS, timeoutMs: TIMEOUT_S * 1000 });
  await sleep(SETTLE_MS);
  const [rateCallerAfter, rateCalleeAfter] = cpuOf(path);
  const n = full.requests.total;
  const callerCpuUs = perRequestUs(callerBefore, callerAfter, n);
  const calleeCpuUs = perRequestUs(calleeBefore, calleeAfter, n);
  const rateCaller = perRequestUs(rateCallerBefore, rateCallerAfter, rate.completed);
  const rateCallee = perRequestUs(rateCalleeBefore, rateCalleeAfter, rate.completed);
  return {
    rps: full.requests.average,
    callerCpuUs,
    calleeCpuUs,
    cpuUs: callerCpuUs === null || calleeCpuUs === null ? null : callerCpuUs + calleeCpuUs,
    p50Ms: rate.latencyMs.p50,
    p99Ms: rate.latencyMs.p99,
    completedPerS: rate.completedPerS,
    rateCpuUs: rateCaller === null || rateCallee === null ? null : rateCaller + rateCallee,
    errors: full.errors + full.timeouts + full.non2xx + rate.errors + rate.non2xx,
    newConnections,
  };
}

/**
 * Sends one request through the pair and reads, from the callee's /tail, whether the callee
 * recorded the caller as proven over mTLS: the check that `mtls` really is mTLS and `plain` not.
 */
async function calleeSawVerified(path: MeshPath): Promise<boolean> {
  const admin = adminPort(path);
  const probe = `/mesh-bench-probe/${path.variant}`;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), 15_000);
  try {
    return await new Promise<boolean>((resolve, reject) => {
      controller.signal.addEventListener('abort', () => reject(new Error(`${path.variant}: no record of the probe on the callee's /tail within 15 s`)));
      const tail = http.get({ host: '127.0.0.1', port: admin, path: '/tail', signal: controller.signal }, (res) => {
        res.setEncoding('utf8');
        let buffer = '';
        res.on('data', (chunk: string) => {
          const { data, rest } = takeSseEvents(buffer + chunk);
          buffer = rest;
          for (const d of data) {
            const record = JSON.parse(d) as Record<string, unknown>;
            if (record['url.path'] === probe) resolve(record['audit.peer.verified'] === true);
          }
        });
        res.on('error', () => {});
        const call = http.get({ host: '127.0.0.1', port: path.caller.port, path: probe, headers: { host: MESH_BENCH_HOST }, agent: false }, (reply) => {
          reply.resume();
          if (reply.statusCode !== 200) reject(new Error(`${path.variant}: the probe through the pair answered ${reply.statusCode}`));
        });
        call.on('error', reject);
      });
      tail.on('error', (err) => (controller.signal.aborted ? undefined : reject(err)));
    });
  } finally {
    clearTimeout(timer);
    controller.abort();
  }
}

const median = (xs: number[]): number => spread(xs)!.median;
const range = (xs: number[], digits: number): string => {
  const s = spread(xs)!;
  return `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}..${s.max.toFixed(digits)})`;
};

async function main(): Promise<void> {
  const pin = choosePinning(process.env.PIN !== '0');
  if (FROM === 'build') compileServers();
  const caDir = await mkdtemp(join(tmpdir(), 'auditmesh-mesh-bench-ca-'));
  await openMeshCa(caDir, { create: true });
  const children: ServerChild[] = [];
  const load = startLoadChild(pin.load);
  try {
    const upstream = await startServerChild('upstream', null, pin.servers, [], FROM);
    children.push(upstream);
    const paths: MeshPath[] = [];
    for (const variant of VARIANTS) {
      const callee = await startEntryChild('mesh-serve', 'sidecar-callee', ['callee', caDir, String(upstream.port)], pin.servers, PROFILE_FLAGS, FROM);
      children.push(callee);
      const caller = await startEntryChild('mesh-serve', 'sidecar-caller', ['caller', caDir, String(callee.port), variant], pin.servers, PROFILE_FLAGS, FROM);
      children.push(caller);
      paths.push({ variant, caller, callee });
    }
    for (const path of paths) {
      const verified = await calleeSawVerified(path);
      if (verified !== (path.variant === 'mtls')) throw new Error(`${path.variant}: the callee recorded the caller ${verified ? 'proven over mTLS' : 'unproven'}; the paths are not what they claim`);
    }
    const [l1, l5, l15] = loadavg();
    const loadNote = `load average ${l1!.toFixed(2)}, ${l5!.toFixed(2)}, ${l15!.toFixed(2)} at the start`;
    process.stderr.write(`mesh-tls: ${PAIRS} pairs (AB, BA, ...), each turn ${DURATION_S} s full speed (${CONNECTIONS} connections), then ${DURATION_S} s at ${RATE} req/s, each after ${REWARM_PER_CONNECTION} unmeasured requests a connection; ${pin.note}; ${loadNote}\n`);
    // Warm-up: JIT in every process, both pairs' pooled connections (not in a smoke run).
    if (!QUICK) for (const path of paths) await turn(load, path);
    const pairs: Array<Record<Variant, Turn>> = [];
    for (let i = 0; i < PAIRS; i++) {
      const order = i % 2 === 0 ? paths : [...paths].reverse();
      const got = {} as Record<Variant, Turn>;
      for (const path of order) got[path.variant] = await turn(load, path);
      pairs.push(got);
      const { plain, mtls } = got;
      const cpu = plain.cpuUs === null || mtls.cpuUs === null ? '' : `, CPU ${Math.round(plain.cpuUs)} / ${Math.round(mtls.cpuUs)} µs a request (${(mtls.cpuUs / plain.cpuUs).toFixed(2)}x)`;
      process.stderr.write(`pair ${i + 1}: plain ${Math.round(plain.rps)} req/s, mtls ${Math.round(mtls.rps)} req/s${cpu}, p50 ${plain.p50Ms.toFixed(3)} / ${mtls.p50Ms.toFixed(3)} ms\n`);
    }
    const say = (line: string): boolean => process.stdout.write(`${line}\n`);
    const hasCpu = pairs.every((p) => p.plain.cpuUs !== null && p.mtls.cpuUs !== null);
    say(`sidecar-to-sidecar, HTTP/1.1 keep-alive, ${PAIRS} pairs: median (min..max) over pairs; CPU is both sidecars' (caller + callee) per request`);
    say(`path   | req/s full speed | CPU µs/req full speed (caller + callee) | p50 ms at ${RATE}/s | p99 ms at ${RATE}/s | CPU µs/req at ${RATE}/s | errors | new conns`);
    for (const v of VARIANTS) {
      const turns = pairs.map((p) => p[v]);
      const cpu = hasCpu ? `${range(turns.map((t) => t.cpuUs!), 0)} (${Math.round(median(turns.map((t) => t.callerCpuUs!)))} + ${Math.round(median(turns.map((t) => t.calleeCpuUs!)))})` : '-';
      const rateCpu = hasCpu ? range(turns.map((t) => t.rateCpuUs!), 0) : '-';
      say(`${v.padEnd(6)} | ${range(turns.map((t) => t.rps), 0)} | ${cpu} | ${range(turns.map((t) => t.p50Ms), 3)} | ${range(turns.map((t) => t.p99Ms), 3)} | ${rateCpu} | ${turns.reduce((n, t) => n + t.errors, 0)} | ${turns.reduce((n, t) => n + t.newConnections, 0)}`);
    }
    const cpuRatios = hasCpu ? pairs.map((p) => p.mtls.cpuUs! / p.plain.cpuUs!) : [];
    const p50Added = pairs.map((p) => p.mtls.p50Ms - p.plain.p50Ms);
    const p99Added = pairs.map((p) => p.mtls.p99Ms - p.plain.p99Ms);
    const cpuRatio = hasCpu ? median(cpuRatios) : null;
    const p50 = median(p50Added);
    const signed = (ms: number): string => `${ms < 0 ? '-' : '+'}${Math.abs(ms).toFixed(3)}`;
    if (cpuRatio === null) say('CPU per request mTLS/plain: not measured (no /proc)');
    else say(`CPU per request mTLS/plain: ${cpuRatio.toFixed(2)}x (pair by pair ${Math.min(...cpuRatios).toFixed(2)}..${Math.max(...cpuRatios).toFixed(2)}), target <= ${MESH_TLS_TARGETS.cpuRatio}x: ${cpuRatio <= MESH_TLS_TARGETS.cpuRatio ? 'met' : 'MISSED'}`);
    say(`p50 added: ${signed(p50)} ms (pair by pair ${signed(Math.min(...p50Added))}..${signed(Math.max(...p50Added))}), target <= +${MESH_TLS_TARGETS.p50AddedMs} ms: ${p50 <= MESH_TLS_TARGETS.p50AddedMs ? 'met' : 'MISSED'}`);
    say(`p99 added: ${signed(median(p99Added))} ms (no target)`);
    const slowest = Math.min(...pairs.flatMap((p) => [p.plain.rps, p.mtls.rps]));
    if (RATE > BELOW_SATURATION * slowest) say(`warning: RATE ${RATE} req/s is above ${BELOW_SATURATION} of the slowest full-speed turn (${Math.round(slowest)} req/s): the latencies include queueing; lower RATE`);
    say(`machine: ${loadNote}`);
    if (process.env.JSON_OUT) {
      await writeFile(process.env.JSON_OUT, JSON.stringify({ quick: QUICK, pairs, cpuRatios, p50AddedMs: p50Added, p99AddedMs: p99Added, targets: MESH_TLS_TARGETS, knobs: { PAIRS, DURATION_S, RATE, CONNECTIONS, FROM }, loadavg: loadavg(), pinning: pin.note }, null, 2));
    }
  } finally {
    await load.close();
    for (const child of children.reverse()) await child.stop();
    await rm(caDir, { recursive: true, force: true });
  }
}

await main();
