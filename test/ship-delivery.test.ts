import test from 'ava';
import { peerRecords, startSyncPeer } from './helpers/sync-peer.js';
import { eventually, sidecarMetric, startShippingSidecar } from './helpers/shipping.js';
import { request } from './helpers/net.js';

const idsOf = (records: Record<string, unknown>[]): string[] => records.map((r) => r['audit.request_id']).filter((id): id is string => typeof id === 'string');

test('ships every record to the collector in order, each batch once, chained and signed; the token goes as a bearer credential', async (t) => {
  const peer = await startSyncPeer(t);
  const { sidecar, send } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`);
  const ids = Array.from({ length: 60 }, (_, i) => `order-${i}`);
  for (const id of ids) t.is(await send(id), 200);
  await eventually('all 60 records at the peer', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 60);

  const held = peer.store.get('ledger-0')!;
  t.deepEqual(peer.errors, []);
  t.deepEqual(idsOf(peerRecords(held)), ids, 'in the order they were recorded, none twice');
  t.deepEqual(held.links.map((l) => l.batch), Array.from({ length: held.links.length }, (_, i) => i + 1), 'every link from batch 1, contiguous');
  t.is(held.hello.service, 'ledger');
  t.is(peer.authorizations[0], 'Bearer test-token', 'token file trimmed');
  t.is(await sidecarMetric(sidecar, 'auditmesh_shipper_connected'), 1);
  await eventually('nothing left unshipped', async () => (await sidecarMetric(sidecar, 'auditmesh_shipper_unshipped_records')) === 0);
  t.true((await sidecarMetric(sidecar, 'auditmesh_shipper_records_shipped_total')) >= 60);
  t.true((await sidecarMetric(sidecar, 'auditmesh_shipper_batches_shipped_total')) >= held.links.length - 16);
  t.is(await sidecarMetric(sidecar, 'auditmesh_shipper_lag_seconds'), 0);
});

test('the window bounds the segments in flight; held acks stall shipping, not the sidecar', async (t) => {
  const peer = await startSyncPeer(t, { mode: 'hold-acks' });
  const { sidecar, send } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`, {
    checkpointIntervalMs: 50,
    ship: { windowSegments: 3, windowBytes: 8 * 1024 * 1024, welcomeTimeoutMs: 5_000, ackTimeoutMs: 60_000, keepaliveMs: 5_000, keepaliveTimeoutMs: 5_000, backoffMaxMs: 300 },
  });
  for (let i = 0; i < 10; i++) t.is(await send(`w-${i}`), 200);
  await eventually('the window filled', () => peer.unackedOnStream === 3);
  // Many more commits (checkpoints every 50 ms, plus traffic) are ready to ship; none may go out.
  const head = sidecar.audit!.journal.head.last_batch;
  for (let i = 10; i < 20; i++) t.is(await send(`w-${i}`), 200, 'the sidecar keeps serving');
  await eventually('twenty more links committed', () => sidecar.audit!.journal.head.last_batch >= head + 20);
  t.is(peer.maxUnackedOnStream, 3);
  t.true((await sidecarMetric(sidecar, 'auditmesh_shipper_unshipped_records')) > 0);

  peer.mode = 'normal';
  peer.releaseAcks();
  await eventually('everything shipped once the acks came', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 20);
  t.deepEqual(peer.errors, []);
  t.is(peer.maxUnackedOnStream, 3, 'never more than the window in flight');
});

test('resumes after a sidecar restart from what the collector holds: nothing twice, nothing missing', async (t) => {
  const peer = await startSyncPeer(t);
  const first = await startShippingSidecar(t, `127.0.0.1:${peer.port}`);
  for (let i = 0; i < 20; i++) await send(first.send, `r-${i}`);
  await eventually('first run shipped', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 20);
  await first.sidecar.close();

  const again = await startShippingSidecar(t, `127.0.0.1:${peer.port}`, {}, first.dir);
  for (let i = 20; i < 40; i++) await send(again.send, `r-${i}`);
  await eventually('second run shipped', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 40);
  const records = peerRecords(peer.store.get('ledger-0'));
  t.deepEqual(peer.errors, [], 'the chain continued across the restart');
  t.deepEqual(idsOf(records), Array.from({ length: 40 }, (_, i) => `r-${i}`));
  const links = peer.store.get('ledger-0')!.links;
  t.true(links.every((l, i) => i === 0 || l.first_seq === links[i - 1].first_seq + links[i - 1].count), 'sequence numbers contiguous across the restart');
  t.true(links.some((l) => l.kind === 'epoch' && l.epoch === 2), "the second boot's epoch link was shipped");
  t.true(peer.streams >= 2);
});

test('the collector away: the sidecar serves, stays ready and says why; when it returns, shipping resumes where it left off', async (t) => {
  let peer = await startSyncPeer(t);
  const port = peer.port;
  const { sidecar, send: sendOne } = await startShippingSidecar(t, `127.0.0.1:${port}`);
  for (let i = 0; i < 10; i++) await send(sendOne, `a-${i}`);
  await eventually('shipped before the outage', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 10);
  const store = peer.store;
  await peer.close();

  for (let i = 10; i < 30; i++) await send(sendOne, `a-${i}`);
  await eventually('disconnected', async () => (await sidecarMetric(sidecar, 'auditmesh_shipper_connected')) === 0);
  await eventually('the backlog shows', async () => (await sidecarMetric(sidecar, 'auditmesh_shipper_unshipped_records')) >= 20);
  t.true((await sidecarMetric(sidecar, 'auditmesh_shipper_lag_seconds')) > 0);
  const ready = await request(sidecar.ports.admin, { path: '/readyz' });
  t.is(ready.status, 200, 'the journal is the buffer: still ready');
  t.regex(ready.body.toString(), /collector 127\.0\.0\.1:\d+ unreachable/);

  peer = await startSyncPeer(t, { port, store });
  await eventually('the backlog arrived', () => idsOf(peerRecords(store.get('ledger-0'))).length === 30);
  t.deepEqual(idsOf(peerRecords(store.get('ledger-0'))), Array.from({ length: 30 }, (_, i) => `a-${i}`));
  t.deepEqual(peer.errors, []);
  t.true((await sidecarMetric(sidecar, 'auditmesh_shipper_reconnects_total')) >= 1);
  await eventually('ready without remark', async () => (await request(sidecar.ports.admin, { path: '/readyz' })).body.toString() === 'ready\n');
});

test('an ack lost (stored, then the connection cut): the shipper reconnects, resumes after what was stored, nothing twice', async (t) => {
  const peer = await startSyncPeer(t, { mode: 'drop-ack-once' });
  const { send: sendOne } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`);
  for (let i = 0; i < 15; i++) await send(sendOne, `l-${i}`);
  await eventually('all arrived', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 15);
  const held = peer.store.get('ledger-0')!;
  t.true(peer.streams >= 2, 'a new stream after the cut');
  t.deepEqual(idsOf(peerRecords(held)), Array.from({ length: 15 }, (_, i) => `l-${i}`), 'stored once');
  t.deepEqual(peer.errors, []);
});

test('a collector that lost data (Welcome behind the shipped cursor) gets it again from the journal', async (t) => {
  let peer = await startSyncPeer(t);
  const port = peer.port;
  const { send: sendOne, logged } = await startShippingSidecar(t, `127.0.0.1:${port}`);
  for (let i = 0; i < 10; i++) await send(sendOne, `x-${i}`);
  await eventually('shipped', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 10);
  await peer.close();
  peer = await startSyncPeer(t, { port }); // empty store
  await eventually('shipped again from batch 1', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 10);
  t.is(peer.store.get('ledger-0')!.links[0].batch, 1);
  t.deepEqual(peer.errors, []);
  t.true(logged.some((l) => l.includes('collector holds less than it acknowledged before')));
});

async function send(sendOne: (id: string) => Promise<number>, id: string): Promise<void> {
  const status = await sendOne(id);
  if (status !== 200) throw new Error(`request ${id} got ${status}`);
}
