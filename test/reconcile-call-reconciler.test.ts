import test from 'ava';
import type { ExecutionContext } from 'ava';
import { open, type RootDatabase } from 'lmdb';
import { LMDB_WRITER_OPTIONS } from '../ledger/lmdb-writer.js';
import { createCollectorMetrics, type CollectorMetrics } from '../control/collector/collector-metrics.js';
import { createCallReconciler, RECONCILED_DB, RECONCILE_OPEN_DB, type CallReconciler } from '../control/collector/reconcile/call-reconciler.js';
import type { CallEnd } from '../control/collector/reconcile/call-end.js';
import type { ReconciledCall } from '../control/collector/reconcile/reconciled-call.js';
import type { StoredRun } from '../control/collector/ingest/sidecar-chain.js';
import { metricValue, tempDir } from './helpers/sidecar.js';

/**
 * The reconciler on its own, on a real LMDB environment opened as the collector opens its store:
 * what it decides, what it stores (the exact values a query reads back), what it keeps open, the
 * metrics it counts. The end-to-end tests (collector-reconciliation.test.ts) cover real sidecars;
 * these pin every decision path, so the reconciler can be made cheaper without changing what it does.
 */

const T = 1_700_000_000_000;

interface Setup {
  env: RootDatabase;
  metrics: CollectorMetrics;
  rec: CallReconciler;
  clock: { t: number };
  logged: string[];
  dir: string;
}

async function setup(t: ExecutionContext, opts: { dir?: string; graceMs?: number; services?: string[]; mesh?: string[] } = {}): Promise<Setup> {
  const dir = opts.dir ?? (await tempDir(t));
  const env = open({ path: dir, maxDbs: 64, ...LMDB_WRITER_OPTIONS });
  const metrics = createCollectorMetrics({ storeBytes: () => 0, sidecars: () => ({ current: 0, stale: 0 }) });
  const clock = { t: T + 10_000 };
  const logged: string[] = [];
  const mesh = new Set(opts.mesh ?? []);
  const rec = createCallReconciler({
    env,
    graceMs: opts.graceMs ?? 1_000,
    metrics: { reconciled: metrics.reconciled, disagreements: metrics.disagreements, pending: metrics.reconcilePending },
    services: () => opts.services ?? ['frontend', 'inventory'],
    meshAddress: (ip) => mesh.has(ip),
    log: (_level, msg) => void logged.push(msg),
    now: () => clock.t,
  });
  let closed = false;
  t.teardown(async () => {
    if (!closed) await rec.close();
    await env.close();
  });
  const close = rec.close.bind(rec);
  rec.close = async () => {
    closed = true;
    await close();
  };
  return { env, metrics, rec, clock, logged, dir };
}

/** An end as ingest's workers read it from a record. */
function end(direction: 'inbound' | 'outbound', seq: number, id: string, over: Partial<CallEnd> = {}): CallEnd {
  const e: CallEnd = { seq, direction, kind: 'http', service: direction === 'outbound' ? 'frontend' : 'inventory', requestId: id, traceId: `trace-${id}`, spanId: `span-${id}`, method: 'GET', path: `/items/${id}`, status: 200, requestBytes: 0, responseBytes: 105, start: T + seq, duration: 5 };
  if (direction === 'outbound') {
    e.peer = 'inventory';
    e.server = '10.0.5.2:8080';
  } else {
    e.peer = 'frontend';
    e.claimedClient = 'frontend';
    e.client = '10.0.3.17';
  }
  return { ...e, ...over };
}

/** A stored run of sidecar `id` (service `service`) with these ends in batches of `per`. */
function run(id: string, service: string, ends: CallEnd[], opts: { identity?: string; incarnation?: string; per?: number } = {}): StoredRun {
  const per = opts.per ?? 2;
  const batches = [];
  for (let i = 0; i < ends.length; i += per) batches.push({ calls: ends.slice(i, i + per), ...(opts.identity === undefined ? {} : { identity: opts.identity }) });
  return { sidecar: { id, service, ...(opts.incarnation === undefined ? {} : { incarnation: opts.incarnation }) }, links: [], batches } as unknown as StoredRun;
}

const out = (seq: number, id: string, over?: Partial<CallEnd>): CallEnd => end('outbound', seq, id, over);
const inn = (seq: number, id: string, over?: Partial<CallEnd>): CallEnd => end('inbound', seq, id, over);

/** Every stored decided call, in key order, with its key. */
function stored(env: RootDatabase): Array<{ key: unknown; value: ReconciledCall }> {
  const db = env.openDB<ReconciledCall, [number, string, number]>(RECONCILED_DB, { encoding: 'msgpack', sharedStructuresKey: Symbol.for('structures') });
  return Array.from(db.getRange(), ({ key, value }) => ({ key, value: { ...value } }));
}

async function committed(env: RootDatabase): Promise<void> {
  await env.committed;
  await env.flushed;
}

test('two ends of a call pair matched across runs and sidecars; the stored value names each end by sidecar, chain and seq', async (t) => {
  const { env, rec, metrics } = await setup(t);
  rec.observe(run('frontend-0', 'frontend', [out(7, 'a')], { identity: 'spiffe://x/frontend', incarnation: 'pod-1' }));
  t.is(rec.openCalls, 1);
  rec.observe(run('inventory-0', 'inventory', [inn(3, 'a', { start: T + 8, duration: 2 })]));
  t.is(rec.openCalls, 0);
  await committed(env);
  const expected: ReconciledCall = {
    state: 'matched',
    kind: 'http',
    'audit.request_id': 'a',
    'trace.id': 'trace-a',
    'span.id': 'span-a',
    caller_service: 'frontend',
    callee_service: 'inventory',
    start_unix_ms: T + 7,
    reconciled_unix_ms: T + 10_000,
    'http.request.method': 'GET',
    'url.path': '/items/a',
    caller: { 'audit.sidecar_id': 'frontend-0', 'audit.seq': 7, chain: 'frontend-0@pod-1', service: 'frontend', start_unix_ms: T + 7, 'audit.identity': 'spiffe://x/frontend', status: 200, request_bytes: 0, response_bytes: 105, duration_ms: 5 },
    callee: { 'audit.sidecar_id': 'inventory-0', 'audit.seq': 3, chain: 'inventory-0', service: 'inventory', start_unix_ms: T + 8, status: 200, request_bytes: 0, response_bytes: 105, duration_ms: 2 },
  };
  t.deepEqual(stored(env), [{ key: [T + 7, 'frontend-0@pod-1', 7], value: expected }]);
  t.deepEqual(rec.query({}), [expected]);
  t.deepEqual(rec.query({ state: 'matched', service: 'inventory' }), [expected]);
  t.deepEqual(rec.query({ state: 'mismatched' }), []);
  t.deepEqual(rec.query({ sinceUnixMs: T + 8 }), []);
  const text = await metrics.registry.metrics();
  t.is(metricValue(text, 'auditmesh_collector_reconciled_total', { state: 'matched' }), 1);
  t.is(metricValue(text, 'auditmesh_collector_reconcile_pending'), 0);
});

test('the callee end may arrive first, in the same run as others; a gRPC call stores rpc.service and rpc.method', async (t) => {
  const { env, rec } = await setup(t);
  const g = { kind: 'grpc' as const, method: 'shop.Inventory', path: 'Reserve', status: undefined, grpcStatus: 0 };
  rec.observe(run('inventory-0', 'inventory', [inn(1, 'g', g), inn(2, 'h'), out(3, 'x', { service: 'inventory', peer: 'frontend' })], { per: 1 }));
  rec.observe(run('frontend-0', 'frontend', [out(1, 'g', g), inn(2, 'x', { service: 'frontend', peer: 'inventory', claimedClient: 'inventory' })], { per: 5 }));
  await committed(env);
  const calls = stored(env).map(({ key, value }) => [key, value.state, value.kind, value['rpc.service'], value['rpc.method'], value['http.request.method'], value.caller?.['audit.sidecar_id'], value.callee?.['audit.sidecar_id'], value.caller?.grpc_status, value.differs]);
  t.deepEqual(calls, [
    [[T + 1, 'frontend-0', 1], 'matched', 'grpc', 'shop.Inventory', 'Reserve', undefined, 'frontend-0', 'inventory-0', 0, undefined],
    // Keyed by the earlier start (the callee's here) and the caller end's chain and seq.
    [[T + 2, 'inventory-0', 3], 'matched', 'http', undefined, undefined, 'GET', 'inventory-0', 'frontend-0', undefined, undefined],
  ]);
  t.is(rec.openCalls, 1, 'h is still open');
  t.deepEqual(
    rec.query({ state: 'pending' }).map((c) => [c.state, c['audit.request_id'], c.caller, c.callee?.['audit.seq'], c.caller_service, c.callee_service, c.reconciled_unix_ms]),
    [['pending', 'h', undefined, 2, 'frontend', 'inventory', T + 10_000]],
  );
});

test('ends that disagree are mismatched with every field named; the disagreement metric counts the edge', async (t) => {
  const { env, rec, metrics } = await setup(t);
  rec.observe(run('frontend-0', 'frontend', [out(1, 'm', { status: 200, responseBytes: 10, errorType: undefined, path: '/a' })]));
  rec.observe(run('inventory-0', 'inventory', [inn(1, 'm', { status: 503, responseBytes: 11, errorType: 'reset', path: '/b', claimedClient: 'billing', start: T - 5_000, duration: 1 })], { identity: 'spiffe://x/inventory' }));
  await committed(env);
  const [{ value }] = stored(env);
  t.is(value.state, 'mismatched');
  t.deepEqual(value.differs, [
    { field: 'method', caller: 'GET /a', callee: 'GET /b' },
    { field: 'status', caller: 200, callee: 503 },
    { field: 'error', caller: null, callee: 'reset' },
    { field: 'response_bytes', caller: 10, callee: 11 },
    { field: 'identities', caller: { service: 'frontend', names_callee: 'inventory', identity: undefined }, callee: { service: 'inventory', names_caller: 'billing', identity: 'spiffe://x/inventory' } },
    { field: 'timing', caller: { start_unix_ms: T + 1, end_unix_ms: T + 6 }, callee: { start_unix_ms: T - 5_000, end_unix_ms: T - 4_999 } },
  ]);
  t.is(value.start_unix_ms, T - 5_000);
  t.is(value['url.path'], '/a', 'the method and path are the caller end’s');
  t.is(value.callee?.error_type, 'reset');
  const text = await metrics.registry.metrics();
  t.is(metricValue(text, 'auditmesh_collector_reconciled_total', { state: 'mismatched' }), 1);
  t.is(metricValue(text, 'auditmesh_collector_reconcile_disagreements_total', { state: 'mismatched', caller: 'frontend', callee: 'inventory' }), 1);
});

test('a second call under one key (a retry reusing the ids) pairs in arrival order', async (t) => {
  const { env, rec } = await setup(t);
  rec.observe(run('frontend-0', 'frontend', [out(1, 'r', { status: 503 }), out(2, 'r', { status: 200 })]));
  t.is(rec.openCalls, 1);
  t.is(rec.query({ state: 'pending' }).length, 2);
  rec.observe(run('inventory-0', 'inventory', [inn(1, 'r', { status: 503 })]));
  t.is(rec.openCalls, 1);
  rec.observe(run('inventory-0', 'inventory', [inn(2, 'r', { status: 200 }), inn(3, 'r', { status: 200 })]));
  t.is(rec.openCalls, 1, 'the third inbound end waits');
  await committed(env);
  t.deepEqual(
    stored(env).map(({ value }) => [value.state, value.caller?.['audit.seq'], value.callee?.['audit.seq']]),
    [
      ['matched', 1, 1],
      ['matched', 2, 2],
    ],
  );
  t.deepEqual(
    rec.query({ state: 'pending' }).map((c) => c.callee?.['audit.seq']),
    [3],
  );
});

test('after the grace period one-sided calls are decided: caller-only or callee-only when the other end is a known sidecar or a meshed address, else unpaired-external', async (t) => {
  const { env, rec, clock, metrics } = await setup(t, { services: ['frontend', 'inventory'], mesh: ['10.0.9.9', '10.0.7.7'] });
  rec.observe(
    run('frontend-0', 'frontend', [
      out(1, 'known-peer'),
      out(2, 'unknown-peer', { peer: 'payments', server: 'payments:443' }),
      out(3, 'meshed-server', { peer: undefined, server: '10.0.9.9:8080' }),
      out(4, 'no-peer', { peer: undefined, server: undefined }),
      out(5, 'ipv6', { peer: undefined, server: '[fd00::1]:80' }),
    ]),
  );
  clock.t += 600;
  rec.observe(
    run('inventory-0', 'inventory', [
      inn(1, 'claimed-known', { start: T + 101 }),
      inn(2, 'claimed-unknown', { start: T + 102, claimedClient: 'outsider', peer: undefined, client: '192.0.2.1' }),
      inn(3, 'peer-known', { start: T + 103, claimedClient: undefined, peer: 'frontend' }),
      inn(4, 'meshed-client', { start: T + 104, claimedClient: undefined, peer: undefined, client: '10.0.7.7' }),
      inn(5, 'nothing', { start: T + 105, claimedClient: undefined, peer: undefined, client: undefined }),
    ]),
  );
  t.is(rec.openCalls, 10);
  clock.t += 500;
  rec.sweep();
  t.is(rec.openCalls, 5, 'only those past their grace period are decided');
  await committed(env);
  t.deepEqual(
    stored(env).map(({ value }) => [value['audit.request_id'], value.state, value.callee_service, value.reconciled_unix_ms]),
    [
      ['known-peer', 'caller-only', 'inventory', T + 11_100],
      ['unknown-peer', 'unpaired-external', 'payments', T + 11_100],
      ['meshed-server', 'caller-only', '10.0.9.9:8080', T + 11_100],
      ['no-peer', 'unpaired-external', '', T + 11_100],
      ['ipv6', 'unpaired-external', '[fd00::1]:80', T + 11_100],
    ],
  );
  clock.t += 600;
  rec.sweep();
  t.is(rec.openCalls, 0);
  await committed(env);
  t.deepEqual(
    stored(env)
      .slice(5)
      .map(({ value }) => [value['audit.request_id'], value.state, value.caller_service, value.caller, value.callee?.['audit.sidecar_id']]),
    [
      ['claimed-known', 'callee-only', 'frontend', undefined, 'inventory-0'],
      ['claimed-unknown', 'unpaired-external', 'outsider', undefined, 'inventory-0'],
      ['peer-known', 'callee-only', 'frontend', undefined, 'inventory-0'],
      ['meshed-client', 'callee-only', '', undefined, 'inventory-0'],
      ['nothing', 'unpaired-external', '', undefined, 'inventory-0'],
    ],
  );
  t.deepEqual(
    rec.query({}).map((c) => c['audit.request_id']),
    ['nothing', 'meshed-client', 'peer-known', 'claimed-unknown', 'claimed-known', 'ipv6', 'no-peer', 'meshed-server', 'unknown-peer', 'known-peer'],
    'newest first',
  );
  t.deepEqual(
    rec.query({ service: 'payments' }).map((c) => c['audit.request_id']),
    ['unknown-peer'],
  );
  const text = await metrics.registry.metrics();
  t.is(metricValue(text, 'auditmesh_collector_reconciled_total', { state: 'caller-only' }), 2);
  t.is(metricValue(text, 'auditmesh_collector_reconciled_total', { state: 'callee-only' }), 3);
  t.is(metricValue(text, 'auditmesh_collector_reconciled_total', { state: 'unpaired-external' }), 5);
  t.is(metricValue(text, 'auditmesh_collector_reconcile_disagreements_total', { state: 'caller-only', caller: 'frontend', callee: 'inventory' }), 1);
  t.is(metricValue(text, 'auditmesh_collector_reconcile_disagreements_total', { state: 'caller-only', caller: 'frontend', callee: 'unknown' }), 1, 'an address is no label');
  t.is(metricValue(text, 'auditmesh_collector_reconcile_disagreements_total', { state: 'callee-only', caller: 'frontend', callee: 'inventory' }), 2);
  t.is(metricValue(text, 'auditmesh_collector_reconcile_pending'), 0);
});

test('open calls are saved on close and taken up at the next start, keeping their arrival; their other end still pairs', async (t) => {
  const first = await setup(t, { graceMs: 60_000 });
  first.rec.observe(run('frontend-0', 'frontend', [out(1, 'p'), out(2, 'q')]));
  first.rec.observe(run('inventory-0', 'inventory', [inn(9, 'q'), inn(10, 'q')]));
  t.is(first.rec.openCalls, 2);
  await first.rec.close();
  t.is(first.rec.openCalls, 0);
  const saved = first.env.openDB(RECONCILE_OPEN_DB, { encoding: 'msgpack' });
  t.deepEqual(
    Array.from(saved.getRange(), ({ key }) => key),
    ['p\u0000trace-p\u0000span-p', 'q\u0000trace-q\u0000span-q'],
  );
  // The saved shape is what a collector of an earlier version takes up, and saved: it stays.
  t.deepEqual(saved.get('q\u0000trace-q\u0000span-q'), { outs: [], ins: [{ end: inn(10, 'q'), sidecarId: 'inventory-0', chain: 'inventory-0' }], arrived: T + 10_000 });
  await first.env.close();

  const again = await setup(t, { dir: first.dir, graceMs: 60_000 });
  t.is(again.rec.openCalls, 2);
  t.deepEqual(
    again.rec.query({ state: 'pending' }).map((c) => [c['audit.request_id'], c.caller?.['audit.seq'] ?? null, c.callee?.['audit.seq'] ?? null]),
    [
      ['p', 1, null],
      ['q', null, 10],
    ],
  );
  again.rec.observe(run('inventory-0', 'inventory', [inn(11, 'p')]));
  t.is(again.rec.openCalls, 1);
  again.clock.t = T + 10_000 + 60_000;
  again.rec.sweep();
  t.is(again.rec.openCalls, 0, 'decided by the arrival it had before the restart');
  await committed(again.env);
  t.deepEqual(
    stored(again.env).map(({ value }) => [value['audit.request_id'], value.state, value.caller?.['audit.seq'] ?? null, value.callee?.['audit.seq'] ?? null]),
    [
      ['p', 'matched', 1, 11],
      ['q', 'matched', 2, 9],
      ['q', 'callee-only', null, 10],
    ],
  );
});

test('batches without calls, and runs without batches, change nothing', async (t) => {
  const { env, rec } = await setup(t);
  rec.observe({ sidecar: { id: 'x', service: 'x' }, links: [], batches: [{}, { calls: [] }] } as unknown as StoredRun);
  rec.observe(run('x', 'x', []));
  rec.sweep();
  await committed(env);
  t.is(rec.openCalls, 0);
  t.deepEqual(stored(env), []);
  t.deepEqual(rec.query({}), []);
});
