import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import tls from 'node:tls';
import http from 'node:http';
import { generateKeyPairSync } from 'node:crypto';
import { closeServer, listen, request, startUpstream } from './helpers/net.js';
import { followTail, metricValue, scrape, startTestSidecar, until } from './helpers/sidecar.js';
import { createTestMeshCa, type TestMeshCa } from './helpers/mesh-ca.js';
import { directoryOf, meshWorkload, spiffe } from './helpers/mesh-workload.js';
import { echoClient, startEchoServer, unary } from './helpers/grpc.js';
import { MESH_ALPN } from '../proxy/mesh/mesh-credentials.js';
import type { MeshDirectory } from '../proxy/mesh/directory.js';
import type { SidecarConfig } from '../proxy/config.js';

const ORDERS = spiffe('orders');
const INVENTORY = spiffe('inventory');

/** A TCP relay between the two sidecars that keeps every byte the caller's sidecar sent. */
async function startTap(t: ExecutionContext, to: () => number): Promise<{ port: number; sent: Buffer[] }> {
  const sent: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(to(), '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.once('close', () => (client.destroy(), upstream.destroy()));
    }
    client.on('data', (c: Buffer) => sent.push(c));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await listen(server);
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return closeServer(server);
  });
  return { port, sent };
}

interface PairOptions {
  appPort: number;
  /** The caller's directory; by default 127.0.0.1 is the callee, inventory. */
  callerDirectory?: MeshDirectory;
  /** The caller's --service (what it stamps in x-auditmesh-client). */
  callerService?: string;
  /** The callee's workload certificate; by default one of the mesh CA for inventory. */
  calleeWorkload?: Awaited<ReturnType<typeof meshWorkload>>;
  callee?: Partial<SidecarConfig>;
}

/** caller sidecar (orders) → tap → callee sidecar (inventory) → app; every name resolves to the tap. */
async function startPair(t: ExecutionContext, ca: TestMeshCa, opts: PairOptions) {
  let calleePort = 0;
  const tap = await startTap(t, () => calleePort);
  const calleeWorkload = opts.calleeWorkload ?? (await meshWorkload(t, ca, INVENTORY));
  const callee = await startTestSidecar(t, { service: 'inventory', appPort: opts.appPort, directory: directoryOf('127.0.0.1', ORDERS, 'orders'), ...calleeWorkload, ...opts.callee });
  calleePort = callee.ports.inbound!;
  const at = { host: '127.0.0.1', port: tap.port };
  const caller = await startTestSidecar(t, {
    service: opts.callerService ?? 'orders',
    directory: opts.callerDirectory ?? directoryOf('127.0.0.1', INVENTORY, 'inventory'),
    resolve: new Map([['inventory:80', at], ['inventory:443', at]]),
    ...(await meshWorkload(t, ca, ORDERS)),
  });
  return { tap, callee, caller, callerTail: await followTail(t, caller.ports.admin), calleeTail: await followTail(t, callee.ports.admin) };
}

/** GET through the caller's outbound listener as an app using HTTP_PROXY does. */
const viaProxy = (port: number, path: string, headers: http.OutgoingHttpHeaders = {}) => request(port, { path: `http://inventory${path}`, headers: { host: 'inventory', ...headers } });

test('HTTP/1.1 between two sidecars is mTLS: the wire carries TLS only, and both ends record the other proven', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream((req, res) => res.end(`items for ${req.headers['x-forwarded-proto']}`));
  t.teardown(app.close);
  const { tap, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort: app.port });
  const reply = await viaProxy(caller.ports.outbound, '/items?sku=42');
  t.is(reply.status, 200);
  t.is(reply.body.toString(), 'items for http', 'the app sees no difference');
  t.is(app.seen[0]!.url, '/items?sku=42');
  const wire = Buffer.concat(tap.sent);
  t.is(wire[0], 0x16, 'the first byte between the sidecars is a TLS handshake record');
  t.false(wire.includes('GET /items'), 'no plaintext request line on the wire');
  t.false(wire.includes('sku=42'));

  const out = await callerTail.next((r) => r['url.path'] === '/items');
  t.like(out, { 'audit.direction': 'outbound', 'peer.identity': INVENTORY, 'audit.peer.verified': true, 'peer.service': 'inventory', 'http.response.status_code': 200 });
  const inb = await calleeTail.next((r) => r['url.path'] === '/items');
  t.like(inb, { 'audit.direction': 'inbound', 'peer.identity': ORDERS, 'audit.peer.verified': true, 'peer.service': 'orders', 'audit.claimed.client': 'orders' });
});

test('the mTLS ClientHello offers exactly the ALPN auditmesh/1', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  const { tap, caller } = await startPair(t, ca, { appPort: app.port });
  await viaProxy(caller.ports.outbound, '/alpn');
  const hello = Buffer.concat(tap.sent);
  const alpn = Buffer.concat([Buffer.from([0x00, 0x10]), Buffer.from([0x00, MESH_ALPN.length + 3, 0x00, MESH_ALPN.length + 1, MESH_ALPN.length]), Buffer.from(MESH_ALPN)]);
  t.true(hello.includes(alpn), 'ALPN extension with the one protocol auditmesh/1');
});

test('gRPC between two sidecars is mTLS, and both records name the other end proven', async (t) => {
  const ca = await createTestMeshCa();
  const echo = await startEchoServer(t);
  const { tap, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort: echo.port });
  const client = echoClient(t, caller.ports.outbound, { 'grpc.default_authority': 'inventory:80' });
  const { reply, error } = await unary(client, { text: 'stock?' });
  t.is(error, undefined);
  t.is(reply!.text, 'stock?');
  t.deepEqual(echo.log.metadata[0]!.get('x-auditmesh-client'), [], 'the callee strips mesh headers before the app, as for plaintext');
  const wire = Buffer.concat(tap.sent);
  t.is(wire[0], 0x16);
  t.false(wire.includes('PRI * HTTP/2.0'), 'no plaintext HTTP/2 preface on the wire');
  t.false(wire.includes('test.Echo'), 'no plaintext :path on the wire');
  const out = await callerTail.next((r) => r['rpc.method'] === 'Unary');
  t.like(out, { 'audit.direction': 'outbound', 'peer.identity': INVENTORY, 'audit.peer.verified': true, 'rpc.grpc.status_code': 0 });
  const inb = await calleeTail.next((r) => r['rpc.method'] === 'Unary');
  // The caller's sidecar still stamps x-auditmesh-client on the inner request: a claim beside the proof.
  t.like(inb, { 'audit.direction': 'inbound', 'peer.identity': ORDERS, 'audit.peer.verified': true, 'rpc.grpc.status_code': 0, 'audit.claimed.client': 'orders' });
});

test("opaque TCP (the app's own TLS) between two sidecars is carried inside mTLS and recorded proven at both ends", async (t) => {
  const ca = await createTestMeshCa();
  // The app's own TLS server, with a certificate of a CA the sidecars know nothing of.
  const appCa = await createTestMeshCa('app CA');
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const der = await appCa.certify(publicKey.export({ format: 'der', type: 'spki' }), 'spiffe://app/tls');
  const app = tls.createServer({ key: privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: `-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----\n` }, (s) => s.on('data', (c: Buffer) => s.write(`echo:${c.toString()}`)));
  const appPort = await listen(app);
  t.teardown(() => closeServer(app));
  const { tap, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort });
  const answer = await new Promise<string>((resolve, reject) => {
    const s = tls.connect({ port: caller.ports.outbound, host: '127.0.0.1', servername: 'inventory', ca: appCa.pem, checkServerIdentity: () => undefined }, () => s.write('ping'));
    s.once('data', (c: Buffer) => (resolve(c.toString()), s.end()));
    s.on('error', reject);
  });
  t.is(answer, 'echo:ping');
  t.is(Buffer.concat(tap.sent)[0], 0x16);
  const out = await callerTail.next((r) => r['audit.kind'] === 'tcp');
  t.like(out, { 'audit.direction': 'outbound', 'tls.client.server_name': 'inventory', 'peer.identity': INVENTORY, 'audit.peer.verified': true });
  t.true(out['audit.bytes_in']! > 0);
  const inb = await calleeTail.next((r) => r['audit.kind'] === 'tcp');
  t.like(inb, { 'audit.direction': 'inbound', 'peer.identity': ORDERS, 'audit.peer.verified': true });
  t.true(inb['audit.bytes_out']! > 0);
});

test('a destination the directory does not list is called in plaintext, recorded unverified at both ends', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  const { tap, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort: app.port, callerDirectory: directoryOf('10.9.9.9', INVENTORY) });
  t.is((await viaProxy(caller.ports.outbound, '/plain')).status, 200);
  t.true(Buffer.concat(tap.sent).includes('GET /plain'), 'plaintext as before');
  const out = await callerTail.next((r) => r['url.path'] === '/plain');
  t.is(out['audit.peer.verified'], false);
  t.false('peer.identity' in out);
  const inb = await calleeTail.next((r) => r['url.path'] === '/plain');
  t.like(inb, { 'audit.peer.verified': false, 'audit.claimed.client': 'orders' });
  t.false('peer.identity' in inb);
});

test('a forged x-auditmesh-client is a claim: unverified from a plaintext caller, beside the proven identity from a verified one', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  // The caller's sidecar says it is payments; its certificate says orders.
  const { callee, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort: app.port, callerService: 'payments' });
  t.is((await viaProxy(caller.ports.outbound, '/verified-liar')).status, 200);
  const liar = await calleeTail.next((r) => r['url.path'] === '/verified-liar');
  t.like(liar, { 'audit.claimed.client': 'payments', 'peer.identity': ORDERS, 'audit.peer.verified': true, 'peer.service': 'orders' });
  t.is((await callerTail.next((r) => r['url.path'] === '/verified-liar'))['audit.peer.verified'], true);

  // A plaintext caller straight at the inbound listener.
  t.is((await request(callee.ports.inbound!, { path: '/plain-liar', headers: { 'x-auditmesh-client': 'payments' } })).status, 200);
  const plain = await calleeTail.next((r) => r['url.path'] === '/plain-liar');
  t.like(plain, { 'audit.claimed.client': 'payments', 'audit.peer.verified': false });
  t.false('peer.identity' in plain);
});

/** A failure of mTLS: the caller gets 502, the app never sees the request, the record and counter name why. */
async function assertRefusedCall(t: ExecutionContext, pair: Awaited<ReturnType<typeof startPair>>, app: { seen: unknown[] }, errorType: string, path: string): Promise<void> {
  const reply = await viaProxy(pair.caller.ports.outbound, path);
  t.is(reply.status, 502);
  const out = await pair.callerTail.next((r) => r['url.path'] === path);
  t.is(out['error.type'], errorType as never, out['audit.error_message']);
  t.is(out['audit.peer.verified'], false);
  t.false('peer.identity' in out);
  t.is(app.seen.length, 0, 'no plaintext fallback: the app never saw the request');
  t.false(Buffer.concat(pair.tap.sent).includes(path), 'nothing in plaintext on the wire');
  const metrics = await scrape(pair.caller.ports.admin);
  t.is(metricValue(metrics, 'auditmesh_mesh_tls_failures_total', { direction: 'outbound', reason: errorType }), 1);
}

test('a callee whose certificate is from another CA (the bundle rotated) is refused as peer_untrusted, never called in plaintext', async (t) => {
  const ca = await createTestMeshCa();
  const other = await createTestMeshCa('another CA');
  const app = await startUpstream();
  t.teardown(app.close);
  const pair = await startPair(t, ca, { appPort: app.port, calleeWorkload: await meshWorkload(t, other, INVENTORY) });
  await assertRefusedCall(t, pair, app, 'peer_untrusted', '/untrusted');
});

test('a callee with an expired certificate is refused as peer_expired', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  const validity = { notBefore: new Date(Date.now() - 2 * 3600_000), notAfter: new Date(Date.now() - 3600_000) };
  const pair = await startPair(t, ca, { appPort: app.port, calleeWorkload: await meshWorkload(t, ca, INVENTORY, { validity }) });
  await assertRefusedCall(t, pair, app, 'peer_expired', '/expired');
});

test('a callee that is not the identity the directory lists is refused as peer_identity_mismatch', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  const pair = await startPair(t, ca, { appPort: app.port, callerDirectory: directoryOf('127.0.0.1', spiffe('payments')) });
  await assertRefusedCall(t, pair, app, 'peer_identity_mismatch', '/impostor');
  const out = await pair.callerTail.next((r) => r['url.path'] === '/impostor');
  t.regex(out['audit.error_message']!, /presented spiffe:\/\/cluster\.local\/ns\/shop\/sa\/inventory, the mesh directory lists spiffe:\/\/cluster\.local\/ns\/shop\/sa\/payments/);
});

test('gRPC to a callee of another CA fails with the mesh error, never plaintext', async (t) => {
  const ca = await createTestMeshCa();
  const other = await createTestMeshCa('another CA');
  const echo = await startEchoServer(t);
  const pair = await startPair(t, ca, { appPort: echo.port, calleeWorkload: await meshWorkload(t, other, INVENTORY) });
  const client = echoClient(t, pair.caller.ports.outbound, { 'grpc.default_authority': 'inventory:80' });
  const { error } = await unary(client, { text: 'stock?' });
  t.is(error?.code, 14, 'UNAVAILABLE');
  t.is(echo.log.metadata.length, 0);
  const out = await pair.callerTail.next((r) => r['rpc.method'] === 'Unary');
  t.like(out, { 'error.type': 'peer_untrusted', 'audit.peer.verified': false });
});

test('a caller whose certificate the callee does not trust is refused by the callee, recorded there as peer_untrusted', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  // The callee trusts only another CA: the caller's certificate (of `ca`) is not from its mesh CA.
  const other = await createTestMeshCa('another CA');
  const calleeWorkload = await meshWorkload(t, ca, INVENTORY, { trust: other.pem });
  const pair = await startPair(t, ca, { appPort: app.port, calleeWorkload });
  const reply = await viaProxy(pair.caller.ports.outbound, '/rejected-caller');
  t.is(reply.status, 502);
  t.is(app.seen.length, 0);
  const inb = await pair.calleeTail.next((r) => r['audit.direction'] === 'inbound' && r['error.type'] !== undefined);
  t.like(inb, { 'audit.kind': 'tcp', 'network.protocol.name': 'tls', 'error.type': 'peer_untrusted', 'audit.peer.verified': false });
  // At least once: the caller replays an idempotent request once on a reset before any response.
  await until(async () => metricValue(await scrape(pair.callee.ports.admin), 'auditmesh_mesh_tls_failures_total', { direction: 'inbound', reason: 'peer_untrusted' }) >= 1, 'the callee counts the refusal');
  const out = await pair.callerTail.next((r) => r['url.path'] === '/rejected-caller');
  t.is(out['audit.peer.verified'], true, 'the callee proved itself; the caller was the one refused');
  t.is(out['error.type'], 'peer_reset');
});

test('a callee sidecar that resets the mTLS connection mid-exchange is recorded as peer_reset', async (t) => {
  const ca = await createTestMeshCa();
  let arrived!: () => void;
  const seen = new Promise<void>((resolve) => (arrived = resolve));
  const app = await startUpstream(() => arrived());
  t.teardown(app.close);
  const pair = await startPair(t, ca, { appPort: app.port });
  const reply = viaProxy(pair.caller.ports.outbound, '/hang');
  await seen;
  await pair.callee.close();
  t.is((await reply).status, 502);
  const out = await pair.callerTail.next((r) => r['url.path'] === '/hang');
  t.like(out, { 'error.type': 'peer_reset', 'peer.identity': INVENTORY, 'audit.peer.verified': true });
  t.is(metricValue(await scrape(pair.caller.ports.admin), 'auditmesh_mesh_tls_failures_total', { direction: 'outbound', reason: 'peer_reset' }), 1);
});

test('with a stale directory an unlisted address is called in plaintext and recorded so; a listed one stays mTLS', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  let listed = false;
  const directory: MeshDirectory = { lookup: (ip) => (listed && ip === '127.0.0.1' ? { identity: INVENTORY, service: 'inventory', sidecarId: 'shop/inventory-0' } : undefined), fresh: () => false };
  const pair = await startPair(t, ca, { appPort: app.port, callerDirectory: directory });
  t.is((await viaProxy(pair.caller.ports.outbound, '/stale')).status, 200);
  const stale = await pair.callerTail.next((r) => r['url.path'] === '/stale');
  t.like(stale, { 'audit.peer.verified': false, 'audit.peer.directory_stale': true });
  t.is(metricValue(await scrape(pair.caller.ports.admin), 'auditmesh_mesh_tls_failures_total', { direction: 'outbound', reason: 'directory_stale' }), 1);
  listed = true;
  t.is((await viaProxy(pair.caller.ports.outbound, '/stale-listed')).status, 200);
  const meshed = await pair.callerTail.next((r) => r['url.path'] === '/stale-listed');
  t.like(meshed, { 'audit.peer.verified': true, 'peer.identity': INVENTORY });
  t.false('audit.peer.directory_stale' in meshed);
});
