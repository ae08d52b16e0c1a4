import test from 'ava';
import http from 'node:http';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { takeSseEvents } from '../control/cli/sse.js';
import type { AuditRecord } from '../ledger/record.js';
import { heartbeatSigningInput } from '../ledger/chain.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { journalShipment, openSync, startTestCollector, type JournalShipment, type SyncPeer, type TestCollector } from './helpers/collector.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { metricValue, tempDir } from './helpers/sidecar.js';

const T0 = Date.parse('2026-01-01T00:00:00Z');

/**
 * Two sides of the same calls: `frontend` (outbound) and `inventory` (inbound) each record call i
 * with request id req-i and trace id trace-i; every fifth call failed with a 503.
 */
function callRecord(side: 'frontend' | 'inventory', i: number): AuditRecord {
  const status = i % 5 === 4 ? 503 : 200;
  return makeRecord(i, {
    'audit.service': side,
    'peer.service': side === 'frontend' ? 'inventory' : 'frontend',
    'audit.direction': side === 'frontend' ? 'outbound' : 'inbound',
    'audit.start_unix_ms': T0 + i * 1000 + (side === 'frontend' ? 0 : 1),
    'audit.request_id': `req-${i}`,
    'trace.id': `trace-${i}`.padEnd(32, '0'),
    'http.response.status_code': status,
  });
}

async function sideShipment(t: ExecutionContext, side: 'frontend' | 'inventory', key: SigningKey): Promise<JournalShipment> {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, maxBatchRecords: 4, signingKey: key }, 2, 10, (i) => callRecord(side, i));
  return journalShipment(journalDir, key, `${side}-pod`, side);
}

async function ship(t: ExecutionContext, c: TestCollector, s: JournalShipment): Promise<SyncPeer> {
  const peer = openSync(t, c.grpcAddress, c.token);
  peer.send({ hello: s.hello });
  await peer.next();
  for (const segment of s.segments) peer.send({ segment });
  for (let i = 0; i < s.segments.length; i++) t.like(await peer.next(), { body: 'ack' });
  return peer;
}

async function get(c: TestCollector, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(c.httpUrl + path, c.readAuth);
  return { status: res.status, body: await res.text() };
}

async function query(c: TestCollector, params: string): Promise<Array<AuditRecord & { 'audit.seq': number; 'audit.sidecar_id': string }>> {
  const { status, body } = await get(c, `/v1/records?${params}`);
  if (status !== 200) throw new Error(`${status} ${body}`);
  return body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l));
}

/** A collector holding both sidecars' journals, shipped concurrently. */
async function twoSidecars(t: ExecutionContext): Promise<TestCollector> {
  const c = await startTestCollector(t);
  const [a, b] = await Promise.all([sideShipment(t, 'frontend', ephemeralSigningKey()), sideShipment(t, 'inventory', ephemeralSigningKey())]);
  await Promise.all([ship(t, c, a), ship(t, c, b)]);
  return c;
}

test('two sidecars ship concurrently; the query by correlation id returns both sides of the call, newest first', async (t) => {
  const c = await twoSidecars(t);
  const both = await query(c, 'correlation_id=req-7');
  t.deepEqual(both.map((r) => [r['audit.service'], r['audit.direction'], r['audit.sidecar_id']]), [
    ['inventory', 'inbound', 'inventory-pod'],
    ['frontend', 'outbound', 'frontend-pod'],
  ]);
  t.deepEqual((await query(c, `trace_id=${'trace-7'.padEnd(32, '0')}`)).map((r) => r['audit.request_id']), ['req-7', 'req-7']);
  t.is((await query(c, 'limit=1000')).length, 40);
  t.deepEqual(
    c.sidecars().map((s) => [s.id, s.last_seq, s.verified]).sort(),
    [
      ['frontend-pod', 20, true],
      ['inventory-pod', 20, true],
    ],
  );
});

test('service (either side), peer, time range, status and limit filter the records', async (t) => {
  const c = await twoSidecars(t);
  // Each side records every call: a service is on one side or the other of all 40 records.
  t.is((await query(c, 'service=inventory&limit=1000')).length, 40);
  t.is((await query(c, 'service=frontend&peer=inventory&limit=1000')).length, 40);
  t.is((await query(c, 'service=frontend&peer=pricing')).length, 0);
  const errors = await query(c, 'status=error&limit=1000');
  t.deepEqual([...new Set(errors.map((r) => r['audit.request_id']))].sort(), ['req-14', 'req-19', 'req-4', 'req-9']);
  t.is((await query(c, 'status=5xx&limit=1000')).length, 8);
  // Either side: frontend's own 4 failed calls and inventory's 4 records of them.
  t.is((await query(c, 'status=503&service=frontend')).length, 8);
  t.is((await query(c, 'status=ok&limit=1000')).length, 32);
  const window = await query(c, `since=${T0 + 2000}&until=${new Date(T0 + 4001).toISOString()}`);
  t.deepEqual(window.map((r) => r['audit.request_id']), ['req-4', 'req-4', 'req-3', 'req-3', 'req-2', 'req-2']);
  const newest = await query(c, 'limit=3');
  t.deepEqual(newest.map((r) => r['audit.start_unix_ms']), [T0 + 19001, T0 + 19000, T0 + 18001]);
});

test('bad query parameters get a 400 that says what is wrong', async (t) => {
  const c = await twoSidecars(t);
  for (const [params, message] of [
    ['limit=0', /limit: expected a whole number from 1 to 10000/],
    ['since=yesterday', /since: expected a duration back from now/],
    ['status=7xx', /status: expected 5xx/],
    ['colour=red', /unknown parameter "colour"/],
    ['service=', /service: empty value/],
    [`since=${T0 + 5000}&until=${T0}`, /since is after until/],
  ] as const) {
    const { status, body } = await get(c, `/v1/records?${params}`);
    t.is(status, 400, params);
    t.regex(body, message);
  }
  t.is((await get(c, '/livez')).status, 200);
  t.is((await get(c, '/readyz')).status, 200);
});

test('/v1/tail streams each record as it is stored, one event each', async (t) => {
  const c = await startTestCollector(t);
  const events: string[] = [];
  const controller = new AbortController();
  t.teardown(() => controller.abort());
  await new Promise<void>((resolve, reject) => {
    http
      .get(`${c.httpUrl}/v1/tail`, { ...c.readAuth, signal: controller.signal }, (res) => {
        let buffer = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          const { data, rest } = takeSseEvents(buffer + chunk);
          buffer = rest;
          events.push(...data);
        });
        res.on('error', () => {});
        resolve();
      })
      .on('error', (err) => (controller.signal.aborted ? undefined : reject(err)));
  });
  await ship(t, c, await sideShipment(t, 'frontend', ephemeralSigningKey()));
  const deadline = Date.now() + 30_000;
  while (events.length < 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  const records = events.map((d) => JSON.parse(d) as AuditRecord & { 'audit.seq': number });
  t.deepEqual(records.map((r) => r['audit.seq']), Array.from({ length: 20 }, (_, i) => i + 1));
});

test('a sidecar whose signed heartbeats stop shows as stale in /v1/sidecars and the gauge; a badly signed heartbeat is refused', async (t) => {
  // Generous: a loaded machine may stall the event loop, and a stall must not read as stale.
  const intervalMs = 1000;
  const c = await startTestCollector(t, { heartbeatIntervalMs: intervalMs });
  const key = ephemeralSigningKey();
  const s = await sideShipment(t, 'frontend', key);
  const peer = await ship(t, c, s);
  const last = s.links.at(-1)!;
  const heartbeat = (unixMs: number): object => ({ unix_ms: unixMs, last_batch: last.batch, head: last.head, sig: key.sign(heartbeatSigningInput(s.hello.sidecar_id, unixMs, last.batch, last.head)) });
  const sidecar = async (): Promise<{ heartbeat_current: boolean; last_heartbeat: string | null }> => JSON.parse((await get(c, '/v1/sidecars')).body)[0];
  const gauge = async (state: string): Promise<number> => metricValue((await get(c, '/metrics')).body, 'auditmesh_collector_sidecars', { state });
  t.like(await sidecar(), { heartbeat_current: false, last_heartbeat: null });
  t.is(await gauge('stale'), 0, 'never seen alive: not stale');

  // Heartbeats keep coming: current. (Each wait is for a condition, with a generous bound.)
  const beating = setInterval(() => peer.send({ heartbeat: heartbeat(Date.now()) }), intervalMs / 2);
  t.teardown(() => clearInterval(beating));
  await until(async () => (await sidecar()).heartbeat_current && (await gauge('current')) === 1);
  // They stop while the stream stays open: stale after 3 intervals, and counted.
  clearInterval(beating);
  await until(async () => !(await sidecar()).heartbeat_current);
  await until(async () => (await gauge('stale')) === 1 && (await gauge('current')) === 0);

  peer.send({ heartbeat: { ...heartbeat(Date.now()), sig: 'ab'.repeat(64) } });
  const refusal = await peer.next();
  t.like(refusal, { body: 'refusal', refusal: { code: 'bad-signature' } });
});

async function until(cond: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
