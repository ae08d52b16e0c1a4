import test, { type ExecutionContext } from 'ava';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { open } from 'lmdb';
import { openCollectorStores } from '../control/collector/store/store-layout.js';
import { verifyStoreDir } from '../control/collector/store/verify-store.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import type { CollectorMessage } from '../wire/sync-wire.js';
import type { SidecarStatus } from '../control/collector/api/sidecar-status.js';
import { runCli } from './helpers/child.js';
import { journalShipment, openSync, signedHello, type JournalShipment, type SyncPeer, type TestCollector } from './helpers/collector.js';
import { createTokenIssuer, sidecarToken, startTokenCollector } from './helpers/identity.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { eventually, startShippingSidecar } from './helpers/shipping.js';
import { metricValue, tempDir } from './helpers/sidecar.js';
import type { TokenSubject } from './cluster/token-issuer.js';

// Issue 24: a sidecar's id is bound to its pod (NS/POD) and its incarnation to the pod's uid. A
// StatefulSet pod recreated under the same name (a fresh emptyDir, a new journal key) ships a
// chain of its own beside the old one instead of being refused key-mismatch forever; a key
// change inside one incarnation still has to be endorsed. Real JWTs, real gRPC, real LMDB stores.

const ID = 'shop/ledger-0';
const ledgerPod = (uid: string): TokenSubject => ({ namespace: 'shop', pod: { name: 'ledger-0', uid }, serviceAccount: { name: 'ledger', uid: 'sa-ledger' } });
const LEDGER_IDENTITY = 'spiffe://cluster.local/ns/shop/sa/ledger';

/** A real journal of 24 records (3 commits, batches of at most 3) signed by `key`, its paths under /`marker`/, read back as segments. */
async function shipment(t: ExecutionContext, key: SigningKey, marker: string): Promise<JournalShipment> {
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, maxBatchRecords: 3, signingKey: key }, 3, 8, (i) => makeRecord(i, { 'url.path': `/${marker}/${i}` }));
  return journalShipment(journalDir, key, ID, 'ledger');
}

/** Sends `segments` and awaits one answer each. */
async function sendAll(peer: SyncPeer, segments: JournalShipment['segments']): Promise<CollectorMessage[]> {
  for (const segment of segments) peer.send({ segment });
  const answers: CollectorMessage[] = [];
  for (let i = 0; i < segments.length; i++) answers.push(await peer.next());
  return answers;
}

async function records(c: TestCollector, query: string): Promise<Record<string, unknown>[]> {
  const res = await fetch(`${c.httpUrl}/v1/records${query}`, c.readAuth);
  if (!res.ok) throw new Error(`/v1/records${query}: ${res.status} ${await res.text()}`);
  return (await res.text()).split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

async function sidecars(c: TestCollector): Promise<SidecarStatus[]> {
  return (await (await fetch(`${c.httpUrl}/v1/sidecars`, c.readAuth)).json()) as SidecarStatus[];
}

test('a new pod uid starts a chain of its own from batch 0; the old incarnation still drains its own; both verify with auditmesh verify', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startTokenCollector(t, issuer);
  const k1 = ephemeralSigningKey();
  const k2 = ephemeralSigningKey();
  const [s1, s2] = await Promise.all([shipment(t, k1, 'one'), shipment(t, k2, 'two')]);
  t.true(s1.segments.length >= 2, 'the first journal has a segment left to drain later');

  // Incarnation uid-1 ships its first segment, then its pod is recreated.
  const first = openSync(t, collector.grpcAddress, await sidecarToken(issuer, ledgerPod('uid-1')));
  first.send({ hello: s1.hello });
  t.like(await first.next(), { body: 'welcome', welcome: { acked_batch: 0 } });
  t.like(await sendAll(first, s1.segments.slice(0, 1)), [{ body: 'ack' }]);
  first.close();

  // Same NS/POD, uid-2, a fresh journal and a new key: a chain of its own, welcomed from nothing.
  const second = openSync(t, collector.grpcAddress, await sidecarToken(issuer, ledgerPod('uid-2')));
  second.send({ hello: s2.hello });
  // The Welcome also carries the collector's signed-ack fields (empty without a mesh CA); only its position is asserted here.
  t.like(await second.next(), { body: 'welcome', welcome: { acked_batch: 0, acked_head: '0'.repeat(64) } });
  t.true((await sendAll(second, s2.segments)).every((a) => a.body === 'ack'), 'no key-mismatch');

  // uid-1's token again (its sidecar draining the old journal): it resumes its own chain, not uid-2's.
  const drain = openSync(t, collector.grpcAddress, await sidecarToken(issuer, ledgerPod('uid-1')));
  drain.send({ hello: signedHello(k1, ID, 'ledger') });
  const resumed = s1.segments[0].links.at(-1)!;
  t.like(await drain.next(), { body: 'welcome', welcome: { acked_batch: resumed.batch, acked_head: resumed.head } });
  t.true((await sendAll(drain, s1.segments.slice(1))).every((a) => a.body === 'ack'));

  const chains = await sidecars(collector);
  t.is(chains.length, 2);
  const of = (uid: string): SidecarStatus => chains.find((c) => c.incarnation === uid)!;
  t.like(of('uid-1'), { id: ID, key_id: k1.keyId, last_seq: 24, verified: true, last_refusal: null, current: false });
  t.like(of('uid-2'), { id: ID, key_id: k2.keyId, last_seq: 24, verified: true, last_refusal: null, current: true });

  const stored = await records(collector, '?service=ledger&limit=1000');
  t.is(stored.length, 48);
  const byIncarnation = (uid: string, marker: string): number => stored.filter((r) => r['audit.incarnation'] === uid && String(r['url.path']).startsWith(`/${marker}/`)).length;
  t.is(byIncarnation('uid-1', 'one'), 24, "the first journal's records are of uid-1 only");
  t.is(byIncarnation('uid-2', 'two'), 24, "the second journal's records are of uid-2 only");
  t.true(stored.every((r) => r['audit.sidecar_id'] === ID && r['audit.identity'] === LEDGER_IDENTITY && r['audit.identity_mismatch'] === undefined));

  await collector.close();
  const verify = await runCli(['verify', collector.storeDir]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  t.regex(verify.stdout, new RegExp(`^ok +shop/ledger-0@uid-1 +key ${k1.keyId}  24 records`, 'm'));
  t.regex(verify.stdout, new RegExp(`^ok +shop/ledger-0@uid-2 +key ${k2.keyId}  24 records`, 'm'));
  t.regex(verify.stdout, /collector store verified: 48 records of 1 sidecars in 2 chains \(incarnations\), every chain end to end/);
  const json = JSON.parse((await runCli(['verify', collector.storeDir, '-o', 'json'])).stdout) as { sidecars: Array<{ id: string; incarnation: string | null; ok: boolean }> };
  t.deepEqual(json.sidecars.map(({ id, incarnation, ok }) => ({ id, incarnation, ok })), [
    { id: ID, incarnation: 'uid-1', ok: true },
    { id: ID, incarnation: 'uid-2', ok: true },
  ]);
});

for (const credential of ['the same pod uid', 'a shared token'] as const) {
  test(`a new key inside one incarnation (${credential}) that nothing endorses is still refused key-mismatch`, async (t) => {
    const issuer = await createTokenIssuer();
    const collector = await startTokenCollector(t, issuer);
    const token = async (): Promise<string> => (credential === 'a shared token' ? 'shared-local-token' : sidecarToken(issuer, ledgerPod('uid-1')));
    const [s1, s2] = await Promise.all([shipment(t, ephemeralSigningKey(), 'one'), shipment(t, ephemeralSigningKey(), 'two')]);
    const first = openSync(t, collector.grpcAddress, await token());
    first.send({ hello: s1.hello });
    await first.next();
    t.true((await sendAll(first, s1.segments)).every((a) => a.body === 'ack'));
    first.close();
    const other = openSync(t, collector.grpcAddress, await token());
    other.send({ hello: s2.hello });
    t.like(await other.next(), { body: 'welcome' });
    other.send({ segment: s2.segments[0] });
    t.like(await other.next(), { body: 'refusal', refusal: { code: 'key-mismatch' } });
    t.is((await other.status).code, grpc.status.PERMISSION_DENIED);
    t.is((await sidecars(collector)).length, 1, 'no second chain');
  });
}

test("a sidecar id holding '@' (the incarnation separator of chain keys) is refused as malformed", async (t) => {
  const collector = await startTokenCollector(t, await createTokenIssuer());
  const peer = openSync(t, collector.grpcAddress, 'shared-local-token');
  peer.send({ hello: signedHello(ephemeralSigningKey(), 'shop/ledger-0@uid-1') });
  t.like(await peer.next(), { body: 'refusal', refusal: { code: 'malformed' } });
  t.deepEqual(collector.sidecars(), []);
});

test('a real sidecar whose pod is recreated (journal and key gone, a token of a new uid) ships again: both chains verify and both are queryable', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startTokenCollector(t, issuer, { heartbeatIntervalMs: 1000 });
  const dir = await tempDir(t);
  const identityTokenFile = join(dir, 'identity-token');
  const start = async (uid: string) => {
    await writeFile(identityTokenFile, await sidecarToken(issuer, ledgerPod(uid)));
    return startShippingSidecar(t, collector.grpcAddress, { collectorTokenFile: undefined, identityTokenFile, sidecarId: ID }, dir);
  };
  const stored = async (): Promise<Record<string, unknown>[]> => records(collector, '?service=ledger&limit=1000');

  const before = await start('uid-1');
  for (const id of ['a1', 'a2', 'a3']) t.is(await before.send(id), 200);
  await eventually('3 records of uid-1 stored', async () => (await stored()).length === 3);
  await before.sidecar.close();
  // The pod is recreated: its emptyDir (journal and key) is gone, its token names the new uid.
  await rm(join(dir, 'journal'), { recursive: true });
  await rm(join(dir, 'sidecar.key'));
  const after = await start('uid-2');
  for (const id of ['b1', 'b2']) t.is(await after.send(id), 200);
  await eventually('2 records of uid-2 stored', async () => (await stored()).length === 5);
  await after.sidecar.close();

  const chains = await sidecars(collector);
  t.deepEqual(chains.map((c) => [c.incarnation, c.verified, c.last_refusal, c.current]).sort(), [
    ['uid-1', true, null, false],
    ['uid-2', true, null, true],
  ]);
  const all = await stored();
  const ids = (uid: string): string[] => all.filter((r) => r['audit.incarnation'] === uid).map((r) => String(r['audit.request_id'])).sort();
  t.deepEqual(ids('uid-1'), ['a1', 'a2', 'a3']);
  t.deepEqual(ids('uid-2'), ['b1', 'b2']);
  // Once the new incarnation's heartbeats stop too, it alone is stale: the replaced one's silence is expected.
  await eventually('uid-2 stale', async () => (await sidecars(collector)).some((c) => c.incarnation === 'uid-2' && c.last_heartbeat !== null && !c.heartbeat_current));
  const gauge = await (await fetch(`${collector.httpUrl}/metrics`)).text();
  t.is(metricValue(gauge, 'auditmesh_collector_sidecars', { state: 'stale' }), 1);
  const query = await runCli(['query', '--collector', collector.httpUrl, ...collector.readerArgs, '--service', 'ledger', '-o', 'json']);
  t.is(query.code, 0, query.stderr);
  t.deepEqual(query.stdout.trim().split('\n').map((l) => (JSON.parse(l) as Record<string, unknown>)['audit.incarnation']).sort(), ['uid-1', 'uid-1', 'uid-1', 'uid-2', 'uid-2']);

  await collector.close();
  const verify = await runCli(['verify', collector.storeDir]);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  t.regex(verify.stdout, /^ok +shop\/ledger-0@uid-1 +key \w+ +3 records/m);
  t.regex(verify.stdout, /^ok +shop\/ledger-0@uid-2 +key \w+ +2 records/m);
});

test("verify fails a store whose identity stamp names a batch its chain does not hold, or whose chain's state was moved under another incarnation's key", async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startTokenCollector(t, issuer);
  const s = await shipment(t, ephemeralSigningKey(), 'one');
  const peer = openSync(t, collector.grpcAddress, await sidecarToken(issuer, ledgerPod('uid-1')));
  peer.send({ hello: s.hello });
  await peer.next();
  t.true((await sendAll(peer, s.segments)).every((a) => a.body === 'ack'));
  await collector.close();
  t.true((await verifyStoreDir(collector.storeDir)).ok);

  const tamper = async (edit: (stores: ReturnType<typeof openCollectorStores>) => void): Promise<void> => {
    const stores = openCollectorStores(open({ path: collector.storeDir }));
    edit(stores);
    await stores.env.close();
  };
  await tamper((stores) => stores.identities.putSync([`${ID}@uid-1`, 999], LEDGER_IDENTITY));
  const stamped = await verifyStoreDir(collector.storeDir);
  t.false(stamped.ok);
  t.like(stamped.failure, { sidecar: `${ID}@uid-1`, batch: 999 });
  t.regex(stamped.failure?.problem ?? '', /an identity stamp \(spiffe:\/\/cluster\.local\/ns\/shop\/sa\/ledger\) names batch 999, whose records this chain does not hold/);

  await tamper((stores) => {
    stores.identities.removeSync([`${ID}@uid-1`, 999]);
    stores.sidecars.putSync(`${ID}@uid-2`, stores.sidecars.get(`${ID}@uid-1`)!);
  });
  const moved = await verifyStoreDir(collector.storeDir);
  t.false(moved.ok);
  t.regex(moved.failure?.problem ?? '', /the chain stored as shop\/ledger-0@uid-2 names itself sidecar shop\/ledger-0, incarnation uid-1/);
});
