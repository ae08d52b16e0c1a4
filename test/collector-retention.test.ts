import { metric, storedRecords } from './helpers/collector-reads.js';
import test, { type ExecutionContext } from 'ava';
import { open } from 'lmdb';
import { startTestCollector } from './helpers/collector.js';
import { eventually, startShippingSidecar } from './helpers/shipping.js';
import { metricValue } from './helpers/sidecar.js';
import { startOtlpReceiver } from './helpers/otlp-receiver.js';
import { request } from './helpers/net.js';
import { verifyStoreDir } from '../control/collector/store/verify-store.js';
import { openPruneDbs, pruneEntries, type PruneEntry } from '../control/collector/store/prune-log.js';
import type { CollectedRecord } from '../control/collector/api/record-query.js';
import { openWitnessDbs } from '../control/collector/witness/witness-dbs.js';
import { storedSubtree } from '../control/collector/witness/log-tree.js';
import { encodeWitnessEntry, verifyTreeHead, witnessLeaf, type TreeHead, type WitnessEntry } from '../ledger/witness-log.js';
import { inclusionPathOf, verifyInclusion } from '../ledger/merkle.js';
import { runCli } from './helpers/child.js';

// The collector's store is bounded: batches older than --retention and, past --store-limit-bytes,
// the oldest batches go, whole, a prefix of each chain at a time; each pruning is recorded and
// handed to onPruned; with an exporter nothing unexported goes, and a store at its bound with
// nothing it may prune refuses segments (retryably) until the exporter catches up.

async function recordedPrunes(storeDir: string): Promise<PruneEntry[]> {
  const env = open({ path: storeDir, readOnly: true });
  try {
    return pruneEntries(openPruneDbs(env));
  } finally {
    await env.close();
  }
}

/** Each sidecar's prunings follow on from each other, from its first batch. */
function assertContiguous(t: ExecutionContext, entries: PruneEntry[]): void {
  const next = new Map<string, number>();
  for (const e of entries) {
    t.is(e.from_batch, next.get(e.sidecar) ?? 1, `${e.sidecar}: pruned from batch ${e.from_batch}`);
    t.true(e.to_batch >= e.from_batch);
    next.set(e.sidecar, e.to_batch + 1);
  }
}

test('batches older than --retention are pruned whole, each pruning recorded and handed to onPruned, and the store still verifies from where it now starts', async (t) => {
  const pruned: PruneEntry[] = [];
  const collector = await startTestCollector(t, { token: 'test-token', retentionMs: 1_500, retentionSweepIntervalMs: 200, onPruned: (e) => pruned.push(e) });
  const { send } = await startShippingSidecar(t, collector.grpcAddress);
  for (let i = 0; i < 20; i++) t.is(await send(`old-${i}`), 200);
  await eventually('20 records stored', async () => (await metric(collector, 'auditmesh_collector_records_stored_total')) >= 20);
  await eventually('the old records pruned', () => pruned.reduce((n, e) => n + e.records, 0) >= 20, 20_000);
  t.true((await metric(collector, 'auditmesh_collector_pruned_records_total', { reason: 'retention' })) >= 20);
  t.is(await metric(collector, 'auditmesh_collector_pruned_records_total', { reason: 'limit' }), 0);
  // The same store and port again with no retention by age: the records shipped now stay, however
  // slow the machine (a loaded run shipped them later than the 1.5 s retention, and they were gone before they were read).
  const grpcPort = Number(collector.grpcAddress.split(':').pop());
  await collector.close();
  const again = await startTestCollector(t, { token: 'test-token', storeDir: collector.storeDir, grpcPort, retentionMs: 0 });
  for (let i = 0; i < 5; i++) t.is(await send(`new-${i}`), 200);
  let left: unknown[] = [];
  await eventually('the new records stored', async () => {
    left = (await storedRecords(again)).map((r) => r['audit.request_id']);
    return left.includes('new-4');
  });

  t.false(left.includes('old-0'), 'the oldest records are gone');
  t.true(left.includes('new-4'));
  t.true(pruned.every((e) => e.reason === 'retention' && e.sidecar === 'ledger-0' && e.unix_ms - e.newest_sealed_unix_ms >= 1_500));
  await again.close();

  const recorded = await recordedPrunes(collector.storeDir);
  t.deepEqual(recorded, pruned, 'every pruning is in the store, as onPruned heard it');
  assertContiguous(t, recorded);
  const report = await verifyStoreDir(collector.storeDir);
  t.true(report.ok, report.failure?.problem);
  const chain = report.sidecars.find((s) => s.id === 'ledger-0')!;
  t.is(chain.first_batch, recorded[recorded.length - 1].to_batch + 1, 'the chain is verified from after the last pruned batch');
});

test('with an exporter, nothing unexported is pruned by age, not even by the sweep at a restart; once the receiver takes it, it goes', async (t) => {
  const receiver = await startOtlpReceiver(t, 'http/json');
  await receiver.stop();
  const pruned: PruneEntry[] = [];
  const options = { token: 'test-token', retentionMs: 500, retentionSweepIntervalMs: 100, onPruned: (e: PruneEntry) => pruned.push(e), exportOtlp: { protocol: 'http/json' as const, url: receiver.url, pollMs: 100, retryMaxMs: 200, timeoutMillis: 1_000 } };
  const first = await startTestCollector(t, options);
  const { send } = await startShippingSidecar(t, first.grpcAddress);
  for (let i = 0; i < 10; i++) t.is(await send(`kept-${i}`), 200);
  await eventually('10 records stored', async () => (await metric(first, 'auditmesh_collector_records_stored_total')) >= 10);
  await eventually('exports failing', async () => (await metric(first, 'auditmesh_collector_export_failures_total', { reason: 'export' })) >= 3);
  await new Promise((resolve) => setTimeout(resolve, 1_500));
  t.is(pruned.reduce((n, e) => n + e.records, 0), 0, 'no record pruned while unexported');
  await first.close();
  // Restarted on the same store, the receiver still away: its first sweep, at start, prunes nothing unexported either.
  const collector = await startTestCollector(t, { ...options, storeDir: first.storeDir });
  await eventually('exports failing again', async () => (await metric(collector, 'auditmesh_collector_export_failures_total', { reason: 'export' })) >= 2);
  t.is(pruned.reduce((n, e) => n + e.records, 0), 0, 'no record pruned at the restart');
  t.true((await storedRecords(collector)).some((r) => r['audit.request_id'] === 'kept-0'));

  await receiver.start();
  await eventually('pruned once exported', () => pruned.reduce((n, e) => n + e.records, 0) >= 10);
  const exported = new Set(receiver.logs.map((l) => l.attributes['audit.request_id']));
  for (let i = 0; i < 10; i++) t.true(exported.has(`kept-${i}`), `kept-${i} exported before it was pruned`);
});

test('at --store-limit-bytes with nothing exported, segments are refused retryably, /readyz and a metric say so, and once the receiver catches up the limit prunes and every record arrives', async (t) => {
  const receiver = await startOtlpReceiver(t, 'grpc');
  await receiver.stop();
  const pruned: PruneEntry[] = [];
  const probe = await startTestCollector(t, { token: 'test-token' });
  const emptyBytes = probe.store.usedBytes();
  await probe.close();
  const limit = emptyBytes + 256 * 1024;
  const collector = await startTestCollector(t, { token: 'test-token', storeLimitBytes: limit, onPruned: (e) => pruned.push(e), exportOtlp: { protocol: 'grpc', url: receiver.url, pollMs: 100, retryMaxMs: 200, timeoutMillis: 1_000 } });
  const { sidecar, send } = await startShippingSidecar(t, collector.grpcAddress);
  const sent: string[] = [];
  // Long paths fill the store sooner; request ids stay short (the sidecar bounds them).
  const fill = 'x'.repeat(1500);
  for (let i = 0; metricValue(await (await fetch(`${collector.httpUrl}/metrics`)).text(), 'auditmesh_collector_store_full') === 0; i++) {
    if (i > 3000) throw new Error('the store never reached its limit');
    sent.push(`fill-${i}`);
    t.is((await request(sidecar.ports.inbound!, { path: `/items/${fill}`, headers: { 'x-request-id': `fill-${i}` } })).status, 200);
  }
  const ready = await fetch(`${collector.httpUrl}/readyz`);
  t.is(ready.status, 503);
  t.regex(await ready.text(), /store-limit-bytes/);
  // A few more: the sidecar keeps them in its journal while the collector refuses.
  for (let i = 0; i < 20; i++) {
    sent.push(`held-${i}`);
    await send(`held-${i}`);
  }
  await eventually('segments refused', async () => (await metric(collector, 'auditmesh_collector_store_refusals_total')) > 0);
  t.is(pruned.reduce((n, e) => n + e.records, 0), 0, 'no unexported record pruned at the limit (links without records may go)');

  await receiver.start();
  await eventually('every record exported', () => {
    const got = new Set(receiver.logs.map((l) => l.attributes['audit.request_id']));
    return sent.every((id) => got.has(id));
  }, 60_000);
  await eventually('the store accepts again', async () => (await metric(collector, 'auditmesh_collector_store_full')) === 0);
  t.is((await fetch(`${collector.httpUrl}/readyz`)).status, 200);
  t.true(pruned.length > 0 && pruned.every((e) => e.reason === 'limit'));
  t.true(collector.store.usedBytes() < limit);
  await collector.close();
  const report = await verifyStoreDir(collector.storeDir);
  t.true(report.ok, report.failure?.problem);
});

test('without an exporter, the store at --store-limit-bytes prunes its oldest batches (reason limit) and keeps accepting', async (t) => {
  const probe = await startTestCollector(t, { token: 'test-token' });
  const emptyBytes = probe.store.usedBytes();
  await probe.close();
  const limit = emptyBytes + 192 * 1024;
  const pruned: PruneEntry[] = [];
  const collector = await startTestCollector(t, { token: 'test-token', storeLimitBytes: limit, onPruned: (e) => pruned.push(e) });
  const { send } = await startShippingSidecar(t, collector.grpcAddress);
  const fill = 'y'.repeat(1500);
  for (let i = 0; pruned.length === 0; i++) {
    if (i > 3000) throw new Error('the limit never pruned');
    t.is(await send(`limit-${i}-${fill}`), 200);
  }
  t.true(pruned.every((e) => e.reason === 'limit'));
  t.is(await metric(collector, 'auditmesh_collector_store_full'), 0);
  t.is((await fetch(`${collector.httpUrl}/readyz`)).status, 200);
  t.true(collector.store.usedBytes() < limit * 1.05);
  await collector.close();
  assertContiguous(t, await recordedPrunes(collector.storeDir));
  t.true((await verifyStoreDir(collector.storeDir)).ok);
});

/** Where the store's witness log holds `entry`, and the newest tree head kept, verified against the collector key it names. */
async function witnessed(t: ExecutionContext, storeDir: string, entry: WitnessEntry): Promise<{ index: number; head: TreeHead; included: boolean }> {
  const env = open({ path: storeDir, readOnly: true, maxDbs: 64 });
  try {
    const w = openWitnessDbs(env);
    const bytes = encodeWitnessEntry(entry);
    const index = Array.from(w.entries.getRange(), ({ key, value }) => (Buffer.from(value).equals(bytes) ? key : -1)).find((k) => k >= 0) ?? -1;
    const head = Array.from(w.heads.getRange({ reverse: true, limit: 1 }), ({ value }) => value)[0];
    t.truthy(head, 'a tree head was signed');
    t.true(verifyTreeHead(head, Buffer.from(w.keys.get(head.key_id)!.public_key, 'base64')), 'the tree head verifies with the collector key it names');
    const included = index >= 0 && index < head.tree_size && verifyInclusion(witnessLeaf(entry), index, head.tree_size, inclusionPathOf(storedSubtree(w), index, head.tree_size), Buffer.from(head.root, 'hex'));
    return { index, head, included };
  } finally {
    await env.close();
  }
}

test('each pruning is a signed prune entry of the witness log (chain, batch range, reason), covered by a tree head; verify counts it and still proves a record after the pruned range', async (t) => {
  const pruned: PruneEntry[] = [];
  const collector = await startTestCollector(t, { token: 'test-token', retentionMs: 1_500, retentionSweepIntervalMs: 200, checkpointIntervalMs: 200, onPruned: (e) => pruned.push(e) });
  const { send } = await startShippingSidecar(t, collector.grpcAddress);
  for (let i = 0; i < 10; i++) t.is(await send(`old-${i}`), 200);
  await eventually('the old records pruned', () => pruned.reduce((n, e) => n + e.records, 0) >= 10, 20_000);
  // The same store and port again with no retention by age: the records shipped now stay, however slow the machine.
  const grpcPort = Number(collector.grpcAddress.split(':').pop());
  await collector.close();
  const again = await startTestCollector(t, { token: 'test-token', storeDir: collector.storeDir, grpcPort, retentionMs: 0, checkpointIntervalMs: 200 });
  for (let i = 0; i < 3; i++) t.is(await send(`new-${i}`), 200);
  let fresh: CollectedRecord | undefined;
  await eventually('the new records stored', async () => (fresh = (await storedRecords(again)).find((r) => r['audit.request_id'] === 'new-2')) !== undefined);
  await eventually('a tree head covers the whole log', () => again.witness.log.latest !== undefined && again.witness.log.latest.tree_size === again.witness.log.size);
  await again.close();

  const entries = pruned.map((e): WitnessEntry => ({ kind: 'prune', sidecar: e.sidecar, from_batch: e.from_batch, to_batch: e.to_batch, reason: e.reason }));
  t.true(entries.length > 0 && entries.every((e) => e.kind === 'prune' && e.sidecar === 'ledger-0' && e.reason === 'retention'));
  for (const entry of entries) {
    const { index, included } = await witnessed(t, collector.storeDir, entry);
    t.true(index >= 0, `the witness log holds the pruning of batches ${JSON.stringify(entry)}`);
    t.true(included, 'and a signed tree head covers it, provably');
  }

  const verified = await runCli(['verify', collector.storeDir, '-o', 'json']);
  t.is(verified.code, 0, verified.stdout + verified.stderr);
  const report = JSON.parse(verified.stdout) as { ok: boolean; witness: { ok: boolean; prunes: number } };
  t.true(report.ok && report.witness.ok);
  t.is(report.witness.prunes, entries.length, 'the witness report counts every pruning');
  t.regex((await runCli(['verify', collector.storeDir])).stdout, new RegExp(`; ${entries.length} prunings logged`));

  // A record after the pruned range still proves: its link, the chain to a signed head and the log's tree head.
  t.true(fresh!['audit.seq'] > 10);
  const proved = await runCli(['verify', collector.storeDir, '--record', `ledger-0:${fresh!['audit.seq']}`, '-o', 'json']);
  t.is(proved.code, 0, proved.stdout + proved.stderr);
  const json = JSON.parse(proved.stdout) as { ok: boolean; record: { report?: { ok: boolean } } };
  t.true(json.ok && json.record.report?.ok === true);
});
