import test from 'ava';
import http from 'node:http';
import type { ExecutionContext } from 'ava';
import { startTestCollector, type TestCollector } from './helpers/collector.js';
import { startRelay } from './helpers/sync-peer.js';
import { eventually, sidecarMetric, startShippingSidecar, type ShippingSidecar } from './helpers/shipping.js';
import { verifyDir } from './helpers/journal.js';
import { runCli } from './helpers/child.js';
import { dirname, join } from 'node:path';
import { cp, writeFile } from 'node:fs/promises';
import type { SidecarConfig } from '../proxy/config.js';
import { MAX_QUERY_LIMIT } from '../control/collector/api/record-query.js';

/**
 * The shipper against the real collector (control/collector/), end to end: the faults of issue 5.
 * Cheap batches (one record each, --batch-max-records 1) make thousands of links in seconds.
 */

interface StoredView {
  ids: string[];
  last_batch: number;
  chain_head: string;
  verified: boolean;
}

async function collectorView(collector: TestCollector, sidecarId: string, service: string): Promise<StoredView> {
  const res = await fetch(`${collector.httpUrl}/v1/records?service=${service}&limit=${MAX_QUERY_LIMIT}`, collector.readAuth);
  const body = await res.text();
  if (res.status !== 200) throw new Error(`/v1/records: ${res.status} ${body}`);
  const ids = body
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r['audit.service'] === service)
    .map((r) => r['audit.request_id'] as string)
    .filter((id) => id !== undefined)
    .sort();
  const sidecars = (await (await fetch(`${collector.httpUrl}/v1/sidecars`, collector.readAuth)).json()) as Array<StoredView & { id: string }>;
  const s = sidecars.find((x) => x.id === sidecarId);
  return { ids, last_batch: s?.last_batch ?? 0, chain_head: s?.chain_head ?? '', verified: s?.verified ?? false };
}

/** The sidecar's token file made to hold the collector's token. */
async function shipTo(t: ExecutionContext, collectorAddress: string, token: string, overrides: Partial<SidecarConfig> = {}): Promise<ShippingSidecar> {
  const s = await startShippingSidecar(t, collectorAddress, { checkpointIntervalMs: 50, batchMaxRecords: 1, ...overrides });
  await writeFile(join(s.dir, 'token'), `${token}\n`);
  return s;
}

/** Sends `n` requests, 8 at a time; every one must be answered 200. Returns their ids. */
async function traffic(s: ShippingSidecar, prefix: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(6, '0')}`);
  for (let i = 0; i < n; i += 8) {
    const statuses = await Promise.all(ids.slice(i, i + 8).map((id) => s.send(id)));
    if (statuses.some((st) => st !== 200)) throw new Error(`the sidecar stopped serving: ${statuses.join(',')}`);
  }
  return ids;
}

/** Makes the journal grow by `links` links (a batch per record); returns the ids sent. */
async function grow(s: ShippingSidecar, links: number): Promise<string[]> {
  const journal = s.sidecar.audit!.journal;
  const target = journal.head.last_batch + links;
  const sent: string[] = [];
  for (let round = 0; journal.head.last_batch < target; round++) sent.push(...(await traffic(s, `g${target}r${round}`, 16)));
  return sent;
}

/** Everything the journal holds reached the collector, once, and the chains agree end to end. */
async function assertDelivered(t: ExecutionContext, collector: TestCollector, s: ShippingSidecar, sent: string[]): Promise<void> {
  const journal = s.sidecar.audit!.journal;
  // Answered is not yet journalled (async audit mode): wait for the journal to hold them all.
  await eventually('the journal holds every record sent', () => journal.read().filter((r) => r['audit.service'] === 'ledger').length >= sent.length);
  const target = journal.head.last_batch;
  await eventually(`the collector holds batch ${target}`, async () => (await collectorView(collector, 'ledger-0', 'ledger')).last_batch >= target, 90_000);
  const view = await collectorView(collector, 'ledger-0', 'ledger');
  t.deepEqual(view.ids, [...sent].sort(), 'every record exactly once');
  t.true(view.verified);
  const link = journal.readBatches({ fromBatch: view.last_batch, limit: 1 })[0];
  t.is(view.chain_head, link.head, "the collector's chain ends on the journal's head");
  const report = await verifyDir(join(s.dir, 'journal'));
  t.true(report.ok, JSON.stringify(report.failure));
  // The store, checked by the command users have, in a process of its own (lmdb-js#164).
  const verify = await runCli(['verify', collector.storeDir]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  t.regex(verify.stdout, /collector store verified/);
}

test('collector down while thousands of batches queue: the sidecar serves, the journal buffers, then every record arrives once', async (t) => {
  const first = await startTestCollector(t);
  const { grpcPort, storeDir, token } = first;
  const s = await shipTo(t, first.grpcAddress, token!);
  const sent = await traffic(s, 'before', 40);
  await eventually('shipping', async () => (await collectorView(first, 'ledger-0', 'ledger')).ids.length === 40);
  await first.close();

  sent.push(...(await grow(s, 2_000)));
  await eventually('the backlog counted', async () => (await sidecarMetric(s.sidecar, 'auditmesh_shipper_unshipped_records')) >= sent.length - 40);
  t.true(s.sidecar.audit!.journal.head.last_batch - s.sidecar.audit!.journal.shippedBatch >= 2_000, 'thousands of batches queued');
  t.is(await sidecarMetric(s.sidecar, 'auditmesh_shipper_connected'), 0);

  const again = await startTestCollector(t, { grpcPort, storeDir, token });
  await assertDelivered(t, again, s, sent);
  t.is(await sidecarMetric(s.sidecar, 'auditmesh_shipper_connected'), 1);
});

test('collector restarted mid-stream: shipping resumes from what it stored, every record once', async (t) => {
  const first = await startTestCollector(t);
  const { grpcPort, storeDir, token } = first;
  await first.close();
  const s = await shipTo(t, `127.0.0.1:${grpcPort}`, token!, { ship: { windowSegments: 2, windowBytes: 64 * 1024, welcomeTimeoutMs: 2_000, ackTimeoutMs: 5_000, keepaliveMs: 1_000, keepaliveTimeoutMs: 1_000, backoffMaxMs: 300 } });
  const journal = s.sidecar.audit!.journal;
  const sent = await grow(s, 1_000);

  const second = await startTestCollector(t, { grpcPort, storeDir, token });
  await eventually('part of the backlog stored', async () => (await collectorView(second, 'ledger-0', 'ledger')).last_batch > 0, 60_000);
  const partial = (await collectorView(second, 'ledger-0', 'ledger')).last_batch;
  await second.close();
  t.true(partial < journal.head.last_batch, 'cut while the backlog was still shipping');

  const third = await startTestCollector(t, { grpcPort, storeDir, token });
  await assertDelivered(t, third, s, sent);
});

test('collector restored from an older copy after the sidecar pruned what it lacks: the loss is recorded and alerted, shipping goes on, verify names it', async (t) => {
  const first = await startTestCollector(t);
  const { grpcPort, storeDir, token } = first;
  const backupDir = join(dirname(storeDir), 'backup');
  const fastShip = { windowSegments: 4, windowBytes: 64 * 1024, welcomeTimeoutMs: 2_000, ackTimeoutMs: 5_000, keepaliveMs: 1_000, keepaliveTimeoutMs: 1_000, backoffMaxMs: 300 };
  const s = await shipTo(t, `127.0.0.1:${grpcPort}`, token!, { journalRetentionMs: 300, ship: fastShip });
  const journal = s.sidecar.audit!.journal;
  const early = await traffic(s, 'early', 16);
  await eventually('early records stored', async () => (await collectorView(first, 'ledger-0', 'ledger')).ids.length === early.length);
  await first.close();
  await cp(storeDir, backupDir, { recursive: true });
  // What the copy holds, read from it: it may be ahead of what was acknowledged before the close.
  const copied = await runCli(['verify', backupDir, '-o', 'json']);
  t.is(copied.code, 0, copied.stderr);
  const backupLast = (JSON.parse(copied.stdout) as { sidecars: { id: string; last_batch: number }[] }).sidecars.find((x) => x.id === 'ledger-0')!.last_batch;

  const second = await startTestCollector(t, { grpcPort, storeDir, token });
  await traffic(s, 'middle', 16);
  // Acknowledged by the live store, then pruned by the sidecar: only the backup lacked them.
  await eventually('the sidecar pruned past what the backup holds', () => journal.readBatches({ limit: 1 })[0].batch > backupLast + 1);
  await second.close();

  const restored = await startTestCollector(t, { grpcPort, storeDir: backupDir, token });
  const late = await traffic(s, 'late', 16);
  await eventually('late records stored', async () => (await collectorView(restored, 'ledger-0', 'ledger')).ids.filter((id) => id.startsWith('late')).length === late.length);
  const view = await collectorView(restored, 'ledger-0', 'ledger');
  t.deepEqual(view.ids.filter((id) => id.startsWith('early')), [...early].sort(), 'what the backup held is still there');
  t.true(view.verified);
  const sidecars = (await (await fetch(`${restored.httpUrl}/v1/sidecars`, restored.readAuth)).json()) as Array<{ id: string; lost: { from_batch: number; to_batch: number }[] }>;
  const lost = sidecars.find((x) => x.id === 'ledger-0')!.lost;
  // Usually one range; a second when the sidecar pruned on while its first Hello was answered
  // (those batches had been acknowledged by the store that is gone, so they are lost too).
  t.true(lost.length >= 1);
  t.is(lost[0].from_batch, backupLast + 1);
  for (const [i, l] of lost.entries()) t.true(l.to_batch >= l.from_batch && (i === 0 || l.from_batch > lost[i - 1].to_batch), JSON.stringify(lost));
  const metrics = await (await fetch(`${restored.httpUrl}/metrics`)).text();
  t.is(Number(/^auditmesh_collector_lost_batches_total (\d+)/m.exec(metrics)?.[1]), lost.reduce((n, l) => n + l.to_batch - l.from_batch + 1, 0));

  // Offline, the store fails on the recorded range, and only on it.
  const verified = await runCli(['verify', backupDir, '-o', 'json']);
  t.is(verified.code, 1, verified.stderr);
  const report = JSON.parse(verified.stdout) as { failure: { code: string; batch: number; problem: string } };
  t.is(report.failure.code, 'gap');
  t.is(report.failure.batch, backupLast + 1);
  t.regex(report.failure.problem, /never reached this store/);
});

test('acks lost: the connection cut after the collector stored a segment and before its Ack; resent, stored once', async (t) => {
  const collector = await startTestCollector(t);
  const relay = await startRelay(t, collector.grpcPort);
  const s = await shipTo(t, `127.0.0.1:${relay.port}`, collector.token!);
  let cuts = 0;
  // onStored runs as the store settles, before the Ack is written: the Ack never reaches the sidecar.
  const off = collector.onStored((run) => {
    if (cuts < 3 && run.batches.length > 0) cuts += relay.cut() > 0 ? 1 : 0;
  });
  t.teardown(off);
  const sent = await traffic(s, 'lost', 120);
  await eventually('three cuts', () => cuts >= 3);
  await assertDelivered(t, collector, s, sent);
  t.true((await sidecarMetric(s.sidecar, 'auditmesh_shipper_reconnects_total')) >= 3);
});

test('two sidecars ship concurrently; a query by correlation id returns both sides of the call', async (t) => {
  const collector = await startTestCollector(t);
  const callee = await shipTo(t, collector.grpcAddress, collector.token!, { service: 'inventory', sidecarId: 'inventory-0', checkpointIntervalMs: 200 });
  const caller = await shipTo(t, collector.grpcAddress, collector.token!, {
    service: 'frontend',
    sidecarId: 'frontend-0',
    checkpointIntervalMs: 200,
    resolve: new Map([['inventory:80', { host: '127.0.0.1', port: callee.sidecar.ports.inbound! }]]),
  });
  const ids = Array.from({ length: 20 }, (_, i) => `call-${i}`);
  await Promise.all(ids.map((id) => callThrough(caller.sidecar.ports.outbound, id)));
  for (const id of ids) {
    let sides: Record<string, unknown>[] = [];
    await eventually(`both sides of ${id}`, async () => {
      const body = await (await fetch(`${collector.httpUrl}/v1/records?correlation_id=${id}`, collector.readAuth)).text();
      sides = body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
      return sides.length >= 2;
    });
    t.deepEqual(sides.map((r) => `${r['audit.service']}/${r['audit.direction']}`).sort(), ['frontend/outbound', 'inventory/inbound'], id);
  }
  const sidecars = (await (await fetch(`${collector.httpUrl}/v1/sidecars`, collector.readAuth)).json()) as Array<{ id: string; verified: boolean }>;
  t.deepEqual(sidecars.map((x) => x.id).sort(), ['frontend-0', 'inventory-0']);
  t.true(sidecars.every((x) => x.verified));
});

function callThrough(proxyPort: number, id: string): Promise<void> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: proxyPort, path: `http://inventory/items/${id}`, headers: { host: 'inventory', 'x-request-id': id }, agent: false }, (res) => {
        res.resume();
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`${id}: ${res.statusCode}`))));
      })
      .on('error', reject);
  });
}
