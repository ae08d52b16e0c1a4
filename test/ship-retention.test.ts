import test from 'ava';
import { startSyncPeer } from './helpers/sync-peer.js';
import { eventually, sidecarMetric, startShippingSidecar } from './helpers/shipping.js';

// Short enough that every link is past it within a few maintenance ticks.
const RETENTION_MS = 300;

test('with a collector, retention prunes only what it acknowledged: unacknowledged links stay however old', async (t) => {
  const peer = await startSyncPeer(t, { mode: 'silent' });
  const { sidecar, send } = await startShippingSidecar(t, `127.0.0.1:${peer.port}`, { journalRetentionMs: RETENTION_MS, checkpointIntervalMs: 50 });
  const journal = sidecar.audit!.journal;
  for (let i = 0; i < 20; i++) t.is(await send(`p-${i}`), 200);
  const sent = journal.head.last_batch;
  // Many maintenance ticks, every link well past the retention time: none acknowledged, none pruned.
  await eventually('forty more links and the first ones far past retention', () => journal.head.last_batch >= sent + 40 && Date.now() - journal.readBatches({ limit: 1 })[0].sealed_unix_ms > RETENTION_MS * 4);
  t.is(journal.readBatches({ limit: 1 })[0].batch, 1, 'the oldest link is still there');
  t.is(sidecar.audit!.read().filter((r) => r['audit.request_id']?.startsWith('p-')).length, 20);
  t.is(await sidecarMetric(sidecar, 'auditmesh_journal_pruned_records_total'), 0);

  peer.mode = 'normal';
  await eventually('acknowledged, then pruned', async () => (await sidecarMetric(sidecar, 'auditmesh_journal_pruned_records_total')) >= 20);
  const oldest = journal.readBatches({ limit: 1 })[0].batch;
  t.true(oldest > 1);
  t.true(oldest - 1 <= journal.shippedBatch, 'nothing past the acknowledged cursor was pruned');
});

test('the shipped cursor is persisted through the journal writer and read back at the next start', async (t) => {
  const peer = await startSyncPeer(t);
  const first = await startShippingSidecar(t, `127.0.0.1:${peer.port}`);
  for (let i = 0; i < 5; i++) t.is(await first.send(`c-${i}`), 200);
  const journal = first.sidecar.audit!.journal;
  const target = journal.head.last_batch;
  await eventually('acknowledged through the traffic', () => journal.shippedBatch >= target);
  const shipped = journal.shippedBatch;
  await first.sidecar.close();
  await peer.close();

  // The collector is gone: the cursor comes from the journal alone.
  const again = await startShippingSidecar(t, '127.0.0.1:1', {}, first.dir);
  t.true(again.sidecar.audit!.journal.shippedBatch >= shipped);
});
