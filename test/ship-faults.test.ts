import test from 'ava';
import { join } from 'node:path';
import { peerRecords, startMutePeer, startSyncPeer } from './helpers/sync-peer.js';
import { eventually, sidecarMetric, startShippingSidecar } from './helpers/shipping.js';
import { heartbeatSigningInput, verifySignature } from '../ledger/chain.js';
import { loadOrCreateSigningKey } from '../ledger/keys.js';
import { createPublicKey } from 'node:crypto';

const idsOf = (records: Record<string, unknown>[]): unknown[] => records.map((r) => r['audit.request_id']).filter((id) => id !== undefined);

test('a peer that accepts TCP but never speaks HTTP/2 does not stall the shipper: it gives up, reconnects, and the sidecar serves', async (t) => {
  const mute = await startMutePeer(t);
  const { sidecar, send, logged } = await startShippingSidecar(t, `127.0.0.1:${mute.port}`);
  for (let i = 0; i < 5; i++) t.is(await send(`m-${i}`), 200);
  await eventually('a second connection after the Welcome deadline', () => mute.connections() >= 2);
  await eventually('reconnects counted', async () => (await sidecarMetric(sidecar, 'auditmesh_shipper_reconnects_total')) >= 1);
  t.is(await sidecarMetric(sidecar, 'auditmesh_shipper_connected'), 0);
  t.is(await send('m-after'), 200);
  // Abandoned connections do not pile up (grpc-js would leak each one: grpc/grpc-node#2785).
  await eventually('old connections closed', () => mute.open() <= 1);
  t.true(logged.some((l) => l.includes('no HTTP/2 SETTINGS from 127.0.0.1:')));
});

test('a peer that accepts the stream but never answers: the Welcome deadline ends it, and it reconnects', async (t) => {
  const peer = await startSyncPeer(t, { mode: 'silent' });
  const { sidecar, send, logged } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`);
  t.is(await send('s-1'), 200);
  await eventually('three streams opened', () => peer.streams >= 3);
  t.true(logged.some((l) => l.includes('no Welcome within 1500 ms')));
  t.is(await sidecarMetric(sidecar, 'auditmesh_shipper_connected'), 0);

  peer.mode = 'normal';
  await eventually('shipped once the peer answers', () => idsOf(peerRecords(peer.store.get('ledger-0'))).includes('s-1'));
  t.deepEqual(peer.errors, []);
});

test('a peer that welcomes but never acks: the ack deadline ends the stream and the segments go again on the next', async (t) => {
  const peer = await startSyncPeer(t, { mode: 'hold-acks' });
  const { send, logged } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`);
  for (let i = 0; i < 5; i++) t.is(await send(`h-${i}`), 200);
  await eventually('the ack watchdog fired', () => logged.some((l) => l.includes('no Ack within 3000 ms')));
  await eventually('a new stream', () => peer.streams >= 2);
  peer.mode = 'normal';
  await eventually('everything stored', () => idsOf(peerRecords(peer.store.get('ledger-0'))).length === 5);
  t.deepEqual(peer.errors, []);
});

test('a refusal is logged with its code and reason, counted by code, and named in /readyz', async (t) => {
  const peer = await startSyncPeer(t, { mode: 'refuse' });
  peer.refusal = { code: 'key-mismatch', reason: 'sidecar ledger-0 is pinned to another key' };
  const { sidecar, send, logged } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`);
  t.is(await send('k-1'), 200);
  await eventually('counted', async () => (await sidecarMetric(sidecar, 'auditmesh_shipper_batches_refused_total', { code: 'key-mismatch' })) >= 1);
  t.true(logged.some((l) => l.startsWith('error collector refused what it was sent') && l.includes('"code":"key-mismatch"') && l.includes('pinned to another key')));
  const ready = await sidecarReady(sidecar.ports.admin);
  t.regex(ready, /refused \(key-mismatch\)/);
});

test('signed heartbeats arrive every checkpoint interval, even while a backlog ships, and verify with the sidecar key', async (t) => {
  const peer = await startSyncPeer(t, { mode: 'hold-acks' });
  const { dir, send } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`, { checkpointIntervalMs: 100 });
  for (let i = 0; i < 5; i++) t.is(await send(`b-${i}`), 200);
  // Acks held: a backlog is in flight, heartbeats keep coming anyway.
  await eventually('five heartbeats with segments unacknowledged', () => (peer.store.get('ledger-0')?.heartbeats.length ?? 0) >= 5 && peer.unackedOnStream > 0);
  const key = await loadOrCreateSigningKey(join(dir, 'sidecar.key'));
  const publicKey = createPublicKey({ key: key.publicKeySpki, format: 'der', type: 'spki' });
  const beats = peer.store.get('ledger-0')!.heartbeats;
  for (const b of beats) t.true(verifySignature(heartbeatSigningInput('ledger-0', b.unix_ms, b.last_batch, b.head), b.sig, publicKey), `heartbeat at ${b.unix_ms} verifies`);
  t.false(verifySignature(heartbeatSigningInput('someone-else', beats[0].unix_ms, beats[0].last_batch, beats[0].head), beats[0].sig, publicKey), 'bound to the sidecar id');
  t.true(beats[beats.length - 1].last_batch > beats[0].last_batch, 'they carry the journal head as it moves');
  peer.mode = 'normal';
  peer.releaseAcks();
});

async function sidecarReady(adminPort: number): Promise<string> {
  const { request } = await import('./helpers/net.js');
  return (await request(adminPort, { path: '/readyz' })).body.toString();
}
