import test, { type ExecutionContext } from 'ava';
import { request, startUpstream } from './helpers/net.js';
import { metricValue, scrape, until } from './helpers/sidecar.js';
import { createTestMeshCa } from './helpers/mesh-ca.js';
import { directoryOf, meshWorkload, spiffe } from './helpers/mesh-workload.js';
import { INVENTORY, ORDERS, startPair, viaProxy } from './helpers/mesh-pair.js';
import { echoClient, startEchoServer, unary } from './helpers/grpc.js';
import type { MeshDirectory } from '../proxy/mesh/directory.js';

// Sidecar-to-sidecar mTLS between two real sidecars: claims, and every way mTLS fails (named, counted, never plaintext).

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

test('each new mTLS connection takes the current workload certificate: a renewed one serves from the next connection', async (t) => {
  const ca = await createTestMeshCa();
  const other = await createTestMeshCa('the CA before rotation');
  const app = await startUpstream();
  t.teardown(app.close);
  // The callee starts on a certificate of the old CA, then is renewed by the mesh CA (same key).
  const before = await meshWorkload(t, other, INVENTORY, { trust: ca.pem });
  const renewed = await ca.certify((await import('../ledger/keys.js').then((k) => k.loadOrCreateSigningKey(before.keyFile))).publicKeySpki, INVENTORY);
  let current = before.workloadCertificate.current();
  const calleeWorkload = { keyFile: before.keyFile, workloadCertificate: { caPem: ca.pem, current: () => current } };
  const pair = await startPair(t, ca, { appPort: app.port, calleeWorkload });
  t.is((await viaProxy(pair.caller.ports.outbound, '/before')).status, 502);
  t.is((await pair.callerTail.next((r) => r['url.path'] === '/before'))['error.type'], 'peer_untrusted');
  current = { chainPem: `-----BEGIN CERTIFICATE-----\n${renewed.toString('base64')}\n-----END CERTIFICATE-----\n`, spiffeId: INVENTORY };
  t.is((await viaProxy(pair.caller.ports.outbound, '/after')).status, 200);
  t.like(await pair.callerTail.next((r) => r['url.path'] === '/after'), { 'audit.peer.verified': true, 'peer.identity': INVENTORY });
});
