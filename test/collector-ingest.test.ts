import test from 'ava';
import { once } from 'node:events';
import { connect } from 'node:http2';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SYNC_WINDOW_BYTES } from '../control/collector/ingest/flow-window.js';
import type { ExecutionContext } from 'ava';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { journalShipment, openSync, startTestCollector, type JournalShipment, type SyncPeer, type TestCollector } from './helpers/collector.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { metricValue, tempDir } from './helpers/sidecar.js';
import type { CollectorMessage } from '../wire/sync-wire.js';

/** A real journal: 3 commits of 8 records in batches of at most 3, read back as segments. */
async function shipment(t: ExecutionContext, sidecarId = 'pod-a', extra: (i: number) => object = () => ({})): Promise<JournalShipment> {
  const journalDir = join(await tempDir(t), 'journal');
  const key = ephemeralSigningKey();
  await writeJournal({ journalDir, maxBatchRecords: 3, signingKey: key }, 3, 8, (i) => makeRecord(i, { 'audit.service': sidecarId, ...extra(i) }));
  return journalShipment(journalDir, key, sidecarId, sidecarId);
}

async function scrapeCollector(httpUrl: string): Promise<string> {
  return (await fetch(`${httpUrl}/metrics`)).text();
}

async function records(c: TestCollector, query = ''): Promise<Record<string, unknown>[]> {
  const body = await (await fetch(`${c.httpUrl}/v1/records${query}`, c.readAuth)).text();
  return body.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** Hello, then every segment; returns the answers, one per segment. */
async function shipAll(peer: SyncPeer, s: JournalShipment): Promise<{ welcome: CollectorMessage; answers: CollectorMessage[] }> {
  peer.send({ hello: s.hello });
  const welcome = await peer.next();
  for (const segment of s.segments) peer.send({ segment });
  const answers: CollectorMessage[] = [];
  for (let i = 0; i < s.segments.length; i++) answers.push(await peer.next());
  return { welcome, answers };
}

test('a valid stream is verified, stored and acked segment by segment, in order', async (t) => {
  const collector = await startTestCollector(t);
  const s = await shipment(t);
  const peer = openSync(t, collector.grpcAddress, collector.token);
  const { welcome, answers } = await shipAll(peer, s);
  // Without the mesh CA (a shared token) the collector has no serving key: nothing is signed.
  t.deepEqual(welcome, { body: 'welcome', welcome: { acked_batch: 0, acked_head: '0'.repeat(64), cert_chain_pem: '', sig: '' } });
  t.deepEqual(
    answers.map((a) => 'ack' in a && a.ack),
    s.segments.map((seg) => ({ through_batch: seg.links.at(-1)!.batch, head: seg.links.at(-1)!.head, sig: '' })),
  );
  const stored = await records(collector, '?limit=1000');
  t.is(stored.length, 24);
  t.deepEqual(new Set(stored.map((r) => r['audit.seq'])).size, 24);
  const metrics = await scrapeCollector(collector.httpUrl);
  t.is(metricValue(metrics, 'auditmesh_collector_records_stored_total'), 24);
  t.is(metricValue(metrics, 'auditmesh_collector_batches_received_total'), s.links.length);
  t.is(metricValue(metrics, 'auditmesh_collector_streams_active'), 1);
  const [sidecar] = collector.sidecars();
  t.like(sidecar, { id: 'pod-a', last_batch: s.links.at(-1)!.batch, last_seq: 24, chain_head: s.links.at(-1)!.head, verified: true });
  peer.close();
  const deadline = Date.now() + 30_000;
  while (metricValue(await scrapeCollector(collector.httpUrl), 'auditmesh_collector_streams_active') !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.is(metricValue(await scrapeCollector(collector.httpUrl), 'auditmesh_collector_streams_active'), 0, 'a closed stream is no longer counted');
});

test('segments sent twice are stored once and acked again; the restarted collector welcomes from what it holds', async (t) => {
  const first = await startTestCollector(t);
  const s = await shipment(t);
  const peer = openSync(t, first.grpcAddress, first.token);
  await shipAll(peer, s);
  // Resend everything on a new stream: acked again, nothing stored twice.
  const again = openSync(t, first.grpcAddress, first.token);
  const { welcome, answers } = await shipAll(again, s);
  t.is('welcome' in welcome && welcome.welcome.acked_batch, s.links.at(-1)!.batch);
  t.true(answers.every((a) => 'ack' in a));
  t.is((await records(first, '?limit=1000')).length, 24);
  const metrics = await scrapeCollector(first.httpUrl);
  t.is(metricValue(metrics, 'auditmesh_collector_duplicate_batches_total'), s.links.length);
  t.is(metricValue(metrics, 'auditmesh_collector_records_stored_total'), 24);
  await first.close();

  const second = await startTestCollector(t, { storeDir: first.storeDir, token: first.token });
  const resumed = openSync(t, second.grpcAddress, second.token);
  resumed.send({ hello: s.hello });
  t.deepEqual(await resumed.next(), { body: 'welcome', welcome: { acked_batch: s.links.at(-1)!.batch, acked_head: s.links.at(-1)!.head, cert_chain_pem: '', sig: '' } });
  t.is((await records(second, '?limit=1000')).length, 24);
});

test('the collector advertises a wide HTTP/2 window, so a large segment is not sent 64 KiB per round trip', async (t) => {
  const collector = await startTestCollector(t);
  const session = connect(`http://${collector.grpcAddress}`);
  t.teardown(() => session.destroy());
  await once(session, 'remoteSettings');
  // The wider settings and the connection's WINDOW_UPDATE follow the server's first SETTINGS frame.
  const wide = (): boolean => session.remoteSettings.initialWindowSize === SYNC_WINDOW_BYTES && session.state.remoteWindowSize! >= SYNC_WINDOW_BYTES;
  const deadline = Date.now() + 5_000;
  while (!wide() && Date.now() < deadline) await sleep(20);
  t.is(session.remoteSettings.initialWindowSize, SYNC_WINDOW_BYTES, 'stream window');
  t.true(session.state.remoteWindowSize! >= SYNC_WINDOW_BYTES, `connection window ${session.state.remoteWindowSize}`);
});

test('a sidecar that no longer retains what the collector lacks: the range is recorded as lost only once a signed segment proves where its chain goes on', async (t) => {
  const collector = await startTestCollector(t);
  const s = await shipment(t);
  t.true(s.segments.length >= 3);
  const [one, two, three] = s.segments;
  const peer = openSync(t, collector.grpcAddress, collector.token);
  peer.send({ hello: s.hello });
  await peer.next();
  peer.send({ segment: one });
  t.true('ack' in (await peer.next()));
  const held = one.links.at(-1)!;
  const lostFirst = two.links[0].batch;
  const lostLast = two.links.at(-1)!.batch;

  // A Hello claiming the chain goes on after a head the segment does not chain from: refused, and nothing moves.
  const liar = openSync(t, collector.grpcAddress, collector.token);
  liar.send({ hello: { ...s.hello, first_batch: three.links[0].batch, base_head: 'ab'.repeat(32) } });
  t.like(await liar.next(), { welcome: { acked_batch: held.batch } });
  liar.send({ segment: three });
  const refused = await liar.next();
  t.true('refusal' in refused, JSON.stringify(refused));
  t.like(collector.sidecars()[0], { last_batch: held.batch, lost: [] });

  // The honest claim: the head after the batches it pruned. Its signed link proves it.
  const honest = openSync(t, collector.grpcAddress, collector.token);
  honest.send({ hello: { ...s.hello, first_batch: three.links[0].batch, base_head: two.links.at(-1)!.head } });
  t.like(await honest.next(), { welcome: { acked_batch: held.batch } });
  honest.send({ segment: three });
  t.like(await honest.next(), { ack: { through_batch: three.links.at(-1)!.batch } });
  const [status] = collector.sidecars();
  t.is(status.last_batch, three.links.at(-1)!.batch);
  t.deepEqual(status.lost.map((l) => [l.from_batch, l.to_batch]), [[lostFirst, lostLast]]);
  t.is(metricValue(await scrapeCollector(collector.httpUrl), 'auditmesh_collector_lost_batches_total'), lostLast - lostFirst + 1);
  // What was stored on both sides of the range is there; the range's records are not.
  const count = (seg: typeof one): number => seg.links.reduce((n, l) => n + l.records.length, 0);
  const seqs = (await records(collector, '?limit=1000')).map((r) => r['audit.seq'] as number).sort((a, b) => a - b);
  t.deepEqual(seqs, [...one.links, ...three.links].flatMap((l) => l.records.map((_, k) => l.first_seq + k)), `segments of ${s.segments.map(count).join(', ')} records`);
});
