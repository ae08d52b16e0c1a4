import test, { type ExecutionContext } from 'ava';
import { generateKeyPairSync, sign, webcrypto, type KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { openMeshCa } from '../control/collector/ingest/mesh-ca.js';
import { collectorAckSigningInput, type CollectorAckKind } from '../ledger/chain.js';
import type { Hello } from '../wire/sync-wire.js';
import type { TestCollector } from './helpers/collector.js';
import { createTokenIssuer, startIdentityCollector, startIdentitySidecar } from './helpers/identity.js';
import { eventually, sidecarMetric, type ShippingSidecar } from './helpers/shipping.js';
import { startSyncPeer, type PeerSigning, type SyncPeer } from './helpers/sync-peer.js';
import type { TokenIssuer } from './cluster/token-issuer.js';

// Signed acknowledgements (issue 24): a sidecar with --ca-file marks batches shipped, and so lets
// retention prune them, only on a Welcome and Acks signed by a key the mesh CA certified for
// serverAuth, the key of the collector's TLS certificate. Real collectors, real gRPC over TLS 1.3,
// and fake collectors on grpc-js with the real proto in the real collector's place.

/** Short enough that every link is past it within a few maintenance ticks (every 100 ms). */
const PRUNING = { journalRetentionMs: 300, checkpointIntervalMs: 100 };
const REASONS = ['unsigned', 'bad-signature', 'untrusted-certificate'];

async function stored(collector: TestCollector): Promise<string[]> {
  const res = await collector.get('/v1/records?service=ledger&limit=1000', collector.readAuth);
  if (!res.ok) throw new Error(`/v1/records: ${res.status} ${await res.text()}`);
  return (await res.text()).split('\n').filter((l) => l !== '').map((l) => (JSON.parse(l) as Record<string, string>)['audit.request_id']);
}

/** A key and a serving certificate for it from the mesh CA in `caDir` (localhost, 127.0.0.1): what a collector has. */
interface Serving {
  privateKey: KeyObject;
  chainPem: string;
  credentials: grpc.ServerCredentials;
}

async function caIssuedServing(caDir: string): Promise<Serving> {
  const ca = await openMeshCa(caDir, { create: false });
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const key = await webcrypto.subtle.importKey('spki', publicKey.export({ format: 'der', type: 'spki' }), { name: 'Ed25519' }, true, ['verify']);
  const { chainPem } = await ca.issue(key, { dns: ['localhost'], ips: ['127.0.0.1'] }, 3_600_000);
  const credentials = grpc.ServerCredentials.createSsl(null, [{ private_key: Buffer.from(privateKey.export({ format: 'pem', type: 'pkcs8' })), cert_chain: Buffer.from(chainPem) }], false);
  return { privateKey, chainPem, credentials };
}

function signedBy(key: KeyObject, kind: CollectorAckKind, hello: Hello, batch: number, head: string): string {
  return sign(null, collectorAckSigningInput(kind, hello.sidecar_id, hello.key_id, batch, head), key).toString('hex');
}

/** A Welcome as the real collector signs it: its chain, its key. */
const honestWelcome = (s: Serving): PeerSigning['welcome'] => (w, hello) => ({ cert_chain_pem: s.chainPem, sig: signedBy(s.privateKey, 'welcome', hello, w.acked_batch, w.acked_head) });

interface Switched {
  s: ShippingSidecar;
  /** The shipped cursor when the real collector went. */
  shipped: number;
  /** The journal's last batch then. */
  lastBatch: number;
}

/**
 * A sidecar certified by a real collector, which stores its first record; then the collector goes,
 * `fake` takes its port, and two more requests go through the sidecar.
 */
async function switchedToFake(t: ExecutionContext, fake: (port: number, collector: TestCollector & { caDir: string }, issuer: TokenIssuer) => Promise<unknown>): Promise<Switched> {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const s = await startIdentitySidecar(t, collector, issuer, PRUNING);
  const journal = s.sidecar.audit!.journal;
  t.is(await s.send('before'), 200);
  await eventually('the first record stored and acknowledged', async () => (await stored(collector)).includes('before') && journal.shippedBatch > 0);
  const { grpcPort } = collector;
  await collector.close();
  await fake(grpcPort, collector, issuer);
  const switched = { s, shipped: journal.shippedBatch, lastBatch: journal.head.last_batch };
  for (const id of ['x', 'y']) t.is(await s.send(id), 200);
  return switched;
}

/** Nothing past the cursor of the switch was marked shipped or pruned: every later link and record is still in the journal. */
function assertNothingBelieved(t: ExecutionContext, { s, shipped, lastBatch }: Switched): void {
  const journal = s.sidecar.audit!.journal;
  t.true(journal.shippedBatch <= shipped, `shipped cursor not advanced (${journal.shippedBatch}, was ${shipped})`);
  const retained = journal.readBatches({ fromBatch: shipped + 1 }).map((h) => h.batch);
  t.is(retained[0], shipped + 1, 'the first link after the cursor is still there');
  t.is(retained.length, retained.at(-1)! - shipped, 'every link after the cursor is still there');
  t.true(journal.head.last_batch >= lastBatch + 20, 'many maintenance ticks went by');
  t.deepEqual(s.sidecar.audit!.read().map((r) => r['audit.request_id']).filter((id) => id === 'x' || id === 'y'), ['x', 'y']);
}

test('a fake collector whose TLS certificate is not from the mesh CA gets no Hello and no record, and causes no pruning', async (t) => {
  let fake: TestCollector | undefined;
  const switched = await switchedToFake(t, async (grpcPort, _collector, issuer) => {
    // Same address, a CA of its own: everything a sidecar sees of it but a certificate chain to the mesh CA.
    fake = await startIdentityCollector(t, issuer, { grpcPort });
  });
  const journal = switched.s.sidecar.audit!.journal;
  await eventually('the shipper failed to reach the fake collector, and many links later', () => switched.s.logged.some((l) => /certificate|self[- ]signed|unable to verify/i.test(l) && l.startsWith('warn')) && journal.head.last_batch >= switched.lastBatch + 20);
  t.is(journal.shippedBatch, switched.shipped, 'shipped cursor unchanged');
  assertNothingBelieved(t, switched);
  t.deepEqual(fake!.sidecars(), [], 'no Hello reached it');
  t.deepEqual(await stored(fake!), [], 'no record reached it');
});

/** Fake collectors with a serving certificate from the mesh CA itself, each lying in one way. */
const liars: Array<{ title: string; reason: string; acks: boolean; signing: (own: Serving, other: Serving) => PeerSigning }> = [
  {
    title: 'signs its Acks with another key',
    reason: 'bad-signature',
    acks: true,
    signing: (own, other) => ({ welcome: honestWelcome(own), ack: (a, hello) => ({ sig: signedBy(other.privateKey, 'ack', hello, a.through_batch, a.head) }) }),
  },
  { title: 'sends unsigned Acks', reason: 'unsigned', acks: true, signing: (own) => ({ welcome: honestWelcome(own), ack: () => ({}) }) },
  {
    title: 'signs its Welcome with another key',
    reason: 'bad-signature',
    acks: false,
    signing: (own, other) => ({ welcome: (w, hello) => ({ cert_chain_pem: own.chainPem, sig: signedBy(other.privateKey, 'welcome', hello, w.acked_batch, w.acked_head) }) }),
  },
  { title: 'sends an unsigned Welcome', reason: 'unsigned', acks: false, signing: () => ({}) },
  {
    // The other certificate is the mesh CA's too, and the Welcome is signed with its key: but it is not the key of the TLS handshake.
    title: "shows another key's mesh CA certificate in its Welcome",
    reason: 'untrusted-certificate',
    acks: false,
    signing: (_own, other) => ({ welcome: honestWelcome(other) }),
  },
];

for (const liar of liars) {
  // Serial: each runs a collector, a sidecar and a fake; side by side they crowd a 2-core machine.
  test.serial(`a fake collector with a mesh CA serving certificate that ${liar.title} causes no pruning, and is counted as ${liar.reason}`, async (t) => {
    let peer: SyncPeer | undefined;
    const switched = await switchedToFake(t, async (port, collector) => {
      const [own, other] = await Promise.all([caIssuedServing(collector.caDir), caIssuedServing(collector.caDir)]);
      // Forgetful: its honest Welcome never claims what it was sent, so only its Acks could move the cursor.
      peer = await startSyncPeer(t, { port, credentials: own.credentials, signing: liar.signing(own, other), forgetful: true });
    });
    const { s } = switched;
    await eventually(`streams ended as ${liar.reason} and retried, many links later`, async () => peer!.streams >= 3 && (await sidecarMetric(s.sidecar, 'auditmesh_shipper_unverified_acks_total', { reason: liar.reason })) >= 2 && s.sidecar.audit!.journal.head.last_batch >= switched.lastBatch + 20);
    if (liar.acks) t.true(peer!.acksSent > 0, 'the fake received segments and answered them');
    else t.is(peer!.segmentsReceived, 0, 'a Welcome not believed: nothing was sent after it');
    assertNothingBelieved(t, switched);
    for (const reason of REASONS.filter((r) => r !== liar.reason)) t.is(await sidecarMetric(s.sidecar, 'auditmesh_shipper_unverified_acks_total', { reason }), 0, reason);
    t.true(s.logged.some((l) => l.startsWith('warn collector acknowledgement did not verify') && l.includes(`"reason":"${liar.reason}"`)), 'logged at warn with its reason');
    t.is((await fetch(`http://127.0.0.1:${s.sidecar.ports.admin}/readyz`)).status, 200, 'the journal buffers: the sidecar stays ready');
  });
}

test("the real collector's acknowledgements verify: retention prunes what it acknowledged, also after a restart with a new serving key", async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const s = await startIdentitySidecar(t, collector, issuer, PRUNING);
  const journal = s.sidecar.audit!.journal;
  for (let i = 0; i < 10; i++) t.is(await s.send(`p-${i}`), 200);
  await eventually('acknowledged, then pruned', async () => (await sidecarMetric(s.sidecar, 'auditmesh_journal_pruned_records_total')) >= 10);
  t.true(journal.readBatches({ limit: 1 })[0].batch - 1 <= journal.shippedBatch, 'nothing past the acknowledged cursor was pruned');

  // Another serving key (a restart, as a renewal or another replica would be): verified per stream, not pinned.
  const firstKey = collector.serving!.privateKey;
  const { grpcPort, storeDir, caDir } = collector;
  await collector.close();
  const again = await startIdentityCollector(t, issuer, { grpcPort, storeDir, identity: { caDir, createCa: false } });
  t.false(again.serving!.privateKey.equals(firstKey), 'a new serving key');
  for (let i = 0; i < 5; i++) t.is(await s.send(`q-${i}`), 200);
  // Records are sealed into batches after the response: the head is read once the last one is in it.
  await eventually('the journal holds q-4', () => journal.read().some((r) => r['audit.request_id'] === 'q-4'));
  const last = journal.head.last_batch;
  await eventually('acknowledged by the restarted collector', () => journal.shippedBatch >= last);
  t.deepEqual((await stored(again)).filter((id) => id.startsWith('q-')).sort(), ['q-0', 'q-1', 'q-2', 'q-3', 'q-4']);
  for (const reason of REASONS) t.is(await sidecarMetric(s.sidecar, 'auditmesh_shipper_unverified_acks_total', { reason }), 0, `${reason} starts at 0 and stays there`);
});
