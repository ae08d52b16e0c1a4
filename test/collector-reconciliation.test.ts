import test from 'ava';
import type { ExecutionContext } from 'ava';
import net from 'node:net';
import { closeServer, listen, rawExchange, startUpstream } from './helpers/net.js';
import { startTestCollector, type TestCollector } from './helpers/collector.js';
import { eventually, startShippingSidecar } from './helpers/shipping.js';
import { metricValue, startTestSidecar, tempDir } from './helpers/sidecar.js';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runCli } from './helpers/child.js';
import type { ReconciledCall } from '../control/collector/reconcile/reconciled-call.js';

const GRACE_MS = 1_500;

async function reconciliation(c: TestCollector, query = ''): Promise<ReconciledCall[]> {
  const res = await c.get(`/v1/reconciliation${query}`, c.readAuth);
  const body = await res.text();
  if (res.status !== 200) throw new Error(`/v1/reconciliation answered ${res.status}: ${body}`);
  return body
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as ReconciledCall);
}

async function callWith(c: TestCollector, requestId: string): Promise<ReconciledCall | undefined> {
  return (await reconciliation(c)).find((call) => call['audit.request_id'] === requestId);
}

/** A collector, a callee `inventory` and a caller `frontend` whose sidecars both ship to it; the caller reaches the callee's sidecar as inventory:80. */
async function twoSidecars(t: ExecutionContext, opts: { appPort?: number; graceMs?: number; readerTokenFile?: string; to?: (callee: { port: number }) => Promise<number> } = {}) {
  const c = await startTestCollector(t, { token: 'test-token', reconcileGraceMs: opts.graceMs ?? GRACE_MS, ...(opts.readerTokenFile === undefined ? {} : { readerTokenFile: opts.readerTokenFile }) });
  const calleeApp = await startUpstream();
  t.teardown(calleeApp.close);
  const callee = await startShippingSidecar(t, c.grpcAddress, { service: 'inventory', sidecarId: 'inventory-0', appPort: opts.appPort ?? calleeApp.port });
  const port = (await opts.to?.({ port: callee.sidecar.ports.inbound! })) ?? callee.sidecar.ports.inbound!;
  const caller = await startShippingSidecar(t, c.grpcAddress, { service: 'frontend', sidecarId: 'frontend-0', resolve: new Map([['inventory:80', { host: '127.0.0.1', port }]]) });
  const call = (path: string, id: string, host = 'inventory'): Promise<string> =>
    rawExchange(caller.sidecar.ports.outbound, `GET http://${host}${path} HTTP/1.1\r\nHost: ${host}\r\nx-request-id: ${id}\r\nConnection: close\r\n\r\n`);
  return { c, callee, caller, call };
}

test('calls between two real sidecars reconcile matched, with each end named by its sidecar and seq; reads take the credential and scope of /v1/records', async (t) => {
  const readers = join(await tempDir(t), 'readers');
  await writeFile(readers, 'reader-all *\nreader-shop shop\n');
  const { c, call } = await twoSidecars(t, { readerTokenFile: readers });
  c.readAuth.headers.authorization = 'Bearer reader-all';
  c.readerArgs.splice(0, c.readerArgs.length, '--token-file', join(readers + '-all'));
  await writeFile(readers + '-all', 'reader-all\n');
  t.regex(await call('/items/1', 'req-matched'), /^HTTP\/1\.1 200/);
  await eventually('the call reconciled', async () => (await callWith(c, 'req-matched'))?.state === 'matched');
  const rec = (await callWith(c, 'req-matched'))!;
  t.is(rec['http.request.method'], 'GET');
  t.is(rec['url.path'], '/items/1');
  t.is(rec.caller!['audit.sidecar_id'], 'frontend-0');
  t.is(rec.callee!['audit.sidecar_id'], 'inventory-0');
  t.true(Number.isInteger(rec.caller!['audit.seq']) && Number.isInteger(rec.callee!['audit.seq']));
  t.is(rec.differs, undefined);

  const cli = await runCli(['reconcile', '--collector', c.httpUrl, ...c.readerArgs, '--since', '10m', '-o', 'json']);
  t.is(cli.code, 0, cli.stderr);
  const lines = cli.stdout.trim().split('\n').map((l) => JSON.parse(l) as ReconciledCall);
  t.deepEqual(lines.map((l) => [l.state, l['audit.request_id']]), [['matched', 'req-matched']]);
  const table = await runCli(['reconcile', '--collector', c.httpUrl, ...c.readerArgs, '--service', 'inventory']);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /matched\s+GET \/items\/1\s+frontend frontend-0:\d+\s+inventory inventory-0:\d+/);
  t.regex(table.stderr, /1 calls: 1 matched/);
  t.is(metricValue(await (await c.get('/metrics')).text(), 'auditmesh_collector_reconciled_total', { state: 'matched' }), 1);

  t.is((await c.get('/v1/reconciliation')).status, 401);
  // The sidecars' ids name no namespace: a reader of namespace shop sees none of their calls.
  const scoped = await c.get('/v1/reconciliation', { headers: { authorization: 'Bearer reader-shop' } });
  t.is(scoped.status, 200);
  t.is(await scoped.text(), '');
  const bad = await c.get('/v1/reconciliation?state=unhappy', c.readAuth);
  t.is(bad.status, 400);
  t.regex(await bad.text(), /state: expected one of matched, pending, caller-only, callee-only, mismatched, unpaired-external/);
  const usage = await runCli(['reconcile', '--collector', c.httpUrl, '--state', 'unhappy']);
  t.is(usage.code, 2);
});

/** The call goes to a second replica of inventory whose sidecar keeps a journal only: its records never reach the collector (inventory-0 ships, so the collector knows inventory). */
const toSilentReplica = (t: ExecutionContext) => async (): Promise<number> => {
  const app = await startUpstream();
  t.teardown(app.close);
  return (await startTestSidecar(t, { service: 'inventory', sidecarId: 'inventory-1', appPort: app.port })).ports.inbound!;
};

test('a callee whose sidecar never ships its records makes the call caller-only after the grace period; the alert metric counts it per edge and reconcile exits 1', async (t) => {
  const { c, call } = await twoSidecars(t, { to: toSilentReplica(t) });
  const id = 'req-withheld';
  t.regex(await call('/items/2', id), /^HTTP\/1\.1 200/);
  await eventually('the grace period passed', async () => (await callWith(c, id))?.state === 'caller-only');
  const rec = (await callWith(c, id))!;
  t.is(rec.caller!['audit.sidecar_id'], 'frontend-0');
  t.is(rec.callee, undefined);
  const cli = await runCli(['reconcile', '--collector', c.httpUrl, ...c.readerArgs, '--state', 'caller-only', '-o', 'json']);
  t.is(cli.code, 1, cli.stderr);
  t.is(JSON.parse(cli.stdout.trim().split('\n')[0]!).state, 'caller-only');
  const metrics = await (await c.get('/metrics')).text();
  t.is(metricValue(metrics, 'auditmesh_collector_reconciled_total', { state: 'caller-only' }), 1);
  t.is(metricValue(metrics, 'auditmesh_collector_reconcile_disagreements_total', { state: 'caller-only', caller: 'frontend', callee: 'inventory' }), 1);
});

test('a call inside the grace period is pending and never fails reconcile; it stays pending across a collector restart and is decided after it', async (t) => {
  const { c, call } = await twoSidecars(t, { graceMs: 600_000, to: toSilentReplica(t) });
  await call('/items/4', 'req-pending');
  await eventually('the caller end arrived', async () => (await callWith(c, 'req-pending'))?.state === 'pending');
  const cli = await runCli(['reconcile', '--collector', c.httpUrl, ...c.readerArgs, '-o', 'json']);
  t.is(cli.code, 0, cli.stderr);
  t.deepEqual(cli.stdout.trim().split('\n').map((l) => JSON.parse(l).state), ['pending']);
  t.is((await reconciliation(c, '?state=matched')).length, 0);

  await c.close();
  const again = await startTestCollector(t, { token: 'test-token', storeDir: c.storeDir, reconcileGraceMs: 600_000 });
  t.is((await callWith(again, 'req-pending'))?.state, 'pending', 'the open call was kept in the store');
  again.reconciler.sweep();
  t.is((await callWith(again, 'req-pending'))?.state, 'pending', 'its deadline is the one it had');
  await again.close();
  const shorter = await startTestCollector(t, { token: 'test-token', storeDir: c.storeDir, reconcileGraceMs: 1 });
  await eventually('decided', async () => (await callWith(shorter, 'req-pending'))?.state === 'caller-only');
});

test('an upstream that resets mid-body makes the two ends see different outcomes: mismatched, the field named', async (t) => {
  // The app resets the connection mid-way through the request body: its sidecar records the reset, and answers the caller itself.
  const resetting = net.createServer((socket) => socket.once('data', () => socket.resetAndDestroy()));
  const appPort = await listen(resetting);
  t.teardown(() => closeServer(resetting));
  const { c, caller } = await twoSidecars(t, { appPort });
  const body = 'y'.repeat(256 * 1024);
  await rawExchange(caller.sidecar.ports.outbound, `POST http://inventory/items/3 HTTP/1.1\r\nHost: inventory\r\nx-request-id: req-reset\r\ncontent-length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
  await eventually('the call reconciled', async () => {
    const s = (await callWith(c, 'req-reset'))?.state;
    return s !== undefined && s !== 'pending';
  });
  const rec = (await callWith(c, 'req-reset'))!;
  t.is(rec.state, 'mismatched');
  // The callee's sidecar saw the reset and answered 502 itself; the caller saw a clean 502.
  t.is(rec.caller!.status, 502);
  t.is(rec.callee!.status, 502);
  t.deepEqual(rec.differs?.find((d) => d.field === 'error'), { field: 'error', caller: null, callee: 'reset' });
  const cli = await runCli(['reconcile', '--collector', c.httpUrl, ...c.readerArgs]);
  t.is(cli.code, 1);
  t.regex(cli.stdout, /mismatched/);
});

test('a call from outside the mesh (no sidecar of the caller) is unpaired-external, not a failure', async (t) => {
  const { c, callee } = await twoSidecars(t);
  await rawExchange(callee.sidecar.ports.inbound!, 'GET /from-outside HTTP/1.1\r\nHost: inventory\r\nx-request-id: req-external\r\nConnection: close\r\n\r\n');
  await eventually('the call decided', async () => (await callWith(c, 'req-external'))?.state === 'unpaired-external');
  const cli = await runCli(['reconcile', '--collector', c.httpUrl, ...c.readerArgs]);
  t.is(cli.code, 0, cli.stderr);
});
