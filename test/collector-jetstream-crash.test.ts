import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { startNatsCluster } from './helpers/nats-cluster.js';
import { startCollectorProcess, startRoundRobin, type CollectorProcess } from './helpers/collector-process.js';
import { eventually, startShippingSidecar, type ShippingSidecar } from './helpers/shipping.js';
import { runCli } from './helpers/child.js';
import { MAX_QUERY_LIMIT } from '../control/collector/api/record-query.js';
import type { StreamReport } from '../control/collector/jetstream/verify-stream.js';

/**
 * The collector tier survives crashes mid-ingest: 3 NATS nodes (nats-server, JetStream, R3 on
 * loopback), 2 collector replicas behind a TCP round-robin (what the Service does), 4 sidecars
 * under load. kill -9 of one NATS node and one replica, then both come back. This proves crash
 * consistency (kill -9 keeps the page cache), not power-loss durability.
 */

const TOKEN = 'test-token';
const SIDECARS = 4;

interface Loaded {
  s: ShippingSidecar;
  service: string;
  sent: string[];
}

/** Requests through a sidecar, 4 at a time, until `stop()`; every one is answered (the audit never blocks the app). */
function load(s: ShippingSidecar, prefix: string, sent: string[]): { stop(): Promise<void> } {
  let stopped = false;
  const run = (async () => {
    for (let i = 0; !stopped; i += 4) {
      const ids = [0, 1, 2, 3].map((k) => `${prefix}-${String(i + k).padStart(6, '0')}`);
      const statuses = await Promise.all(ids.map((id) => s.send(id)));
      if (statuses.some((st) => st !== 200)) throw new Error(`the sidecar stopped serving: ${statuses.join(',')}`);
      sent.push(...ids);
      await sleep(5);
    }
  })();
  return {
    stop: async () => {
      stopped = true;
      await run;
    },
  };
}

async function ids(c: CollectorProcess, service: string): Promise<string[]> {
  const res = await fetch(`${c.httpUrl}/v1/records?service=${service}&limit=${MAX_QUERY_LIMIT}`, c.readAuth);
  const body = await res.text();
  if (res.status !== 200) throw new Error(`/v1/records: ${res.status} ${body}`);
  return body
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((r) => r['audit.service'] === service)
    .map((r) => r['audit.request_id'] as string)
    .sort();
}

/** What each replica said about its shard leases: what a failure to answer for a shard needs to be understood. */
function leaseLog(replicas: CollectorProcess[]): string {
  return replicas
    .map((r, i) => {
      const out = r.running.output();
      const lines = (out.stdout + out.stderr).split('\n').filter((l) => /shard|lease|replica|NATS|nats/i.test(l));
      return `replica ${i}:\n${lines.slice(-40).join('\n')}`;
    })
    .join('\n');
}

async function ackedBatch(c: CollectorProcess, id: string): Promise<number> {
  const res = await fetch(`${c.httpUrl}/v1/sidecars`, c.readAuth);
  if (res.status !== 200) return 0;
  return ((await res.json()) as Array<{ id: string; last_batch: number }>).find((x) => x.id === id)?.last_batch ?? 0;
}

test('kill -9 of a NATS node and a collector replica mid-ingest: every acknowledged record is in the stream once, every chain verifies, queries return every record', async (t) => {
  t.timeout(600_000);
  const nats = await startNatsCluster(t, 3);
  const args = ['--jetstream', nats.urls, '--jetstream-lease', '10s'];
  const replicas = [await startCollectorProcess(t, TOKEN, args), await startCollectorProcess(t, TOKEN, args)];
  const service = await startRoundRobin(t, () => replicas.map((r) => r.grpcAddress));
  const loaded: Loaded[] = [];
  for (let i = 0; i < SIDECARS; i++) {
    const s = await startShippingSidecar(t, service, { sidecarId: `pod-${i}`, service: `svc${i}`, checkpointIntervalMs: 50, batchMaxRecords: 8 });
    loaded.push({ s, service: `svc${i}`, sent: [] });
  }
  const runs = loaded.map((l) => load(l.s, l.service, l.sent));
  await sleep(3_000);
  // Mid-ingest: a NATS node (not necessarily the stream's leader) and a replica die at once.
  nats.kill(1);
  replicas[0].kill();
  await sleep(4_000);
  await nats.start(1);
  await replicas[0].restart();
  await sleep(3_000);
  await Promise.all(runs.map((r) => r.stop()));
  t.true(loaded.every((l) => l.sent.length > 0));

  // The sidecars reconnect by themselves and ship everything their journals hold.
  const targets: number[] = [];
  for (const l of loaded) {
    const journal = l.s.sidecar.audit!.journal;
    await eventually(`${l.service}'s journal holds every record`, () => journal.read().filter((r) => r['audit.service'] === l.service).length >= l.sent.length);
    const target = journal.head.last_batch;
    targets.push(target);
    await eventually(`${l.service}'s chain is acknowledged through batch ${target}`, async () => (await ackedBatch(replicas[1], l.s.sidecar.config.sidecarId)) >= target, 120_000);
  }
  const journalRecords = loaded.map((l) => l.s.sidecar.audit!.journal.read().length);
  for (const l of loaded) await l.s.sidecar.close();

  const verify = await runCli(['verify', nats.urls, '-o', 'json']);
  t.is(verify.code, 0, verify.stdout + verify.stderr);
  const report = JSON.parse(verify.stdout) as StreamReport;
  t.true(report.ok);
  t.is(report.duplicates, 0, 'no link stored twice');
  for (const [i, l] of loaded.entries()) {
    const chain = report.sidecars.find((x) => x.id === `pod-${i}`);
    t.truthy(chain, `pod-${i} verified`);
    t.true(chain!.last_batch >= targets[i], `pod-${i}: the stream holds its chain through batch ${targets[i]}`);
    t.is(chain!.records, journalRecords[i], `pod-${i}: every record of its journal, once`);
    // Any replica answers for every shard, the restarted one too.
    for (const r of replicas) {
      let found: string[] = [];
      let last = '';
      await eventually(`${l.service}'s records from a replica`, async () => (found = await ids(r, l.service).catch((e: Error) => ((last = e.message), []))).length >= l.sent.length, 60_000).catch((err: Error) => {
        throw new Error(`${err.message}; last answer: ${last} (${found.length} of ${l.sent.length})\n${leaseLog(replicas)}`);
      });
      t.deepEqual(found, [...l.sent].sort(), `${l.service}: every record exactly once`);
    }
  }
});
