import test, { type ExecutionContext } from 'ava';
import { cp, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { heartbeatSigningInput } from '../ledger/chain.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { verifyTreeHead, witnessLeaf, type TreeHead } from '../ledger/witness-log.js';
import { consistencyPathOf, inclusionPathOf, verifyConsistency, verifyInclusion } from '../ledger/merkle.js';
import { COLLECTOR_KEY_FILE } from '../control/collector/collector-key.js';
import { journalShipment, openSync, startTestCollector, type JournalShipment, type SyncPeer, type TestCollector } from './helpers/collector.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { metricValue, tempDir } from './helpers/sidecar.js';
import { eventually } from './helpers/shipping.js';
import type { CollectorMessage, Heartbeat } from '../wire/sync-wire.js';

// The collector as a witness (issue 27, part 1): a Merkle log of what it stores, signed tree heads,
// and every heartbeat head kept and checked against what the sidecar ships later.

/** Two journals of one key that share their first `shared` commits and then differ: a tail rewritten by the key's holder. */
async function forkedJournals(t: ExecutionContext, shared: number, after: number, sidecarId = 'pod-w'): Promise<{ key: SigningKey; original: JournalShipment; rewritten: JournalShipment }> {
  const dir = await tempDir(t);
  const key = ephemeralSigningKey();
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  await writeJournal({ journalDir: a, maxBatchRecords: 3, signingKey: key }, shared, 4, (i) => makeRecord(i, { 'audit.service': 'pod-w' }));
  await cp(a, b, { recursive: true });
  await writeJournal({ journalDir: a, maxBatchRecords: 3, signingKey: key }, after, 4, (i) => makeRecord(i, { 'audit.service': 'pod-w', 'url.path': '/original' }));
  await writeJournal({ journalDir: b, maxBatchRecords: 3, signingKey: key }, after, 4, (i) => makeRecord(i, { 'audit.service': 'pod-w', 'url.path': '/rewritten' }));
  return { key, original: await journalShipment(a, key, sidecarId, 'pod-w'), rewritten: await journalShipment(b, key, sidecarId, 'pod-w') };
}

function heartbeat(key: SigningKey, sidecarId: string, lastBatch: number, head: string, unixMs = Date.now()): Heartbeat {
  return { unix_ms: unixMs, last_batch: lastBatch, head, sig: key.sign(heartbeatSigningInput(sidecarId, unixMs, lastBatch, head)) };
}

async function collectorMetric(c: TestCollector, name: string, labels: Record<string, string> = {}): Promise<number> {
  return metricValue(await (await fetch(`${c.httpUrl}/metrics`)).text(), name, labels);
}

/** Hello, then the segments; returns the answers. */
async function ship(peer: SyncPeer, hello: object, segments: object[]): Promise<CollectorMessage[]> {
  peer.send({ hello });
  const answers = [await peer.next()];
  for (const segment of segments) peer.send({ segment });
  for (let i = 0; i < segments.length; i++) answers.push(await peer.next());
  return answers;
}

test('the collector logs every stored link and signs tree heads of its log with a key of its own, kept 0600 in the store across restarts', async (t) => {
  const collector = await startTestCollector(t, { token: null, checkpointIntervalMs: 200 });
  const { original } = await forkedJournals(t, 2, 0);
  const peer = openSync(t, collector.grpcAddress, null);
  const answers = await ship(peer, original.hello, original.segments);
  t.true(answers.slice(1).every((a) => 'ack' in a));
  await eventually('every link logged and a tree head of them signed', () => (collector.witness.log.latest?.tree_size ?? 0) === original.links.length);
  const th = collector.witness.log.latest!;
  t.true(verifyTreeHead(th, collector.witness.log.signer.publicKeySpki), 'signed by the collector key');
  const keyFile = await stat(join(collector.storeDir, COLLECTOR_KEY_FILE));
  t.is(keyFile.mode & 0o777, 0o600);
  // Every link's entry is in the tree, provably.
  const leaves = original.links.map((l) => witnessLeaf({ kind: 'link', sidecar: 'pod-w', batch: l.batch, head: l.head, ...(l.sig !== '' ? { key_id: l.key } : {}) }));
  const root = Buffer.from(th.root, 'hex');
  for (const [i, leaf] of leaves.entries()) t.true(verifyInclusion(leaf, i, th.tree_size, inclusionPathOf(collector.witness.log.subtree, i, th.tree_size), root), `link ${i + 1}`);
  t.true(await collectorMetric(collector, 'auditmesh_collector_tree_heads_signed_total') >= 1);
  t.is(await collectorMetric(collector, 'auditmesh_collector_witness_tree_size'), original.links.length);
  const keyId = collector.witness.log.signer.keyId;
  peer.close();
  await collector.close();

  const again = await startTestCollector(t, { token: null, storeDir: collector.storeDir, checkpointIntervalMs: 200 });
  t.is(again.witness.log.signer.keyId, keyId, 'the same key after a restart');
  t.is(again.witness.log.size, original.links.length, 'the log is where it was');
  const later = await again.witness.log.checkpoint();
  t.true(verifyConsistency(th.tree_size, later.tree_size, consistencyPathOf(again.witness.log.subtree, th.tree_size, later.tree_size), root, Buffer.from(later.root, 'hex')));
});

test('a heartbeat head followed by a rewritten tail is flagged fork-after-witness: refused, counted, kept as evidence, listed, and still known after a restart', async (t) => {
  const logged: string[] = [];
  const collector = await startTestCollector(t, { token: null, log: (level, msg, f) => logged.push(`${level} ${msg} ${JSON.stringify(f)}`) });
  const { key, original, rewritten } = await forkedJournals(t, 2, 2);
  const sharedSegments = original.segments.filter((s) => rewritten.segments.some((r) => r.links.at(-1)!.head === s.links.at(-1)!.head));
  t.true(sharedSegments.length >= 1 && sharedSegments.length < original.segments.length);
  // The sidecar ships the shared part, then its heartbeat names the head of its (original) journal before shipping the rest.
  const first = openSync(t, collector.grpcAddress, null);
  t.true((await ship(first, original.hello, sharedSegments)).slice(1).every((a) => 'ack' in a));
  const end = original.links.at(-1)!;
  first.send({ heartbeat: heartbeat(key, 'pod-w', end.batch, end.head) });
  await eventually('the heartbeat head witnessed', () => collector.witness.heads.lastHeartbeat('pod-w')?.head === end.head);
  first.close();
  // Its tail is then rewritten (same key, same numbers) and shipped.
  const second = openSync(t, collector.grpcAddress, null);
  const tail = rewritten.segments.slice(sharedSegments.length);
  second.send({ hello: { ...rewritten.hello } });
  await second.next();
  for (const segment of tail) second.send({ segment });
  let refusal: CollectorMessage;
  do refusal = await second.next();
  while ('ack' in refusal);
  t.true('refusal' in refusal && refusal.refusal.code === 'fork' && refusal.refusal.reason.startsWith('fork-after-witness:'), JSON.stringify(refusal));
  t.is(await collectorMetric(collector, 'auditmesh_collector_forks_after_witness_total'), 1);
  t.is(await collectorMetric(collector, 'auditmesh_collector_verification_failures_total', { reason: 'fork' }), 1);
  t.true(logged.some((l) => l.startsWith('error') && l.includes('fork after witness')));
  const evidence = await collector.store.evidence();
  t.true(evidence.some((e) => e.code === 'fork' && e.reason.includes(end.head)), 'kept as evidence, naming the witnessed head');
  const [status] = collector.sidecars();
  t.like(status.fork_after_witness?.[0], { batch: end.batch, witnessed_head: end.head, witnessed_by: 'heartbeat', presented_by: 'segment' });
  // Links before the witnessed batch contradict nothing the collector saw; the one that does is never stored.
  t.true(status.last_batch < end.batch, 'the rewritten link at the witnessed batch is not stored');
  second.close();
  await collector.close();

  const again = await startTestCollector(t, { token: null, storeDir: collector.storeDir });
  t.like(again.sidecars()[0].fork_after_witness?.[0], { batch: end.batch, witnessed_head: end.head });
  // The witnessed head is still pending after the restart: the rewritten tail is refused again.
  const third = openSync(t, again.grpcAddress, null);
  third.send({ hello: rewritten.hello });
  await third.next();
  for (const segment of tail) third.send({ segment });
  let answer: CollectorMessage;
  do answer = await third.next();
  while ('ack' in answer);
  t.true('refusal' in answer && answer.refusal.reason.startsWith('fork-after-witness:'));
});

test("witnessed heads are kept per incarnation: a new pod uid's links and heartbeats are never checked against the older chain's, and the older chain's rewritten tail is still flagged", async (t) => {
  const { createTokenIssuer, sidecarToken, startTokenCollector } = await import('./helpers/identity.js');
  const issuer = await createTokenIssuer();
  const collector = await startTokenCollector(t, issuer);
  const id = 'shop/ledger-0';
  const token = (uid: string): Promise<string> => sidecarToken(issuer, { namespace: 'shop', pod: { name: 'ledger-0', uid }, serviceAccount: { name: 'ledger', uid: 'sa-ledger' } });
  const old = await forkedJournals(t, 2, 2, id);
  const shared = old.original.segments.filter((s) => old.rewritten.segments.some((r) => r.links.at(-1)!.head === s.links.at(-1)!.head));
  const first = openSync(t, collector.grpcAddress, await token('uid-1'));
  t.true((await ship(first, old.original.hello, shared)).slice(1).every((a) => 'ack' in a));
  const end = old.original.links.at(-1)!;
  first.send({ heartbeat: heartbeat(old.key, id, end.batch, end.head) });
  await eventually("uid-1's heartbeat head witnessed", () => collector.witness.heads.lastHeartbeat(`${id}@uid-1`)?.head === end.head);
  first.close();

  // The pod recreated: a new key and journal, the same batch numbers with other heads, and a heartbeat behind uid-1's.
  const fresh = await forkedJournals(t, 4, 0, id);
  t.true(fresh.original.links.at(-1)!.batch >= end.batch, "the new chain reaches the batch witnessed on uid-1's");
  const second = openSync(t, collector.grpcAddress, await token('uid-2'));
  t.true((await ship(second, fresh.original.hello, fresh.original.segments.slice(0, 1))).slice(1).every((a) => 'ack' in a));
  const early = fresh.original.segments[0].links.at(-1)!;
  second.send({ heartbeat: heartbeat(fresh.key, id, early.batch, early.head) });
  await eventually("uid-2's heartbeat witnessed", () => collector.witness.heads.lastHeartbeat(`${id}@uid-2`)?.head === early.head);
  for (const segment of fresh.original.segments.slice(1)) second.send({ segment });
  for (let i = 1; i < fresh.original.segments.length; i++) t.true('ack' in (await second.next()), `segment ${i} of uid-2 acknowledged`);
  t.deepEqual(collector.witness.heads.forks(`${id}@uid-2`), []);
  t.is(await collectorMetric(collector, 'auditmesh_collector_forks_after_witness_total'), 0);
  second.close();

  // uid-1's tail rewritten after its witnessed heartbeat: flagged on uid-1's chain alone.
  const third = openSync(t, collector.grpcAddress, await token('uid-1'));
  third.send({ hello: old.rewritten.hello });
  await third.next();
  for (const segment of old.rewritten.segments.slice(shared.length)) third.send({ segment });
  let refusal: CollectorMessage;
  do refusal = await third.next();
  while ('ack' in refusal);
  t.true('refusal' in refusal && refusal.refusal.reason.startsWith('fork-after-witness:'), JSON.stringify(refusal));
  t.is(collector.witness.heads.forks(`${id}@uid-1`).length, 1);
  t.deepEqual(collector.witness.heads.forks(`${id}@uid-2`), []);
  t.deepEqual(collector.sidecars().map((s) => [s.incarnation, s.fork_after_witness?.length ?? 0]).sort(), [['uid-1', 1], ['uid-2', 0]]);
});

test("a sidecar stream's heartbeats never name a batch before a link it sent, even while its journal's head lags the committed links", async (t) => {
  const { runSyncSession } = await import('../proxy/ship/sync-session.js');
  const { heartbeatHead } = await import('../proxy/ship/shipper.js');
  const collector = await startTestCollector(t, { token: null });
  const { key, original } = await forkedJournals(t, 4, 0);
  // The journal's head as read before its later commits' callbacks ran: behind every segment after the first.
  const stale = { last_batch: original.links[0].batch, head: original.links[0].head };
  const last = original.links.at(-1)!;
  const byFirst = new Map(original.segments.map((s) => [s.links[0].batch, s]));
  let acked = 0;
  const controller = new AbortController();
  const outcome = runSyncSession({
    target: collector.grpcAddress,
    token: undefined,
    hello: original.hello,
    check: null,
    timeouts: { welcomeMs: 10_000, ackMs: 30_000, heartbeatMs: 5, keepaliveMs: 30_000, keepaliveTimeoutMs: 10_000 },
    window: { segments: 1, bytes: 1 << 20 },
    onWelcome: (w) => w.acked_batch + 1,
    readSegment: (from) => {
      const s = byFirst.get(from);
      return s === undefined ? null : { links: s.links, through: s.links.at(-1)!.batch, records: 0, bytes: 1 };
    },
    onCommit: () => () => {},
    onAck: (ack) => void (acked = ack.through_batch),
    heartbeat: (sent) => {
      const h = heartbeatHead(stale, sent);
      return heartbeat(key, 'pod-w', h.last_batch, h.head);
    },
    signal: controller.signal,
  });
  await eventually('every segment acknowledged', () => acked === last.batch);
  await eventually('a heartbeat at the last batch witnessed', () => collector.witness.heads.lastHeartbeat('pod-w')?.last_batch === last.batch);
  await sleep(100);
  controller.abort();
  t.is((await outcome).kind, 'closed', 'not refused');
  t.deepEqual(collector.witness.heads.forks('pod-w'), []);
  t.is(collector.sidecars()[0].last_refusal, null);
});

test('a heartbeat that names an earlier batch than one witnessed (a tail cut back) is flagged fork-after-witness', async (t) => {
  const collector = await startTestCollector(t, { token: null });
  const { key, original } = await forkedJournals(t, 3, 0);
  const peer = openSync(t, collector.grpcAddress, null);
  t.true((await ship(peer, original.hello, original.segments)).slice(1).every((a) => 'ack' in a));
  const cut = original.segments[0].links.at(-1)!;
  peer.send({ heartbeat: heartbeat(key, 'pod-w', cut.batch, cut.head) });
  const refusal = await peer.next();
  t.true('refusal' in refusal && refusal.refusal.reason.startsWith('fork-after-witness:') && refusal.refusal.reason.includes('a stored link'), JSON.stringify(refusal));
  t.is(await collectorMetric(collector, 'auditmesh_collector_forks_after_witness_total'), 1);
  const evidence = await collector.store.evidence();
  t.true(evidence.some((e) => e.code === 'fork' && e.reason.includes(cut.head)));
});

test('a sidecar whose heartbeats stopped before the collector restarted is still stale after it', async (t) => {
  const collector = await startTestCollector(t, { token: null, heartbeatIntervalMs: 100 });
  const { key, original } = await forkedJournals(t, 1, 0);
  const peer = openSync(t, collector.grpcAddress, null);
  await ship(peer, original.hello, original.segments);
  const end = original.links.at(-1)!;
  peer.send({ heartbeat: heartbeat(key, 'pod-w', end.batch, end.head) });
  await eventually('the heartbeat witnessed', () => collector.witness.heads.lastHeartbeat('pod-w') !== undefined);
  await collector.witness.log.settled();
  peer.close();
  await collector.close();
  const again = await startTestCollector(t, { token: null, storeDir: collector.storeDir, heartbeatIntervalMs: 100 });
  await sleep(400);
  t.is(await collectorMetric(again, 'auditmesh_collector_sidecars', { state: 'stale' }), 1, 'stale, not forgotten');
  t.not(again.sidecars()[0].last_heartbeat, null);
});

test('tree heads name their size: an altered size, root or time no longer verifies', (t) => {
  const key = ephemeralSigningKey();
  const root = 'ab'.repeat(32);
  const input = { tree_size: 5, root, unix_ms: 1_700_000_000_000 };
  const th: TreeHead = { ...input, key_id: key.keyId, sig: '' };
  th.sig = key.sign(Buffer.concat([Buffer.from([0x0c]), Buffer.from('0000000000000005', 'hex'), Buffer.from(root, 'hex'), Buffer.from((1_700_000_000_000).toString(16).padStart(16, '0'), 'hex')]));
  t.true(verifyTreeHead(th, key.publicKeySpki), 'the documented bytes (docs/BUNDLE.md) are what is signed');
  t.false(verifyTreeHead({ ...th, tree_size: 6 }, key.publicKeySpki));
  t.false(verifyTreeHead({ ...th, root: 'cd'.repeat(32) }, key.publicKeySpki));
  t.false(verifyTreeHead({ ...th, unix_ms: th.unix_ms + 1 }, key.publicKeySpki));
});

test('a sidecar process whose journal is put back to an older copy and goes on with the same key is flagged fork-after-witness by a collector process', async (t) => {
  const { startCli } = await import('./helpers/child.js');
  const { startSidecarProcess } = await import('./helpers/sidecar-process.js');
  const { request, startUpstream } = await import('./helpers/net.js');
  const { rm } = await import('node:fs/promises');
  const dir = await tempDir(t);
  const collector = startCli(t, ['collector', '--store', join(dir, 'store'), '--grpc-port', '0', '--http-port', '0', '--insecure', '--checkpoint-interval-ms', '300']);
  const [, grpc, http] = await collector.waitFor(/"grpc":"(127\.0\.0\.1:\d+)","http":"(http:\/\/127\.0\.0\.1:\d+)"/, 90_000);
  const app = await startUpstream();
  t.teardown(app.close);
  const sidecarDir = join(dir, 'sidecar');
  const args = ['--service', 'ledger', '--collector', grpc, '--sidecar-id', 'ledger-0', '--checkpoint-interval-ms', '200'];
  const stored = async (): Promise<number> => (await (await fetch(`${http}/v1/records?limit=1000`)).text()).split('\n').filter(Boolean).length;
  const run = async (from: number, n: number): Promise<void> => {
    const sidecar = await startSidecarProcess(t, { appPort: app.port, dir: sidecarDir, args });
    for (let i = from; i < from + n; i++) t.is((await request(sidecar.ports.inbound, { path: `/items/${i}` })).status, 200);
    await eventually(`${from + n} records stored`, async () => (await stored()) === from + n, 60_000);
    await sidecar.stop();
  };
  await run(0, 3);
  await cp(join(sidecarDir, 'journal'), join(dir, 'older-copy'), { recursive: true });
  await run(3, 3);
  // The journal put back to the older copy, then written on with the same key: its tail is rewritten.
  await rm(join(sidecarDir, 'journal'), { recursive: true });
  await cp(join(dir, 'older-copy'), join(sidecarDir, 'journal'), { recursive: true });
  const again = await startSidecarProcess(t, { appPort: app.port, dir: sidecarDir, args });
  t.is((await request(again.ports.inbound, { path: '/items/rewritten' })).status, 200);
  await collector.waitFor(/fork after witness/, 60_000);
  const sidecars = (await (await fetch(`${http}/v1/sidecars`)).json()) as Array<{ id: string; fork_after_witness?: Array<{ witnessed_by: string; presented_by: string }> }>;
  // Its last heartbeat before and its stored links both named later heads; the new heartbeat names an earlier batch.
  t.like(sidecars[0].fork_after_witness?.[0], { presented_by: 'heartbeat' });
  t.true(metricValue(await (await fetch(`${http}/metrics`)).text(), 'auditmesh_collector_forks_after_witness_total') >= 1);
  t.is(await stored(), 6, 'nothing of the rewritten tail stored');
});
