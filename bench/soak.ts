// `npm run soak` (DURATION=600 seconds by default, CONNECTIONS=50, CONCURRENCY=16, MEMORY_LIMIT=128Mi):
// one sidecar in its own process, run as the image runs it (compiled, with the injected container's
// V8 flags), inside a memory cgroup limited as the pod's container would be, under the report's
// full load (autocannon, CONNECTIONS connections, closed loop, from the load child) and at the same
// time mixed HTTP/1.1 and gRPC traffic with random faults (upstream resets, cuts and stalls, client
// aborts, malformed requests, slowloris, gRPC cancels, rapid-reset bursts). Prints RSS, the cgroup's working
// set and anonymous memory, open file descriptors, active handles and heap before and after, a line
// a minute in between, and whether the kernel's OOM killer struck (exit code 1 if it did): a leak
// shows as growth that does not come back once the load stops. Not a test: it takes minutes.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { EchoClient, startEchoServer } from './grpc-service.js';
import { type MemoryCgroup, createMemoryCgroup } from './cgroup.js';
import { sidecarFlags, startLoadChild } from './children.js';
import { benchEntry, compileServers } from './compiled.js';
import { openFds, rssBytes } from './proc-stats.js';
import { formatTable } from './table.js';

const DURATION_S = Number(process.env.DURATION ?? 600);
// The full load: as many connections as the report's (bench/README.md, CONNECTIONS).
const CONNECTIONS = Number(process.env.CONNECTIONS ?? 50);
const CONCURRENCY = Number(process.env.CONCURRENCY ?? 16);
const MEMORY_LIMIT = process.env.MEMORY_LIMIT ?? '128Mi';
const SETTLE_MS = 15_000;
const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
const MIB = 2 ** 20;

/** A Kubernetes memory quantity in Mi or Gi (or plain bytes), in bytes. */
function quantityBytes(q: string): number {
  const m = /^(\d+)(Mi|Gi)?$/.exec(q);
  if (m === null) throw new Error(`MEMORY_LIMIT: expected e.g. 128Mi, got ${JSON.stringify(q)}`);
  return Number(m[1]) * (m[2] === 'Gi' ? 2 ** 30 : m[2] === 'Mi' ? MIB : 1);
}

/** The app: answers `/`, and misbehaves on /reset, /cut and /stall as its name says. */
function startFaultyApp(): Promise<{ port: number; server: net.Server }> {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.on('data', (data) => {
      const line = data.toString('latin1');
      if (line.includes(' /reset ')) return void socket.resetAndDestroy();
      if (line.includes(' /cut ')) return void (socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf'), socket.destroy());
      if (line.includes(' /stall ')) return void socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf');
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok');
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ port: (server.address() as net.AddressInfo).port, server })));
}

interface Sidecar {
  pid: number;
  ports: { inbound: number; outbound: number; admin: number };
  /** How it ended, once it has: a SIGKILL from the OOM killer shows here. */
  exit: { code: number | null; signal: string | null } | null;
  stop(): Promise<void>;
}

async function startSidecar(appPort: number, grpcPort: number, dir: string, cgroup: MemoryCgroup): Promise<Sidecar> {
  const args = ['sidecar', '--app-port', String(appPort), '--inbound-port', '0', '--outbound-port', '0', '--admin-port', '0', '--journal', join(dir, 'journal'), '--key', join(dir, 'k'), '--redaction-key', join(dir, 'rk'), '--idle-timeout-ms', '2000', '--headers-timeout-ms', '2000', '--resolve', `echo:80=127.0.0.1:${grpcPort}`, '--journal-retention', '1m'];
  const [node, ...entry] = benchEntry('cli', 'build');
  const [command, ...program] = cgroup.wrap([node!, ...sidecarFlags('sidecar'), ...entry, ...args]);
  const child = spawn(command!, program, { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`sidecar exited with ${code}: ${stderr}`)));
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
      const m = /^\{.*"msg":"sidecar listening".*\}$/m.exec(stderr);
      if (m === null) return;
      stderr = '';
      child.removeAllListeners('exit');
      const ports = JSON.parse(m[0]) as Sidecar['ports'];
      const sidecar: Sidecar = {
        pid: child.pid!,
        ports,
        exit: null,
        stop: () => (sidecar.exit !== null ? Promise.resolve() : new Promise((done) => (child.once('exit', () => done()), child.kill('SIGTERM')))),
      };
      child.once('exit', (code, signal) => (sidecar.exit = { code, signal }));
      resolve(sidecar);
    });
  });
}

const get = (port: number, path: string, agent: http.Agent): Promise<void> =>
  new Promise((resolve) => {
    // 'close', not 'end': a response cut short never ends.
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => (res.resume(), res.on('close', resolve), res.on('error', () => {})));
    req.on('error', () => resolve());
  });

function raw(port: number, bytes: string, holdMs: number): Promise<void> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(bytes));
    s.on('error', () => {});
    s.on('data', () => {});
    s.on('close', () => resolve());
    setTimeout(() => s.destroy(), holdMs);
  });
}

function abortMidUpload(port: number): Promise<void> {
  return raw(port, 'POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n' + 'a'.repeat(1000), 50);
}

function rapidResetBurst(port: number): Promise<void> {
  return new Promise((resolve) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.on('error', () => {});
    session.once('connect', () => {
      for (let i = 0; i < 100 && !session.destroyed; i++) {
        try {
          const s = session.request({ ':method': 'POST', ':path': '/bench.Echo/Unary', ':authority': 'echo', 'content-type': 'application/grpc' });
          s.on('error', () => {});
          s.close(http2.constants.NGHTTP2_CANCEL);
        } catch {
          break;
        }
      }
      setTimeout(() => (session.destroy(), resolve()), 200);
    });
    session.once('close', () => resolve());
  });
}

function grpcCall(client: grpc.Client, cancelAfterMs: number | null): Promise<void> {
  return new Promise((resolve) => {
    const call = (client as unknown as Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>).Unary!(Buffer.alloc(64, 1), { deadline: Date.now() + 5000 }, () => resolve());
    if (cancelAfterMs !== null) setTimeout(() => call.cancel(), cancelAfterMs);
  });
}

async function worker(sc: Sidecar, client: grpc.Client, until: number, counts: Map<string, number>): Promise<void> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 });
  const inbound = sc.ports.inbound;
  const actions: Array<[string, number, () => Promise<void>]> = [
    ['http', 50, () => get(inbound, '/', agent)],
    ['grpc', 20, () => grpcCall(client, null)],
    ['grpc-cancel', 3, () => grpcCall(client, Math.random() * 5)],
    ['upstream-reset', 4, () => get(inbound, '/reset', agent)],
    ['upstream-cut', 4, () => get(inbound, '/cut', agent)],
    ['upstream-stall', 2, () => get(inbound, '/stall', agent)],
    ['client-abort', 5, () => abortMidUpload(inbound)],
    ['malformed', 5, () => raw(inbound, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 1000)],
    ['slowloris', 5, () => raw(inbound, 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ', 500 + Math.random() * 3000)],
    ['rapid-reset', 2, () => rapidResetBurst(sc.ports.outbound)],
  ];
  const total = actions.reduce((sum, [, w]) => sum + w, 0);
  while (performance.now() < until) {
    let pick = Math.random() * total;
    const [name, , run] = actions.find(([, w]) => (pick -= w) < 0) ?? actions[0]!;
    counts.set(name, (counts.get(name) ?? 0) + 1);
    await run();
  }
  agent.destroy();
}

async function scrapeGauge(adminPort: number, name: string): Promise<number | null> {
  const text = await new Promise<string>((resolve) => {
    http.get({ host: '127.0.0.1', port: adminPort, path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve(body));
    }).on('error', () => resolve(''));
  });
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'm').exec(text);
  return m === null ? null : Number(m[1]);
}

async function sample(sc: Sidecar, cgroup: MemoryCgroup): Promise<Record<string, number | null>> {
  const memory = cgroup.read();
  return {
    rss_mib: (rssBytes(sc.pid) ?? NaN) / 2 ** 20,
    working_set_mib: memory === null ? null : memory.workingSet / MIB,
    anon_mib: memory === null ? null : memory.anon / MIB,
    fds: openFds(sc.pid),
    active_handles: await scrapeGauge(sc.ports.admin, 'nodejs_active_handles_total'),
    heap_used_mib: ((await scrapeGauge(sc.ports.admin, 'nodejs_heap_size_used_bytes')) ?? NaN) / 2 ** 20,
  };
}

const limitBytes = quantityBytes(MEMORY_LIMIT);
const made = createMemoryCgroup(`auditmesh-soak-${process.pid}`, limitBytes);
if ('error' in made) throw new Error(`soak needs a memory cgroup (root, cgroup v1 or v2 with the memory controller): ${made.error}`);
const cgroup = made;
compileServers();
const dir = await mkdtemp(join(tmpdir(), 'auditmesh-soak-'));
const app = await startFaultyApp();
const echo = await startEchoServer();
const sc = await startSidecar(app.port, echo.port, dir, cgroup);
// The largest working set and anonymous memory seen, sampled each second, as the kubelet would see them.
const peakMemory = { workingSet: 0, anon: 0 };
const memorySampler = setInterval(() => {
  const m = cgroup.read();
  if (m === null) return;
  peakMemory.workingSet = Math.max(peakMemory.workingSet, m.workingSet);
  peakMemory.anon = Math.max(peakMemory.anon, m.anon);
}, 1000);
const client = new EchoClient(`127.0.0.1:${sc.ports.outbound}`, grpc.credentials.createInsecure(), { 'grpc.default_authority': 'echo' });
const counts = new Map<string, number>();

// Warm-up: one minute's worth of the same mix, so lazy allocations (pools, JIT, buffers) are in the baseline.
const warmupMs = Math.min(30_000, (DURATION_S * 1000) / 10);
await Promise.all(Array.from({ length: CONCURRENCY }, () => worker(sc, client, performance.now() + warmupMs, new Map())));
await sleep(SETTLE_MS);
const before = await sample(sc, cgroup);
process.stdout.write(`soak: ${DURATION_S} s, ${CONNECTIONS} connections of full load and ${CONCURRENCY} concurrent fault clients, memory limit ${MEMORY_LIMIT} (cgroup v${cgroup.version}), node ${sidecarFlags('sidecar').join(' ')}; baseline ${JSON.stringify(before)}\n`);
const start = performance.now();
const until = start + DURATION_S * 1000;
const ticker = setInterval(() => {
  void sample(sc, cgroup).then((s) => process.stdout.write(`  ${((performance.now() - start) / 1000).toFixed(0)} s: ${JSON.stringify(s)}\n`));
}, 60_000);
const loader = startLoadChild(null);
const [full] = await Promise.all([
  loader.run({ url: `http://127.0.0.1:${sc.ports.inbound}/`, connections: CONNECTIONS, duration: DURATION_S, timeout: 10 }),
  ...Array.from({ length: CONCURRENCY }, () => worker(sc, client, until, counts)),
]);
await loader.close();
clearInterval(ticker);
const peak = await sample(sc, cgroup);
await sleep(SETTLE_MS);
const after = await sample(sc, cgroup);
clearInterval(memorySampler);
const oomKills = cgroup.oomKills();
const exitedEarly = sc.exit;
client.close();
await sc.stop();
cgroup.remove();
app.server.close();
await echo.close();
await rm(dir, { recursive: true, force: true });

const row = (name: string, key: string) => [name, String(before[key]?.toFixed(1)), String(peak[key]?.toFixed(1)), String(after[key]?.toFixed(1)), `${(((after[key] ?? 0) / (before[key] ?? 1) - 1) * 100).toFixed(1)}%`];
process.stdout.write(formatTable(['measure', 'before', 'end of load', `after ${SETTLE_MS / 1000} s idle`, 'after vs before'], [row('RSS (MiB)', 'rss_mib'), row('working set (MiB)', 'working_set_mib'), row('anon (MiB)', 'anon_mib'), row('open fds', 'fds'), row('active handles', 'active_handles'), row('heap used (MiB)', 'heap_used_mib')]) + '\n');
process.stdout.write(`full load: ${Math.round(full.requests.average)} req/s over ${DURATION_S} s, ${full.non2xx} non-2xx, ${full.errors} errors\n`);
process.stdout.write(`fault mix: ${[...counts].map(([k, v]) => `${k} ${v}`).join(', ')}\n`);
const fmt = (b: number): string => (b / MIB).toFixed(1);
process.stdout.write(`largest working set ${fmt(peakMemory.workingSet)} MiB, anonymous ${fmt(peakMemory.anon)} MiB (sampled each second; limit ${MEMORY_LIMIT})\n`);
const survived = oomKills === 0 && exitedEarly === null;
process.stdout.write(`no OOM kill under ${MEMORY_LIMIT}: ${survived ? 'met' : `MISSED (oom_kill ${oomKills}${exitedEarly === null ? '' : `, sidecar exited during the run: ${JSON.stringify(exitedEarly)}`})`}\n`);
if (!survived) process.exitCode = 1;
