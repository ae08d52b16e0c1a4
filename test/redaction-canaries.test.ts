import test from 'ava';
import http2 from 'node:http2';
import net from 'node:net';
import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import type { ExecutionContext } from 'ava';
import { listen, rawExchange, request, startUpstream } from './helpers/net.js';
import { followTail, scrape, startTestSidecar, until } from './helpers/sidecar.js';
import { startTestCollector } from './helpers/collector.js';
import { leaksOf } from './helpers/hostile.js';
import { runCli } from './helpers/child.js';
import { createLogger } from '../command/log.js';

// Issue 30, end to end: a fresh canary in each row of the table and in each new rule's
// examples, sent over HTTP/1.1, HTTP/2 and CONNECT through a sidecar shipping to a collector; no
// canary may be in clear in the journal, the collector's store, either log, /metrics, /tail or
// `auditmesh query`.

type Proto = 'h1' | 'h2' | 'connect';

/** A canary no shape rule catches: only a name or a path template can. */
const plain = (): string => 'cn' + Array.from({ length: 18 }, () => String.fromCharCode(97 + randomInt(26))).join('');

/** A canary shaped like a token (digit, lower, upper in turn): only the shape rule catches it under an innocent name. */
function shaped(): string {
  const classes = ['0123456789', 'abcdefghijklmnopqrstuvwxyz', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ'];
  return Array.from({ length: 32 }, (_, i) => classes[i % 3]![randomInt(classes[i % 3]!.length)]).join('');
}

/** A JWT whose payload and signature both carry the canary. */
const jwtOf = (c: string): string => `eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOi${c}.${c}`;

/** Request targets, one per rule example; each runs on every protocol. */
const TARGETS: Array<[string, () => string, (c: string) => string]> = [
  ['access_token', plain, (c) => `/r?access_token=${c}&page=2`],
  ['apikey', plain, (c) => `/r?apikey=${c}`],
  ['sig', plain, (c) => `/r?sig=${c}`],
  ['code (OAuth callback)', plain, (c) => `/callback?code=${c}&state=xyz`],
  ['X-Amz-Signature (presigned URL)', plain, (c) => `/bucket/obj?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=${c}&X-Amz-Signature=${c}`],
  ['X-Goog-Signature', plain, (c) => `/bucket/obj?X-Goog-Signature=${c}`],
  ['client_secret (OAuth)', plain, (c) => `/token?client_id=app&client_secret=${c}`],
  ['session_id', plain, (c) => `/r?session_id=${c}`],
  ['jwt', plain, (c) => `/r?jwt=${c}`],
  ['auth', plain, (c) => `/r?auth=${c}`],
  ['api_key[0] (bracketed)', plain, (c) => `/r?api_key%5B0%5D=${c}&api_key[1]=${c}`],
  ['auth.token (dotted)', plain, (c) => `/r?auth.token=${c}`],
  ['a JWT under an innocent name', plain, (c) => `/r?q=${jwtOf(c)}`],
  ['a JWT as a path segment', plain, (c) => `/verify/${jwtOf(c)}`],
  ['a token under an innocent name', shaped, (c) => `/r?next=${c}`],
  ['a token as a path segment', shaped, (c) => `/files/${c}/download`],
  ['/users/<token>/reset', plain, (c) => `/users/${c}/reset`],
  ['/hooks/<secret> (--secret-paths)', plain, (c) => `/hooks/${c}`],
  ['/users/*/reset/<secret> (--secret-paths)', plain, (c) => `/users/42/reset/${c}/confirm`],
];
const SECRET_PATHS = ['/hooks/{secret}', '/users/{secret}/reset', '/users/*/reset/{secret}'];

interface Mesh {
  sidecar: Awaited<ReturnType<typeof startTestSidecar>>;
  h1Port: number;
  h2Port: number;
}

/** HTTP/1.1 to the inbound listener; a WebSocket upgrade when asked. */
async function viaH1(m: Mesh, target: string, id: string, headers: Record<string, string> = {}): Promise<void> {
  await request(m.sidecar.ports.inbound!, { path: target, headers: { 'x-request-id': id, ...headers } });
}

/** HTTP/2 (prior knowledge) through the outbound listener, plain or gRPC by its headers. */
function viaH2(m: Mesh, target: string, id: string, headers: Record<string, string> = {}): Promise<void> {
  const session = http2.connect(`http://127.0.0.1:${m.sidecar.ports.outbound}`);
  session.on('error', () => {});
  const stream = session.request({ ':method': 'POST', ':path': target, ':authority': `127.0.0.1:${m.h2Port}`, 'x-request-id': id, ...headers });
  stream.on('error', () => {});
  stream.resume();
  stream.end();
  return new Promise((resolve) => stream.on('close', () => (session.close(), resolve())));
}

/** CONNECT through the outbound listener, then the request inside the tunnel. */
async function viaConnect(m: Mesh, target: string, id: string): Promise<void> {
  const socket = net.connect(m.sidecar.ports.outbound, '127.0.0.1');
  socket.on('error', () => {});
  socket.write(`CONNECT 127.0.0.1:${m.h1Port} HTTP/1.1\r\nHost: 127.0.0.1:${m.h1Port}\r\nx-request-id: ${id}\r\n\r\n`);
  await new Promise((resolve) => socket.once('data', resolve));
  socket.write(`GET ${target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`);
  socket.resume();
  await new Promise((resolve) => socket.on('close', resolve));
}

const SEND: Record<Proto, (m: Mesh, target: string, id: string) => Promise<void>> = { h1: viaH1, h2: viaH2, connect: viaConnect };

/** The rules' other examples, each on the protocol it concerns; returns the ids recorded. */
async function sendExtras(m: Mesh, canaries: string[]): Promise<string[]> {
  const c = (make: () => string): string => (canaries.push(make()), canaries.at(-1)!);
  const ids = ['userinfo-absolute', 'userinfo-host', 'websocket', 'claims', 'grpc-metadata'].map((what) => `${what}-${randomUUID()}`);
  const [absolute, host, ws, claims, grpc] = ids as [string, string, string, string, string];
  await rawExchange(m.sidecar.ports.outbound, `GET http://admin:${c(plain)}@127.0.0.1:${m.h1Port}/x HTTP/1.1\r\nHost: x\r\nx-request-id: ${absolute}\r\nConnection: close\r\n\r\n`);
  await viaH1(m, '/x', host, { host: `admin:${c(plain)}@127.0.0.1` });
  await rawExchange(m.sidecar.ports.inbound!, `GET /ws?access_token=${c(plain)} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nx-request-id: ${ws}\r\n\r\n`, 2_000);
  await viaH1(m, '/x', claims, { 'x-forwarded-for': `10.0.0.1, ${jwtOf(c(plain))}`, traceparent: `00-${c(shaped)}-01` });
  await viaH2(m, '/pkg.Svc/Call', grpc, { 'content-type': 'application/grpc', te: 'trailers', 'user-agent': `grpc-probe ${jwtOf(c(plain))}`, 'x-echo': `session_id=${c(plain)} ${c(shaped)}` });
  // Unparseable CONNECT targets get a 400 and a record without the target.
  for (const target of [`admin:${c(plain)}@127.0.0.1:${m.h1Port}`, `127.0.0.1:${m.h1Port}/hooks/${c(plain)}?token=${c(plain)}`]) {
    await rawExchange(m.sidecar.ports.outbound, `CONNECT ${target} HTTP/1.1\r\nHost: x\r\n\r\n`, 5_000);
  }
  return ids;
}

/** An HTTP/1.1 app (with WebSocket) and an h2c app that answers gRPC with a status message quoting a header. */
async function startApps(t: ExecutionContext): Promise<{ h1Port: number; h2Port: number }> {
  const h1 = await startUpstream();
  t.teardown(h1.close);
  h1.server.on('upgrade', (_req, socket) => socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'));
  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    stream.on('error', () => {});
    const grpc = String(headers['content-type']).startsWith('application/grpc');
    stream.respond({ ':status': 200, ...(grpc ? { 'content-type': 'application/grpc' } : {}) }, { waitForTrailers: grpc });
    if (grpc) stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '16', 'grpc-message': encodeURIComponent(`denied: ${String(headers['x-echo'])}`) }));
    stream.end();
  });
  const h2Port = await listen(h2);
  t.teardown(() => new Promise<void>((resolve) => h2.close(() => resolve())));
  return { h1Port: h1.port, h2Port };
}

test('no canary from the issue table or the new rules is in clear anywhere, over HTTP/1.1, HTTP/2 and CONNECT', async (t) => {
  const collectorLogs: string[] = [];
  const collector = await startTestCollector(t, { token: null, log: (level, msg, fields) => collectorLogs.push(JSON.stringify({ level, msg, ...fields })) });
  const apps = await startApps(t);
  const sidecarLogs: string[] = [];
  const sidecar = await startTestSidecar(
    t,
    { appPort: apps.h1Port, logLevel: 'info', collector: collector.grpcAddress, secretPaths: SECRET_PATHS, checkpointIntervalMs: 100 },
    createLogger('info', (line) => sidecarLogs.push(line)),
  );
  const mesh: Mesh = { sidecar, ...apps };
  const tail = await followTail(t, sidecar.ports.admin);
  const canaries: string[] = [];
  const ids: string[] = [];
  for (const proto of ['h1', 'h2', 'connect'] as const) {
    for (const [what, make, target] of TARGETS) {
      const canary = make();
      canaries.push(canary);
      ids.push(`${proto}-${what.replace(/\W+/g, '-')}-${randomUUID()}`);
      await SEND[proto](mesh, target(canary), ids.at(-1)!);
    }
  }
  ids.push(...(await sendExtras(mesh, canaries)));
  for (const id of ids) await tail.next((r) => r['audit.request_id'] === id && r['audit.phase'] === 'final', 30_000);
  const fingerprinted = tail.records.filter((r) => ids.includes(r['audit.request_id'] ?? '') && JSON.stringify(r).includes('hmac-sha256:'));
  t.true(fingerprinted.length >= TARGETS.length * 2, 'the HTTP/1.1 and HTTP/2 records hold fingerprints where the canaries were');

  const stored = async (): Promise<string> => (await fetch(`${collector.httpUrl}/v1/records?service=svc&limit=1000`, collector.readAuth)).text();
  await until(async () => {
    const text = await stored();
    return ids.every((id) => text.includes(id));
  }, 'the collector holds every record', 60_000);
  const [asJson, asTable] = await Promise.all([runCli(['query', '--collector', collector.httpUrl, ...collector.readerArgs, '--service', 'svc', '--limit', '1000', '-o', 'json']), runCli(['query', '--collector', collector.httpUrl, ...collector.readerArgs, '--service', 'svc', '--limit', '1000'])]);
  // Exit 1: the refused requests (400, gRPC UNAUTHENTICATED) are error records.
  t.is(asJson.code, 1, asJson.stderr);
  t.true(ids.every((id) => asJson.stdout.includes(id)), 'auditmesh query finds every record');
  const texts = {
    'sidecar /metrics': await scrape(sidecar.ports.admin),
    'collector /metrics': await (await fetch(`${collector.httpUrl}/metrics`)).text(),
    '/tail': JSON.stringify(tail.records),
    'collector /v1/records': await stored(),
    'auditmesh query -o json': asJson.stdout + asJson.stderr,
    'auditmesh query': asTable.stdout + asTable.stderr,
  };
  await sidecar.close();
  await collector.close();
  Object.assign(texts, { 'sidecar log': sidecarLogs.join('\n'), 'collector log': collectorLogs.join('\n') });
  t.true(sidecarLogs.length > 0 && collectorLogs.length > 0, 'both logs were captured');
  t.deepEqual(await leaksOf(canaries, [sidecar.config.journalDir, collector.storeDir], texts), []);
});

test('ordinary ids (UUIDs, numbers, slugs, content hashes) are recorded as they are, in the tail and at the collector', async (t) => {
  const collector = await startTestCollector(t, { token: null });
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { appPort: app.port, collector: collector.grpcAddress, secretPaths: SECRET_PATHS, checkpointIntervalMs: 100 });
  const tail = await followTail(t, sidecar.ports.admin);
  const id = randomUUID();
  const path = `/users/${randomUUID()}/orders/${randomInt(1e9)}/items/how-to-configure-kubernetes-ingress-controllers/commits/${randomBytes(20).toString('hex')}`;
  const query = `page=2&id=${randomBytes(12).toString('hex')}&sort=created_at&country_code=US&design=flat&author=alice&ulid=01ARZ3NDEKTSV4RRFFQ69G5FAV`;
  await request(sidecar.ports.inbound!, { path: `${path}?${query}`, headers: { 'x-request-id': id } });
  const rec = await tail.next((r) => r['audit.request_id'] === id);
  t.is(rec['url.path'], path);
  t.is(rec['url.query'], query);
  let stored: Record<string, unknown> | undefined;
  await until(async () => {
    const lines = (await (await fetch(`${collector.httpUrl}/v1/records?correlation_id=${id}`, collector.readAuth)).text()).split('\n').filter((l) => l !== '');
    stored = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((r) => r['audit.request_id'] === id);
    return stored !== undefined;
  }, 'the collector holds the record', 60_000);
  t.like(stored, { 'url.path': path, 'url.query': query });
});
