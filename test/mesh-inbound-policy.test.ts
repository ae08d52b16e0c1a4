import test, { type ExecutionContext } from 'ava';
import net from 'node:net';
import http from 'node:http';
import { listen, closeServer, request, startUpstream } from './helpers/net.js';
import { followTail, metricValue, scrape, startTestSidecar } from './helpers/sidecar.js';
import { createTestMeshCa, type TestMeshCa } from './helpers/mesh-ca.js';
import { directoryOf, meshWorkload, spiffe } from './helpers/mesh-workload.js';
import { echoClient, startEchoServer, unary } from './helpers/grpc.js';
import type { SidecarConfig } from '../proxy/config.js';
import { parseSidecarConfig } from '../proxy/config.js';

const ORDERS = spiffe('orders');
const INVENTORY = spiffe('inventory');

/** The callee (inventory) under a policy; its directory lists 127.0.0.1 as orders' pod. */
async function startCallee(t: ExecutionContext, ca: TestMeshCa, appPort: number, overrides: Partial<SidecarConfig>) {
  const callee = await startTestSidecar(t, { service: 'inventory', appPort, directory: directoryOf('127.0.0.1', ORDERS, 'orders'), ...(await meshWorkload(t, ca, INVENTORY)), ...overrides });
  return { callee, tail: await followTail(t, callee.ports.admin) };
}

/** A verified caller: orders' sidecar, calling inventory (the callee's inbound port) over mesh mTLS. */
async function startCaller(t: ExecutionContext, ca: TestMeshCa, calleePort: number) {
  return startTestSidecar(t, { service: 'orders', directory: directoryOf('127.0.0.1', INVENTORY, 'inventory'), resolve: new Map([['inventory:80', { host: '127.0.0.1', port: calleePort }]]), ...(await meshWorkload(t, ca, ORDERS)) });
}

const refusals = async (adminPort: number): Promise<number> => metricValue(await scrape(adminPort), 'auditmesh_mesh_tls_failures_total', { direction: 'inbound', reason: 'unverified_peer' });

/** Bytes to a TCP port; resolves with what came back before the close. */
function tcpExchange(port: number, bytes: string, localAddress = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    const socket = net.connect({ port, host: '127.0.0.1', localAddress }, () => socket.write(bytes));
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      if (Buffer.concat(chunks).toString().includes('\n')) socket.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => resolve(Buffer.concat(chunks).toString()));
  });
}

test('--inbound-policy is a flag and AUDITMESH_INBOUND_POLICY, permissive by default, checked at boot', (t) => {
  t.is(parseSidecarConfig([], {}).inboundPolicy, 'permissive');
  t.is(parseSidecarConfig(['--inbound-policy', 'verified'], {}).inboundPolicy, 'verified');
  t.is(parseSidecarConfig([], { AUDITMESH_INBOUND_POLICY: 'mesh-verified' }).inboundPolicy, 'mesh-verified');
  t.throws(() => parseSidecarConfig(['--inbound-policy', 'strict'], {}), { message: /--inbound-policy/ });
});

test('verified: a plaintext HTTP/1.1 caller gets 403 and a record; a caller proven over mTLS passes', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  const { callee, tail } = await startCallee(t, ca, app.port, { inboundPolicy: 'verified' });
  const refused = await request(callee.ports.inbound!, { path: '/plain', headers: { 'x-auditmesh-client': 'orders' } });
  t.is(refused.status, 403);
  t.is(refused.headers['x-auditmesh-error'], 'AUDITMESH_UNVERIFIED_PEER');
  t.is(app.seen.length, 0);
  const rec = await tail.next((r) => r['url.path'] === '/plain');
  t.like(rec, { 'error.type': 'unverified_peer', 'http.response.status_code': 403, 'audit.peer.verified': false, 'audit.claimed.client': 'orders' });
  t.is(await refusals(callee.ports.admin), 1);

  const caller = await startCaller(t, ca, callee.ports.inbound!);
  const ok = await request(caller.ports.outbound, { path: 'http://inventory/meshed', headers: { host: 'inventory' } });
  t.is(ok.status, 200);
  t.is(app.seen.length, 1);
  t.like(await tail.next((r) => r['url.path'] === '/meshed'), { 'audit.peer.verified': true, 'peer.identity': ORDERS });
});

test('verified: a plaintext gRPC caller gets PERMISSION_DENIED and a record', async (t) => {
  const ca = await createTestMeshCa();
  const echo = await startEchoServer(t);
  const { callee, tail } = await startCallee(t, ca, echo.port, { inboundPolicy: 'verified' });
  const { error } = await unary(echoClient(t, callee.ports.inbound!), { text: 'hi' });
  t.is(error?.code, 7, 'PERMISSION_DENIED');
  t.is(echo.log.metadata.length, 0);
  const rec = await tail.next((r) => r['rpc.method'] === 'Unary');
  t.like(rec, { 'error.type': 'unverified_peer', 'rpc.grpc.status_code': 7, 'audit.peer.verified': false });
  t.is(await refusals(callee.ports.admin), 1);
});

test('verified: a plaintext TCP caller is closed before the app, with a record', async (t) => {
  const ca = await createTestMeshCa();
  let appConnections = 0;
  const app = net.createServer((s) => (appConnections++, s.end('hello from app\n')));
  const appPort = await listen(app);
  t.teardown(() => closeServer(app));
  const { callee, tail } = await startCallee(t, ca, appPort, { inboundPolicy: 'verified', detectTimeoutMs: 100 });
  t.is(await tcpExchange(callee.ports.inbound!, '\x00\x01binary'), '');
  t.is(appConnections, 0);
  const rec = await tail.next((r) => r['audit.kind'] === 'tcp');
  t.like(rec, { 'error.type': 'unverified_peer', 'audit.peer.verified': false, 'audit.direction': 'inbound' });
  t.is(await refusals(callee.ports.admin), 1);
});

test('mesh-verified: plaintext from an address the directory lists is refused, from outside the mesh admitted', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  const { callee, tail } = await startCallee(t, ca, app.port, { inboundPolicy: 'mesh-verified' });
  // 127.0.0.1 is listed (orders' pod): its plaintext is a meshed caller skipping mTLS.
  t.is((await request(callee.ports.inbound!, { path: '/from-mesh' })).status, 403);
  const refused = await tail.next((r) => r['url.path'] === '/from-mesh');
  t.like(refused, { 'error.type': 'unverified_peer', 'audit.peer.verified': false });
  t.regex(refused['audit.error_message']!, /127\.0\.0\.1.*mesh-verified/);
  // 127.0.0.2 is not listed: a caller from outside the mesh.
  const outside = await new Promise<number>((resolve, reject) => {
    http.get({ host: '127.0.0.1', port: callee.ports.inbound!, path: '/from-outside', localAddress: '127.0.0.2', agent: false }, (res) => (res.resume(), resolve(res.statusCode ?? 0))).on('error', reject);
  });
  t.is(outside, 200);
  t.like(await tail.next((r) => r['url.path'] === '/from-outside'), { 'audit.peer.verified': false, 'client.address': '127.0.0.2' });
  t.is(app.seen.length, 1);
  t.is(await refusals(callee.ports.admin), 1);

  const caller = await startCaller(t, ca, callee.ports.inbound!);
  t.is((await request(caller.ports.outbound, { path: 'http://inventory/meshed', headers: { host: 'inventory' } })).status, 200);
  t.like(await tail.next((r) => r['url.path'] === '/meshed'), { 'audit.peer.verified': true, 'peer.identity': ORDERS });
});

test('permissive (the default) admits plaintext callers, recorded unverified', async (t) => {
  const ca = await createTestMeshCa();
  const app = await startUpstream();
  t.teardown(app.close);
  const { callee, tail } = await startCallee(t, ca, app.port, {});
  t.is((await request(callee.ports.inbound!, { path: '/open' })).status, 200);
  t.like(await tail.next((r) => r['url.path'] === '/open'), { 'audit.peer.verified': false });
  t.is(await refusals(callee.ports.admin), 0);
});
