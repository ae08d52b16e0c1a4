import test from 'ava';
import tls from 'node:tls';
import { generateKeyPairSync } from 'node:crypto';
import net from 'node:net';
import http from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';
import { closeServer, listen, startUpstream } from './helpers/net.js';
import { createTestMeshCa } from './helpers/mesh-ca.js';
import { directoryOf } from './helpers/mesh-workload.js';
import { INVENTORY, ORDERS, startPair, viaProxy } from './helpers/mesh-pair.js';
import { echoClient, startEchoServer, unary } from './helpers/grpc.js';
import { MESH_ALPN } from '../proxy/mesh/mesh-credentials.js';

// Sidecar-to-sidecar mTLS between two real sidecars: what is carried, and how it is recorded.

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

for (const opaquePort of [false, true]) {
  const where = opaquePort ? ' to a port of --opaque-ports (read for a ClientHello only from a meshed address)' : '';
  test(`opaque TCP (the app's own TLS)${where} between two sidecars is carried inside mTLS and recorded proven at both ends`, async (t) => {
    const ca = await createTestMeshCa();
    // The app's own TLS server, with a certificate of a CA the sidecars know nothing of.
    const appCa = await createTestMeshCa('app CA');
    const { privateKey, publicKey } = generateKeyPairSync('ed25519');
    const der = await appCa.certify(publicKey.export({ format: 'der', type: 'spki' }), 'spiffe://app/tls');
    const app = tls.createServer({ key: privateKey.export({ format: 'pem', type: 'pkcs8' }), cert: `-----BEGIN CERTIFICATE-----\n${der.toString('base64')}\n-----END CERTIFICATE-----\n` }, (s) => s.on('data', (c: Buffer) => s.write(`echo:${c.toString()}`)));
    const appPort = await listen(app);
    t.teardown(() => closeServer(app));
    const { tap, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort, callee: opaquePort ? { opaquePorts: new Set([appPort]) } : {} });
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
}

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

test('a WebSocket session between two sidecars is carried inside mTLS (the http-proxy engine of every upgrade)', async (t) => {
  const ca = await createTestMeshCa();
  const server = http.createServer();
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(`echo:${m.toString()}`)));
  const appPort = await listen(server);
  t.teardown(() => closeServer(server));
  const { tap, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort });
  // As an app whose traffic iptables sends to the outbound listener: origin-form, routed by Host.
  const ws = new WebSocket('ws://inventory/chat', { createConnection: () => net.connect(caller.ports.outbound, '127.0.0.1') });
  await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
  ws.send('secret-frame');
  t.is(await new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString()))), 'echo:secret-frame');
  ws.close();
  const wire = Buffer.concat(tap.sent);
  t.is(wire[0], 0x16);
  t.false(wire.includes('Upgrade: websocket') || wire.includes('upgrade: websocket'), 'no plaintext upgrade on the wire');
  t.like(await callerTail.next((r) => r['audit.kind'] === 'websocket'), { 'peer.identity': INVENTORY, 'audit.peer.verified': true, 'http.response.status_code': 101 });
  t.like(await calleeTail.next((r) => r['audit.kind'] === 'websocket'), { 'peer.identity': ORDERS, 'audit.peer.verified': true, 'http.response.status_code': 101 });
});

test('a CONNECT tunnel to a meshed address is carried inside mTLS and recorded proven at both ends', async (t) => {
  const ca = await createTestMeshCa();
  const app = net.createServer((s) => s.on('data', (c: Buffer) => s.write(`echo:${c.toString()}`)));
  const appPort = await listen(app);
  t.teardown(() => closeServer(app));
  const { tap, callerTail, calleeTail, caller } = await startPair(t, ca, { appPort });
  const answer = await new Promise<string>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: caller.ports.outbound, method: 'CONNECT', path: `127.0.0.1:${tap.port}`, agent: false });
    req.on('connect', (res, socket) => {
      t.is(res.statusCode, 200);
      socket.write('tunnelled-bytes');
      socket.once('data', (c: Buffer) => (resolve(c.toString()), socket.end()));
    });
    req.on('error', reject);
    req.end();
  });
  t.is(answer, 'echo:tunnelled-bytes');
  const wire = Buffer.concat(tap.sent);
  t.is(wire[0], 0x16);
  t.false(wire.includes('tunnelled-bytes'), 'nothing in plaintext on the wire');
  t.like(await callerTail.next((r) => r['audit.kind'] === 'tunnel'), { 'peer.identity': INVENTORY, 'audit.peer.verified': true, 'http.response.status_code': 200 });
  t.like(await calleeTail.next((r) => r['audit.kind'] === 'tcp'), { 'peer.identity': ORDERS, 'audit.peer.verified': true });
});
