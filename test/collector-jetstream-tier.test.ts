import test from 'ava';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { readFile } from 'node:fs/promises';
import { connect } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { LEASES_BUCKET, shardOf } from '../control/collector/jetstream/tier-layout.js';
import { startCollectorProcess } from './helpers/collector-process.js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { journalShipment, openSync, startTestCollector, type SyncPeer } from './helpers/collector.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { tempDir } from './helpers/sidecar.js';
import type { CollectorMessage } from '../wire/sync-wire.js';
import { startNatsCluster } from './helpers/nats-cluster.js';
import { eventually, startShippingSidecar, type ShippingSidecar } from './helpers/shipping.js';
import { runInProcess } from './helpers/child.js';
import { verifyDir } from './helpers/journal.js';
import { MAX_QUERY_LIMIT } from '../control/collector/api/record-query.js';
import type { StreamReport } from '../control/collector/jetstream/verify-stream.js';

/**
 * The collector tier on NATS JetStream (control/collector/jetstream/), against a real 3-node
 * nats-server cluster on loopback: what one replica ingests, any replica answers, and the stream
 * alone verifies.
 */

const TOKEN = 'test-token';
const LEASE_MS = 3_000;

async function recordIds(httpUrl: string, auth: { headers: Record<string, string> }, service: string): Promise<string[]> {
  const res = await fetch(`${httpUrl}/v1/records?service=${service}&limit=${MAX_QUERY_LIMIT}`, auth);
  const body = await res.text();
  if (res.status !== 200) throw new Error(`/v1/records: ${res.status} ${body}`);
  return body
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as Record<string, unknown>)['audit.request_id'] as string)
    .sort();
}

async function traffic(s: ShippingSidecar, prefix: string, n: number): Promise<string[]> {
  const ids = Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(5, '0')}`);
  for (let i = 0; i < n; i += 8) await Promise.all(ids.slice(i, i + 8).map((id) => s.send(id)));
  return ids;
}

test.serial('records one replica ingests are answered by another, and verify nats:// checks every chain from the stream', async (t) => {
  const nats = await startNatsCluster(t, 3);
  const jetstream = { urls: nats.urls.split(','), leaseMs: LEASE_MS };
  const a = await startTestCollector(t, { token: TOKEN, jetstream });
  const b = await startTestCollector(t, { token: TOKEN, jetstream });
  await eventually('the shards are shared out', () => a.tier!.leases.owned.size === 4 && b.tier!.leases.owned.size === 4);
  const s = await startShippingSidecar(t, a.grpcAddress, { checkpointIntervalMs: 50, batchMaxRecords: 4 });
  const sent = await traffic(s, 'r', 60);
  const journal = s.sidecar.audit!.journal;
  await eventually('the journal holds every record', () => journal.read().filter((r) => r['audit.service'] === 'ledger').length >= sent.length);
  await eventually('replica b answers every record', async () => (await recordIds(b.httpUrl, b.readAuth, 'ledger').catch(() => [])).length >= sent.length, 60_000);
  t.deepEqual(await recordIds(b.httpUrl, b.readAuth, 'ledger'), sent, 'every record exactly once, from the other replica');
  t.deepEqual(await recordIds(a.httpUrl, a.readAuth, 'ledger'), sent);
  const target = journal.head.last_batch;
  const lastBatch = async (): Promise<number> => ((await (await fetch(`${b.httpUrl}/v1/sidecars`, b.readAuth)).json()) as Array<{ id: string; last_batch: number }>).find((x) => x.id === 'ledger-0')?.last_batch ?? 0;
  await eventually('/v1/sidecars of replica b says the chain is acknowledged through the journal head', async () => (await lastBatch()) >= target);
  await s.sidecar.close();
  t.true((await verifyDir(join(s.dir, 'journal'))).ok);
  const verify = await runInProcess(['verify', nats.urls, '-o', 'json']);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  const report = JSON.parse(verify.stdout) as StreamReport;
  t.is(report.duplicates, 0);
  const chain = report.sidecars.find((x) => x.id === 'ledger-0');
  t.true(chain !== undefined && chain.last_batch >= target && chain.records === sent.length, JSON.stringify(chain));
  const table = await runInProcess(['verify', nats.urls]);
  t.regex(table.stdout, /JetStream tier verified/);
});

test.serial('a replica whose timers fire while it is still joining the tier starts and serves (the reconciler sweeps every 50 ms here)', async (t) => {
  const nats = await startNatsCluster(t, 3);
  const jetstream = { urls: nats.urls.split(','), leaseMs: LEASE_MS };
  // Before, the first sweep during the join read the ingest before it existed and killed the process.
  const a = await startTestCollector(t, { token: TOKEN, jetstream, reconcileGraceMs: 200 });
  const b = await startTestCollector(t, { token: TOKEN, jetstream, reconcileGraceMs: 200 });
  await eventually('the shards are shared out', () => a.tier!.leases.owned.size === 4 && b.tier!.leases.owned.size === 4);
  const sidecars = await fetch(`${b.httpUrl}/v1/sidecars`, b.readAuth);
  t.is(sidecars.status, 200);
  t.deepEqual(await sidecars.json(), []);
  const reconciliation = await fetch(`${a.httpUrl}/v1/reconciliation`, a.readAuth);
  t.is(reconciliation.status, 200, await reconciliation.clone().text());
});

const welcomed = (m: CollectorMessage): number | undefined => (m as { welcome?: { acked_batch: number } }).welcome?.acked_batch;

/** The answers of a stream until it acks batch `last` or ends: its acks, and its status if it ended. */
async function answers(peer: SyncPeer, last: number): Promise<{ acks: number[]; status: grpc.StatusObject | null }> {
  const acks: number[] = [];
  while (acks.at(-1) !== last) {
    let m: CollectorMessage;
    try {
      m = await peer.next(60_000);
    } catch {
      return { acks, status: await peer.status };
    }
    const { ack } = m as { ack?: { through_batch: number } };
    if (ack !== undefined) acks.push(ack.through_batch);
  }
  return { acks, status: null };
}

test.serial('two replicas receiving the same sidecar\'s segments at once: one extends the chain, the other refuses retryably, the chain stays linear', async (t) => {
  const nats = await startNatsCluster(t, 3);
  const jetstream = { urls: nats.urls.split(','), leaseMs: LEASE_MS };
  const a = await startTestCollector(t, { token: TOKEN, jetstream });
  const b = await startTestCollector(t, { token: TOKEN, jetstream });
  const journalDir = join(await tempDir(t), 'journal');
  const key = ephemeralSigningKey();
  await writeJournal({ journalDir, maxBatchRecords: 3, signingKey: key }, 6, 8, (i) => makeRecord(i, { 'audit.service': 'racer', 'audit.request_id': `race-${i}` }));
  const shipment = await journalShipment(journalDir, key, 'racer-0', 'racer');
  const last = shipment.links[shipment.links.length - 1].batch;
  // First contact on one replica pins the chain; then a reconnect race: the same sidecar's stream
  // open on both replicas, both welcomed from the same head.
  const first = openSync(t, a.grpcAddress, TOKEN);
  first.send({ hello: shipment.hello });
  t.is(welcomed(await first.next()), 0);
  first.close();
  const toA = openSync(t, a.grpcAddress, TOKEN);
  const toB = openSync(t, b.grpcAddress, TOKEN);
  toA.send({ hello: shipment.hello });
  toB.send({ hello: shipment.hello });
  t.is(welcomed(await toA.next()), 0);
  t.is(welcomed(await toB.next()), 0);
  for (const segment of shipment.segments) {
    toA.send({ segment });
    toB.send({ segment });
  }
  const [fromA, fromB] = await Promise.all([answers(toA, last), answers(toB, last)]);
  const outcomes = [fromA, fromB];
  const winners = outcomes.filter((o) => o.acks.at(-1) === last);
  const losers = outcomes.filter((o) => o.status?.code === grpc.status.UNAVAILABLE);
  t.is(winners.length, 1, JSON.stringify(outcomes));
  t.is(losers.length, 1, JSON.stringify(outcomes));
  t.true(losers[0].acks.length < shipment.segments.length);
  // The sidecar resumes from the Welcome, on the replica that lost.
  const loser = fromA === losers[0] ? a : b;
  const again = openSync(t, loser.grpcAddress, TOKEN);
  again.send({ hello: { ...shipment.hello } });
  t.is(welcomed(await again.next()), last);
  again.close();
  const verify = await runInProcess(['verify', nats.urls, '-o', 'json']);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  const report = JSON.parse(verify.stdout) as StreamReport;
  t.is(report.duplicates, 0, 'each link stored once');
  const chain = report.sidecars.find((x) => x.id === 'racer-0');
  t.is(chain?.last_batch, last);
  t.is(chain?.records, 48);
  t.is(report.stream_messages, shipment.links.length, 'one message per link');
});

test.serial('a shard owner dies: another replica takes its shards over and answers their queries within the lease time', async (t) => {
  const nats = await startNatsCluster(t, 3);
  const args = ['--jetstream', nats.urls, '--jetstream-lease', `${LEASE_MS}ms`];
  const replicas = [await startCollectorProcess(t, TOKEN, args), await startCollectorProcess(t, TOKEN, args)];
  const nc = await connect({ servers: nats.urls.split(',') });
  t.teardown(() => nc.close());
  const leases = await new Kvm(nc).open(LEASES_BUCKET);
  const ownerOf = async (shard: number): Promise<string | undefined> => {
    const e = await leases.get(`shard.${shard}`);
    return e === null || e.operation !== 'PUT' ? undefined : e.json<{ owner: string }>().owner;
  };
  const ids = await Promise.all(replicas.map(async (r) => (await readFile(join(r.storeDir, 'replica-id'), 'utf8')).trim()));
  const shard = shardOf('ledger-0');
  await eventually('both replicas own shards', async () => {
    const owners = new Set(await Promise.all(Array.from({ length: 8 }, (_, i) => ownerOf(i))));
    return ids.every((id) => owners.has(id));
  });
  const s = await startShippingSidecar(t, replicas[0].grpcAddress, { checkpointIntervalMs: 50, batchMaxRecords: 4 });
  const sent = await traffic(s, 'o', 24);
  await eventually('every record is answered', async () => (await recordIds(replicas[1].httpUrl, replicas[1].readAuth, 'ledger').catch(() => [])).length >= sent.length, 60_000);
  const ownerId = await ownerOf(shard);
  const owner = replicas[ids.indexOf(ownerId!)];
  const other = replicas[1 - ids.indexOf(ownerId!)];
  owner.kill();
  const died = Date.now();
  await eventually('the other replica answers the shard\'s records', async () => (await recordIds(other.httpUrl, other.readAuth, 'ledger').catch(() => [])).length >= sent.length, 6 * LEASE_MS);
  const took = Date.now() - died;
  t.is(await ownerOf(shard), ids[replicas.indexOf(other)], 'the lease moved to the live replica');
  // Within the lease time of the death: the lease lapses two thirds of it after the owner's last renewal (seen as it was written), looked for every twelfth.
  t.true(took <= LEASE_MS, `answered ${took} ms after the owner died (lease ${LEASE_MS} ms)`);
  t.log(`answered ${took} ms after the owner died (lease ${LEASE_MS} ms)`);
  t.deepEqual(await recordIds(other.httpUrl, other.readAuth, 'ledger'), sent);
});
