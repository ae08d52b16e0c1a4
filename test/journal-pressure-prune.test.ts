import test from 'ava';
import http from 'node:http';
import type { ExecutionContext } from 'ava';
import { readJournal } from '../ledger/read-journal.js';
import { PRESSURE_HIGH_WATER } from '../proxy/journal/retention.js';
import type { CollectedRecord } from '../control/collector/api/record-query.js';
import { startTestCollector, type TestCollector } from './helpers/collector.js';
import { verifyDir } from './helpers/journal.js';
import { request } from './helpers/net.js';
import { eventually, startShippingSidecar } from './helpers/shipping.js';
import { metricValue, scrape } from './helpers/sidecar.js';

// Room made before the bound (issue 22, item 4): near --journal-limit-bytes the journal prunes the
// oldest links the collector acknowledged, whatever their age (retention is 7 days here), so a
// busy sidecar with a working collector never meets its bound. Unacknowledged links are never
// pruned: with the collector away the bound is met and --on-journal-full applies as before.

// Large against what is in flight to the collector at once (unacknowledged, so never pruned).
const LIMIT_BYTES = 4 * 1024 * 1024;
// Records of ~2.5 KB, each on an LMDB overflow page of its own: about 1,000 fill the bound.
const PAD = 'x'.repeat(1200);
const TOTAL = 2400;

/** Sends TOTAL requests, 8 at a time, each with a long id; returns each status and whether the journal ever reported full. */
async function busy(t: ExecutionContext, port: number, adminPort: number, prefix: string, stopWhenFull = false): Promise<{ statuses: number[]; everFull: boolean; ids: string[] }> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  const statuses: number[] = [];
  const ids: string[] = [];
  let everFull = false;
  for (let i = 0; i < TOTAL; i += 8) {
    const group = Array.from({ length: 8 }, (_, k) => `${prefix}-${i + k}`);
    ids.push(...group);
    const replies = await Promise.all(group.map((id) => request(port, { path: `/items/${id}/${PAD}`, headers: { 'x-request-id': id }, agent })));
    statuses.push(...replies.map((r) => r.status));
    if (metricValue(await scrape(adminPort), 'auditmesh_journal_full') === 1) everFull = true;
    if (everFull && stopWhenFull) break;
  }
  return { statuses, everFull, ids };
}

test('with a working collector a busy sidecar never meets its bound: acknowledged records are pruned oldest first, whatever their age', async (t) => {
  const collector = await startTestCollector(t, { token: 'test-token' });
  const { sidecar, logged } = await startShippingSidecar(t, collector.grpcAddress, { journalLimitBytes: LIMIT_BYTES, checkpointIntervalMs: 100 });
  const { statuses, everFull, ids } = await busy(t, sidecar.ports.inbound!, sidecar.ports.admin, 'busy');
  t.false(everFull, 'the journal reported full');
  t.deepEqual(new Set(statuses), new Set([200]), 'every request went through');
  const metrics = await scrape(sidecar.ports.admin);
  t.is(metricValue(metrics, 'auditmesh_journal_rejected_total'), 0);
  t.true(metricValue(metrics, 'auditmesh_journal_pruned_records_total') > 0);
  t.true(metricValue(metrics, 'auditmesh_journal_bytes') < LIMIT_BYTES);
  t.true(logged.some((l) => l.startsWith('info journal near its bound: pruned the oldest acknowledged records')));
  t.false(logged.some((l) => l.includes('journal full')));

  // Pruned only what the collector holds: the oldest link left follows the acknowledged cursor at most.
  const journal = sidecar.audit!.journal;
  t.true(journal.readBatches({ limit: 1 })[0].batch - 1 <= journal.shippedBatch);
  await eventually('the collector holds every record', async () => (await collectedIds(collector, 'busy')).size === TOTAL);
  t.deepEqual([...(await collectedIds(collector, 'busy'))].sort(), [...ids].sort());
  await sidecar.close();
  const report = await verifyDir(sidecar.config.journalDir);
  t.true(report.ok, report.failure?.problem);
  t.truthy(report.pruned_through, 'verified from the oldest retained batch');
});

test('with the collector away nothing is pruned: the journal meets its bound and --on-journal-full reject applies', async (t) => {
  // Port 1: refused for as long as the test runs, so nothing is ever acknowledged.
  const { sidecar, logged } = await startShippingSidecar(t, '127.0.0.1:1', { journalLimitBytes: LIMIT_BYTES, checkpointIntervalMs: 100 });
  const { statuses, everFull } = await busy(t, sidecar.ports.inbound!, sidecar.ports.admin, 'away', true);
  t.true(everFull, 'the journal never reported full');
  const through = statuses.filter((s) => s === 200).length;
  t.log(`${through} requests went through before the bound`);
  t.true(through * 4096 > LIMIT_BYTES * PRESSURE_HIGH_WATER, 'the bound was met by records, not by something else');
  const refused = await request(sidecar.ports.inbound!, { path: '/after-full', headers: { 'x-request-id': 'after-full' } });
  t.is(refused.status, 503);
  t.is(refused.headers['x-auditmesh-error'], 'AUDITMESH_JOURNAL_WRITE');
  const metrics = await scrape(sidecar.ports.admin);
  t.is(metricValue(metrics, 'auditmesh_journal_pruned_records_total'), 0);
  t.is((await request(sidecar.ports.admin, { path: '/readyz' })).status, 503);
  t.false(logged.some((l) => l.includes('near its bound')));
  await sidecar.close();

  // Every request that went through is in the journal: nothing unacknowledged was pruned.
  const report = await verifyDir(sidecar.config.journalDir);
  t.true(report.ok, report.failure?.problem);
  const kept = new Set((await readJournal(sidecar.config.journalDir)).map((r) => r['audit.request_id']));
  t.is(statuses.filter((s) => s === 200).length, [...kept].filter((id) => id?.startsWith('away-')).length);
});

/** The request ids the collector holds that start with `prefix-`. */
async function collectedIds(c: TestCollector, prefix: string): Promise<Set<string | undefined>> {
  const body = await (await fetch(`${c.httpUrl}/v1/records?service=ledger&limit=10000`, c.readAuth)).text();
  const records = body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as CollectedRecord);
  return new Set(records.map((r) => r['audit.request_id']).filter((id) => id?.startsWith(`${prefix}-`)));
}
