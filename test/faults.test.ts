import test from 'ava';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { readJournal } from '../ledger/read-journal.js';
import type { ErrorKind } from '../ledger/record.js';
import { closeServer, listen, request, startUpstream } from './helpers/net.js';
import { echoClient, startEchoServer, unary } from './helpers/grpc.js';
import { SECRET, SECRET_HEADERS, assertJournalSound, assertSound, recordOf, startHostile } from './helpers/hostile.js';
import { startSidecarProcess } from './helpers/sidecar-process.js';
import { grpcMessage } from './helpers/h2-frames.js';
import { metricValue, scrape, tempDir, until } from './helpers/sidecar.js';

// Faults (issue 8): upstreams failing at every stage, a sealing worker dying mid-batch, SIGKILL
// under mixed load, the wall clock jumping. Collector faults are the shipper's suite. Every case
// ends with the sidecar serving, the journal verifying, and the planted secret nowhere in clear.

/** How an HTTP exchange ended for the client: a status with its whole body, or an abort. */
function outcomeOf(port: number, path: string): Promise<number | 'aborted'> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, headers: SECRET_HEADERS, agent: false }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', () => resolve('aborted'));
    });
    req.on('error', () => resolve('aborted'));
  });
}

/** An upstream that misbehaves on `/fault` as told, and answers /still-serving properly. */
async function faultyHttpUpstream(t: ExecutionContext, misbehave: (socket: net.Socket) => void): Promise<number> {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    socket.once('data', (data) => {
      if (data.toString('latin1').startsWith('GET /still-serving')) socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
      else misbehave(socket);
    });
  });
  const port = await listen(server);
  t.teardown(() => closeServer(server));
  return port;
}

const HTTP_STAGES: Array<[string, (s: net.Socket) => void, number | 'aborted', ErrorKind, Record<string, number>?]> = [
  ['resets before any response byte', (s) => s.resetAndDestroy(), 502, 'reset'],
  ['closes before any response byte', (s) => s.end(), 502, 'reset'],
  ['never answers', () => {}, 504, 'timeout', { responseTimeoutMs: 300 }],
  ['resets after the headers, mid-body', (s) => (s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial'), setTimeout(() => s.resetAndDestroy(), 50)), 'aborted', 'incomplete'],
  ['closes after the headers, mid-body', (s) => (s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial'), setTimeout(() => s.end(), 50)), 'aborted', 'incomplete'],
  ['stalls after the headers, mid-body', (s) => s.write('HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\npartial'), 'aborted', 'incomplete', { idleTimeoutMs: 2000 }],
  ['sends invalid response bytes', (s) => s.end('HTTP/1.1 200 OK\r\nBad Header\r\n\r\n'), 502, 'upstream_protocol'],
];

// Each stage against both forwarding engines: how an upstream fails is the engine's to read.
for (const forwardEngine of ['undici', 'http-proxy'] as const) {
  for (const [name, misbehave, expected, errorType, overrides] of HTTP_STAGES) {
    test.serial(`${forwardEngine} engine: an HTTP upstream that ${name}: the client gets ${expected}, the record says ${errorType}`, async (t) => {
      const port = await faultyHttpUpstream(t, misbehave);
      const h = await startHostile(t, { port, kind: 'http' }, { forwardEngine, ...overrides });
      t.is(await outcomeOf(h.sidecar.ports.inbound!, '/fault'), expected);
      const rec = await recordOf(h, (r) => r['url.path'] === '/fault');
      t.is(rec['error.type'], errorType);
      await assertSound(t, h);
    });
  }
}

/** A raw h2c gRPC upstream: `x-fault` metadata picks the fault; without it, a proper Echo reply. */
async function faultyGrpcUpstream(t: ExecutionContext): Promise<number> {
  const server = http2.createServer();
  server.on('session', (session) => session.on('error', () => {}));
  server.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const reply = (): void => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.once('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(grpcMessage(Buffer.concat([Buffer.from([0x0a, 13]), Buffer.from('still serving')])));
    };
    switch (headers['x-fault']) {
      case 'reset-before-headers':
        return stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      case 'reset-after-headers':
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
        stream.write(grpcMessage(Buffer.from([0x0a, 1, 0x61])));
        return void setTimeout(() => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR), 50);
      case 'goaway-mid-call':
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' });
        return void setTimeout(() => (stream.session?.goaway(http2.constants.NGHTTP2_INTERNAL_ERROR), stream.session?.destroy()), 50);
      case 'socket-destroyed-before-headers':
        return void stream.session?.destroy();
      case 'hang':
        return;
      default:
        stream.on('data', () => {});
        stream.on('end', reply);
    }
  });
  const port = await listen(server as unknown as net.Server);
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return port;
}

// An upstream reset after the response started may reach the sidecar as the reset itself or as
// the response ending without a status: either way the record says the call did not complete.
const CUT_SHORT: ErrorKind[] = ['reset', 'incomplete'];
const GRPC_STAGES: Array<[string, string, number[], ErrorKind[]]> = [
  ['resets the stream before headers', 'reset-before-headers', [grpc.status.UNAVAILABLE, grpc.status.INTERNAL], ['reset']],
  ['drops the connection before headers', 'socket-destroyed-before-headers', [grpc.status.UNAVAILABLE, grpc.status.INTERNAL], ['reset']],
  ['resets the stream after headers and a message', 'reset-after-headers', [grpc.status.INTERNAL, grpc.status.CANCELLED, grpc.status.UNAVAILABLE], CUT_SHORT],
  ['sends GOAWAY and goes away mid-call', 'goaway-mid-call', [grpc.status.INTERNAL, grpc.status.CANCELLED, grpc.status.UNAVAILABLE], CUT_SHORT],
  ['never answers, past the call deadline', 'hang', [grpc.status.DEADLINE_EXCEEDED], ['timeout']],
];

for (const [name, fault, statuses, errorTypes] of GRPC_STAGES) {
  test.serial(`a gRPC upstream that ${name}: the client gets an error status, never OK, and the record says ${errorTypes.join(' or ')}`, async (t) => {
    const port = await faultyGrpcUpstream(t);
    const h = await startHostile(t, { port, kind: 'grpc' });
    const metadata = new grpc.Metadata();
    metadata.set('x-fault', fault);
    metadata.set('authorization', `Bearer ${SECRET}`);
    const { error } = await unary(echoClient(t, h.sidecar.ports.inbound!), { text: fault }, { metadata, deadlineMs: 5000 });
    t.true(error !== undefined && statuses.includes(error.code), `got ${error?.code} ${error?.details}`);
    const rec = await recordOf(h, (r) => r['rpc.method'] === 'Unary' && r['rpc.grpc.status_code'] !== 0);
    t.true(errorTypes.includes(rec['error.type']!), JSON.stringify(rec));
    await assertSound(t, h);
  });
}

test.serial('a sealing worker that dies mid-batch is replaced and its batch sealed again: no record lost, the chain verifies', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const dir = await tempDir(t);
  const crashFile = join(dir, 'crash-next-batch');
  const sidecar = await startSidecarProcess(t, { appPort: app.port, dir, env: { AUDITMESH_TEST_SEAL_CRASH_FILE: crashFile } });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  let sent = 0;
  const burst = (n: number): Promise<unknown> => Promise.all(Array.from({ length: n }, () => request(sidecar.ports.inbound, { path: `/w/${sent}`, headers: { ...SECRET_HEADERS, 'x-request-id': `w-${sent++}` }, agent })));
  await burst(50);
  writeFileSync(crashFile, '');
  for (let i = 0; existsSync(crashFile); i++) {
    if (i > 200) throw new Error('no worker took the crash');
    await burst(20);
  }
  await sidecar.running.waitFor(/sealing worker failed; sealing the batch again/);
  await burst(50);
  const metrics = await scrape(sidecar.ports.admin);
  const exit = await sidecar.stop();
  t.is(exit.code, 0);
  const records = await readJournal(sidecar.journalDir);
  const recorded = new Set(records.map((r) => r['audit.request_id']));
  t.deepEqual(app.seen.map((s) => s.headers['x-request-id']).filter((id) => !recorded.has(id as string)), [], 'every exchange has its record');
  t.is(records.filter((r) => r['audit.kind'] === 'http').length, sent);
  await assertJournalSound(t, sidecar.journalDir, { logs: exit.stderr + exit.stdout, '/metrics': metrics });
});

const KILLS = 4;

test.serial('SIGKILL again and again under mixed HTTP and gRPC load, strict: the chain verifies, every call the upstreams saw has its request record', async (t) => {
  t.timeout(180_000);
  const app = await startUpstream();
  t.teardown(app.close);
  const echo = await startEchoServer(t);
  const dir = await tempDir(t);
  const args = ['--audit-mode', 'strict', '--checkpoint-interval-ms', '200', '--resolve', `echo:80=127.0.0.1:${echo.port}`];
  let n = 0;
  for (let kill = 1; kill <= KILLS; kill++) {
    const sidecar = await startSidecarProcess(t, { appPort: app.port, dir, args });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 6 });
    // gRPC through the outbound listener, routed by :authority to the Echo server.
    const client = echoClient(t, sidecar.ports.outbound, { 'grpc.default_authority': 'echo' });
    let running = true;
    const httpLoad = Array.from({ length: 6 }, async () => {
      while (running) await request(sidecar.ports.inbound, { path: '/pay', headers: { ...SECRET_HEADERS, 'x-request-id': `h-${kill}-${n++}` }, agent }).catch(() => {});
    });
    const grpcLoad = Array.from({ length: 6 }, async () => {
      while (running) {
        const metadata = new grpc.Metadata();
        metadata.set('x-request-id', `g-${kill}-${n++}`);
        metadata.set('authorization', `Bearer ${SECRET}`);
        await unary(client, { text: 'pay' }, { metadata, deadlineMs: 5000 });
      }
    });
    const seenBefore = app.seen.length + echo.log.metadata.length;
    while (app.seen.length + echo.log.metadata.length < seenBefore + 40 + Math.floor(Math.random() * 150)) await new Promise((resolve) => setTimeout(resolve, 5));
    sidecar.running.child.kill('SIGKILL');
    await sidecar.running.done;
    running = false;
    await Promise.all([...httpLoad, ...grpcLoad]);
    agent.destroy();
    client.close();
  }
  const requestRecords = new Set((await readJournal(join(dir, 'journal'))).filter((r) => r['audit.phase'] === 'request').map((r) => r['audit.request_id']));
  const seen = [...app.seen.map((s) => s.headers['x-request-id'] as string), ...echo.log.metadata.map((m) => String(m.get('x-request-id')[0]))];
  t.true(echo.log.metadata.length > 0 && app.seen.length > 0, 'both protocols reached their upstream');
  t.deepEqual(seen.filter((id) => !requestRecords.has(id)), [], 'every call an upstream saw has its request record');
  // After the last kill, a clean start still serves, and the journal it leaves verifies.
  const last = await startSidecarProcess(t, { appPort: app.port, dir, args });
  t.is((await request(last.ports.inbound, { path: '/after' })).status, 200);
  const exit = await last.stop();
  await assertJournalSound(t, last.journalDir, { logs: exit.stderr });
  t.log(`${KILLS} kills: ${app.seen.length} HTTP requests and ${echo.log.metadata.length} gRPC calls reached the upstreams, all with request records`);
});

const CLOCK_SHIFT = fileURLToPath(new URL('./fixtures/clock-shift.mjs', import.meta.url));

test.serial('the wall clock jumping back an hour, forward two, back again: sequence stays contiguous, no duration is negative, the chain verifies', async (t) => {
  const app = await startUpstream((_req, res) => setTimeout(() => res.end('ok'), 5));
  t.teardown(app.close);
  const sidecar = await startSidecarProcess(t, { appPort: app.port, args: ['--checkpoint-interval-ms', '100'], preload: [CLOCK_SHIFT], env: { CLOCK_SHIFTS_MS: `${-3_600_000},${7_200_000},${-5_400_000}` } });
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.teardown(() => agent.destroy());
  let i = 0;
  const traffic = async (): Promise<void> => {
    const replies = await Promise.all(Array.from({ length: 40 }, () => request(sidecar.ports.inbound, { path: `/c/${i++}`, headers: SECRET_HEADERS, agent })));
    t.true(replies.every((r) => r.status === 200));
  };
  await traffic();
  for (let shift = 1; shift <= 3; shift++) {
    sidecar.running.child.kill('SIGUSR2');
    await sidecar.running.waitFor(new RegExp(`test clock shifted(.*\\n.*){0}`));
    await new Promise((resolve) => setTimeout(resolve, 250));
    await traffic();
  }
  const exit = await sidecar.stop();
  t.is(exit.code, 0, exit.stderr);
  const records = await readJournal(sidecar.journalDir);
  const seqs = records.map((r) => r['audit.seq']);
  t.deepEqual(seqs, Array.from({ length: seqs.length }, (_, k) => seqs[0]! + k), 'contiguous and increasing');
  const http1 = records.filter((r) => r['audit.kind'] === 'http');
  t.is(http1.length, 160);
  t.deepEqual(http1.filter((r) => r['audit.duration_ms']! < 0 || (r['audit.ttfb_ms'] ?? 0) < 0).map((r) => r['url.path']), []);
  // The shifts took effect: start times went back an hour and then forward.
  const starts = http1.map((r) => r['audit.start_unix_ms']);
  t.true(starts.some((s, k) => k > 0 && s < starts[k - 1]! - 3_000_000), 'a start time jumped back');
  t.true(starts.some((s, k) => k > 0 && s > starts[k - 1]! + 3_000_000), 'a start time jumped forward');
  await assertJournalSound(t, sidecar.journalDir, { logs: exit.stderr });
});

test.serial('the wall clock stepped a day forward prunes nothing at once: retention ages records by the time that really passed', async (t) => {
  const app = await startUpstream((_req, res) => res.end('ok'));
  t.teardown(app.close);
  const retentionS = 10;
  const sidecar = await startSidecarProcess(t, { appPort: app.port, args: ['--checkpoint-interval-ms', '100', '--journal-retention', `${retentionS}s`], preload: [CLOCK_SHIFT], env: { CLOCK_SHIFTS_MS: '86400000' } });
  const sentAt = performance.now();
  for (let i = 0; i < 20; i++) t.is((await request(sidecar.ports.inbound, { path: `/r/${i}`, headers: SECRET_HEADERS })).status, 200);
  const pruned = async (): Promise<number> => metricValue(await scrape(sidecar.ports.admin), 'auditmesh_journal_pruned_records_total');
  // Every record sealed before the step: one sealed after it is a day younger and stays.
  await until(async () => metricValue(await scrape(sidecar.ports.admin), 'auditmesh_journal_records_total', { result: 'written' }) >= 20, 'the 20 records are in the journal');
  sidecar.running.child.kill('SIGUSR2');
  await sidecar.running.waitFor(/wall clock stepped forward/);
  // Maintenance ran on the stepped clock (every 100 ms): by the wall clock every record is a day old.
  await new Promise((resolve) => setTimeout(resolve, 500));
  const early = await pruned();
  const elapsedS = (performance.now() - sentAt) / 1000;
  if (elapsedS < retentionS) t.is(early, 0, `pruned ${early} records ${elapsedS.toFixed(1)} s after they were written`);
  else t.log(`the machine was too slow to check before the retention time (${elapsedS.toFixed(1)} s): only the later pruning is checked`);
  // Once the retention time has really passed, they go.
  await until(async () => (await pruned()) >= 20, 'the records are pruned once the retention time has passed', 30_000);
  t.is((await request(sidecar.ports.inbound, { path: '/after' })).status, 200);
  const exit = await sidecar.stop();
  t.is(exit.code, 0, exit.stderr);
  t.regex(exit.stderr, /"ahead_ms":86\d{6}/);
  await assertJournalSound(t, sidecar.journalDir, { logs: exit.stderr });
});
