import test from 'ava';
import { join } from 'node:path';
import { startTestCollector } from './helpers/collector.js';
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

test('records one replica ingests are answered by another, and verify nats:// checks every chain from the stream', async (t) => {
  const nats = await startNatsCluster(t, 3);
  const jetstream = { urls: nats.urls.split(','), leaseMs: LEASE_MS };
  const a = await startTestCollector(t, { token: TOKEN, jetstream });
  const b = await startTestCollector(t, { token: TOKEN, jetstream });
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
