// gRPC through the sidecar vs direct, in one run: `npm run bench:grpc`.
// Knobs: DURATION (s per path, default 10), CONCURRENCY (unary calls in flight, 32),
// MESSAGE_BYTES (256), STREAM_MESSAGES (bidi messages per run, 100000), WINDOW (bidi messages in flight, 256),
// PIN (1: this client on one CPU, the servers on the others, as bench/run.ts does), JSON_OUT (where the rows go).
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { writeFile, mkdir } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { EchoClient } from './grpc-service.js';
import { choosePinning, sidecarFlags, spawnPinned } from './children.js';
import { benchEntry } from './compiled.js';

const DURATION_S = Number(process.env.DURATION ?? 10);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 32);
const MESSAGE_BYTES = Number(process.env.MESSAGE_BYTES ?? 256);
const STREAM_MESSAGES = Number(process.env.STREAM_MESSAGES ?? 100_000);
const WINDOW = Number(process.env.WINDOW ?? 256);
// SERVERS_FROM=build: the servers run from bench/results/build (bench/run.ts compiles it first).
const SERVE = benchEntry('grpc-serve', process.env.SERVERS_FROM === 'build' ? 'build' : 'source');
const PATHS = ['direct', 'sidecar-off', 'sidecar-async'] as const;
const PINNING = choosePinning(process.env.PIN !== '0');
// The client runs in this process: move it (every thread) to the load generator's CPU.
if (PINNING.load !== null) execFileSync('taskset', ['-a', '-p', '-c', PINNING.load, String(process.pid)], { stdio: 'ignore' });

/** One path's numbers; bench/run.ts reads these from JSON_OUT. */
export interface GrpcRow {
  path: string;
  unaryPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  bidiMsgsPerSec: number;
  cpuMsPerCall: number;
}

async function serve(kind: string, upstreamPort?: number): Promise<{ child: ChildProcess; port: number }> {
  // The sidecar as injected (its container's V8 flags); PROFILE=1: a CPU profile of each server.
  const profile = process.env.PROFILE === '1' ? ['--cpu-prof', `--cpu-prof-dir=${process.env.PROFILE_DIR ?? 'bench/results/profiles'}`] : [];
  const [node, ...entry] = SERVE;
  const child = spawnPinned(PINNING.servers, [node!, ...sidecarFlags(kind), ...profile, ...entry, kind, String(upstreamPort ?? '')], 'pipe');
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve);
    child.once('exit', (code) => reject(new Error(`${kind} exited with ${code}`)));
  });
  return { child, port: (JSON.parse(line) as { port: number }).port };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await exited;
}

function cpuMs(pid: number): number {
  // utime + stime in clock ticks (100 per second on Linux): fields 14 and 15 of /proc/PID/stat.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

function unaryCall(client: grpc.Client, payload: Buffer): Promise<boolean> {
  return new Promise((resolve) => (client as unknown as Record<string, (...a: unknown[]) => void>).Unary!(payload, (err: Error | null) => resolve(err === null)));
}

async function unaryLoad(port: number): Promise<{ perSec: number; p50: number; p99: number; errors: number; calls: number }> {
  const client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  const payload = Buffer.alloc(MESSAGE_BYTES, 1);
  for (let i = 0; i < 200; i++) await unaryCall(client, payload); // warm-up
  const latencies: number[] = [];
  let errors = 0;
  const until = performance.now() + DURATION_S * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (performance.now() < until) {
        const t0 = performance.now();
        if (!(await unaryCall(client, payload))) errors++;
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  client.close();
  latencies.sort((a, b) => a - b);
  return { perSec: latencies.length / elapsed, p50: latencies[Math.floor(latencies.length / 2)]!, p99: latencies[Math.floor(latencies.length * 0.99)]!, errors, calls: latencies.length };
}

async function bidiLoad(port: number): Promise<number> {
  const client = new EchoClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
  const payload = Buffer.alloc(MESSAGE_BYTES, 2);
  const started = performance.now();
  await new Promise<void>((resolve, reject) => {
    const call = (client as unknown as Record<string, () => grpc.ClientDuplexStream<Buffer, Buffer>>).Bidi!();
    let sent = 0;
    let received = 0;
    const pump = (): void => {
      while (sent < STREAM_MESSAGES && sent - received < WINDOW) {
        sent++;
        if (!call.write(payload)) return void call.once('drain', pump);
      }
      if (sent === STREAM_MESSAGES) call.end();
    };
    call.on('data', () => {
      received++;
      if (sent < STREAM_MESSAGES) pump();
    });
    call.on('end', () => (received === STREAM_MESSAGES ? resolve() : reject(new Error(`bidi ended after ${received} messages`))));
    call.on('error', reject);
    pump();
  });
  client.close();
  return STREAM_MESSAGES / ((performance.now() - started) / 1000);
}

async function measure(path: (typeof PATHS)[number]): Promise<GrpcRow> {
  const upstream = await serve('upstream');
  const proxy = path === 'direct' ? null : await serve(path, upstream.port);
  const port = proxy?.port ?? upstream.port;
  const measured = proxy?.child ?? upstream.child;
  try {
    const cpu0 = cpuMs(measured.pid!);
    const unary = await unaryLoad(port);
    const cpu1 = cpuMs(measured.pid!);
    const bidi = await bidiLoad(port);
    return { path, unaryPerSec: unary.perSec, p50Ms: unary.p50, p99Ms: unary.p99, errors: unary.errors, bidiMsgsPerSec: bidi, cpuMsPerCall: (cpu1 - cpu0) / unary.calls };
  } finally {
    if (proxy !== null) await stop(proxy.child);
    await stop(upstream.child);
  }
}

const rows: GrpcRow[] = [];
for (const path of PATHS) rows.push(await measure(path));
const direct = rows[0]!;
const header = ['path', 'unary/s', 'vs direct', 'p50 ms', 'p99 ms', 'errors', 'bidi msg/s', 'vs direct', 'cpu ms/call'];
const lines = rows.map((r) => [
  r.path,
  r.unaryPerSec.toFixed(0),
  (r.unaryPerSec / direct.unaryPerSec).toFixed(2),
  r.p50Ms.toFixed(2),
  r.p99Ms.toFixed(2),
  String(r.errors),
  r.bidiMsgsPerSec.toFixed(0),
  (r.bidiMsgsPerSec / direct.bidiMsgsPerSec).toFixed(2),
  r.cpuMsPerCall.toFixed(3),
]);
const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
const fmt = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
process.stdout.write(`gRPC through the sidecar, ${DURATION_S}s unary at concurrency ${CONCURRENCY}, ${MESSAGE_BYTES}-byte messages; bidi ${STREAM_MESSAGES} messages, window ${WINDOW}; ${PINNING.note}\n`);
process.stdout.write(fmt(header) + '\n' + lines.map(fmt).join('\n') + '\n');
process.stdout.write('(cpu ms/call: the measured server process: the upstream for direct, the sidecar otherwise)\n');
await mkdir(new URL('./results/', import.meta.url), { recursive: true });
const out = process.env.JSON_OUT ?? new URL(`./results/grpc-${new Date().toISOString().replace(/[:.]/g, '-')}.json`, import.meta.url);
await writeFile(out, JSON.stringify({ rows, DURATION_S, CONCURRENCY, MESSAGE_BYTES, STREAM_MESSAGES, WINDOW, pinning: PINNING.note }, null, 2));
