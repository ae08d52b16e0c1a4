import test from 'ava';
import type { ExecutionContext } from 'ava';
import { join } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import { createFleetAlerts, type FleetAnomaly } from '../control/collector/api/fleet-alerts.js';
import { defaultAlertOptions } from '../anomalies/alert-flags.js';
import { createAuditPipeline } from '../proxy/audit/pipeline.js';
import type { AuditRecord } from '../ledger/record.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { journalShipment, openSync, startTestCollector, type TestCollector } from './helpers/collector.js';
import { makeRecord } from './helpers/journal.js';
import { metricValue, tempDir, until } from './helpers/sidecar.js';

/** A long window, so the detector's own timer never fires during a test that drives the windows by hand. */
const WINDOW_MS = 60_000;
const OPTIONS = { ...defaultAlertOptions(), intervalMs: WINDOW_MS, warmupMs: 5 * WINDOW_MS, minRate: 0.5 };

function harness() {
  let clock = Date.now();
  const registry = new Registry();
  const metrics = {
    anomalyActive: new Gauge({ name: 'auditmesh_anomaly_active', help: 'h', labelNames: ['kind', 'service', 'peer', 'direction'] as const, registers: [registry] }),
    anomalies: new Counter({ name: 'auditmesh_anomalies_total', help: 'h', labelNames: ['kind'] as const, registers: [registry] }),
  };
  const logs: Array<Record<string, unknown>> = [];
  const fleet = createFleetAlerts({ options: OPTIONS, metrics, log: (level, msg, fields) => logs.push({ level, msg, ...fields }), now: () => clock });
  const call = (peer: string, extra: Partial<AuditRecord> = {}): AuditRecord =>
    makeRecord(0, { 'audit.service': 'frontend', 'audit.direction': 'outbound', 'peer.service': peer, 'audit.start_unix_ms': clock - 5, 'audit.duration_ms': 3, ...extra });
  /** One window: each replica of frontend makes `perReplica` calls to catalog, then the window closes. */
  const window = (perReplica: number, replicas = ['frontend-a', 'frontend-b']): void => {
    for (const _ of replicas) for (let i = 0; i < perReplica; i++) fleet.observe('frontend', call('catalog'));
    fleet.tick();
    clock += WINDOW_MS;
  };
  const gauge = async (): Promise<number> => metricValue(await registry.metrics(), 'auditmesh_anomaly_active', { kind: 'rate_spike', service: 'frontend', peer: 'catalog', direction: 'outbound' });
  return { fleet, window, call, gauge, logs, advance: (ms: number) => (clock += ms), registry };
}

test('fleet: a spike on one edge summed over its replicas is raised once, listed while active, and cleared', async (t) => {
  const h = harness();
  for (let w = 0; w < 8; w++) h.window(60); // 2 replicas × 1 req/s: baseline 2 req/s
  t.deepEqual(h.fleet.recent(), [], 'steady traffic raised nothing');
  h.window(600); // 20 req/s across the fleet
  const [spike, ...rest] = h.fleet.active();
  t.deepEqual(rest, []);
  t.like(spike, { kind: 'rate_spike', service: 'frontend', peer: 'catalog', direction: 'outbound' } satisfies Partial<FleetAnomaly>);
  t.true(spike!.observed! > 3 * spike!.baseline!);
  t.regex(spike!.message, /fleet-wide outbound rate with frontend → catalog/);
  t.is(await h.gauge(), 1);
  t.is(h.logs.filter((l) => l.msg === 'fleet anomaly').length, 1);
  h.window(600);
  t.is(h.fleet.recent().filter((a) => a.kind === 'rate_spike').length, 1, 'raised once while it lasts');
  for (let w = 0; w < 12 && h.fleet.active().length > 0; w++) h.window(60);
  t.deepEqual(h.fleet.active(), []);
  t.is(await h.gauge(), 0);
});

test('fleet: a backlog of old records (a sidecar catching up) is not a spike; a new peer after warm-up is first-seen', (t) => {
  const h = harness();
  for (let w = 0; w < 8; w++) h.window(60);
  // An hour of records arriving at once, as after a collector outage.
  for (let i = 0; i < 5000; i++) h.fleet.observe('frontend', h.call('catalog', { 'audit.start_unix_ms': Date.now() - 3_600_000 }));
  h.window(60);
  t.deepEqual(h.fleet.active(), []);
  h.fleet.observe('frontend', h.call('billing'));
  // A peer name no service can have is bounded to `unknown`, never a label of its own.
  h.fleet.observe('frontend', h.call('10.0.0.7:443/<script>'));
  t.deepEqual(
    h.fleet.recent().map((a) => `${a.kind}:${a.service}:${a.peer}`),
    ['first_seen_peer:frontend:unknown', 'first_seen_peer:frontend:billing'],
  );
  t.deepEqual(h.fleet.active(), [], 'first-seen events are moments, not active states');
});

/** Ships a live journal to the collector as a shipper would: Hello, then every new signed segment, acked. */
function shipContinuously(t: ExecutionContext, collector: TestCollector, journalDir: string, key: SigningKey, sidecarId: string): { stop(): Promise<void> } {
  const peer = openSync(t, collector.grpcAddress, collector.token);
  let running = true;
  const loop = (async () => {
    let sentThrough = 0;
    let greeted = false;
    while (running) {
      const shipment = await journalShipment(journalDir, key, sidecarId, 'frontend');
      if (!greeted && shipment.segments.length > 0) {
        peer.send({ hello: shipment.hello });
        await peer.next();
        greeted = true;
      }
      const fresh = greeted ? shipment.segments.filter((s) => s.links.at(-1)!.batch > sentThrough) : [];
      for (const segment of fresh) peer.send({ segment });
      for (const _ of fresh) {
        const answer = await peer.next();
        if (!('ack' in answer)) throw new Error(`collector refused ${sidecarId}'s segment: ${JSON.stringify(answer)}`);
      }
      if (fresh.length > 0) sentThrough = fresh.at(-1)!.links.at(-1)!.batch;
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

test('collector: a spike driven through two sidecars’ journals is raised fleet-wide, in /v1/anomalies and auditmesh_anomaly_active', async (t) => {
  // Steady: 2 replicas × ~20 req/s; even a window that catches two windows' worth stays under
  // the 100 req/s floor. The spike: 2 × ~200 req/s.
  const collector = await startTestCollector(t, { alerts: { ...defaultAlertOptions(), intervalMs: 300, warmupMs: 2500, minRate: 100 } });
  const replicas = await Promise.all(
    ['frontend-a', 'frontend-b'].map(async (id) => {
      const journalDir = join(await tempDir(t), 'journal');
      const key = ephemeralSigningKey();
      const pipeline = await createAuditPipeline({ journalDir, signingKey: key, service: 'frontend' });
      t.teardown(() => pipeline.close());
      return { id, pipeline, shipper: shipContinuously(t, collector, journalDir, key, id) };
    }),
  );
  let perTick = 2;
  let calling = true;
  const traffic = Promise.all(
    replicas.map(async ({ pipeline }) => {
      for (let i = 0; calling; i++) {
        for (let k = 0; k < perTick; k++) pipeline.record(makeRecord(i, { 'audit.service': 'frontend', 'audit.direction': 'outbound', 'peer.service': 'catalog' }));
        await new Promise((r) => setTimeout(r, 100));
      }
    }),
  );
  const anomalies = async (): Promise<{ active: FleetAnomaly[]; recent: FleetAnomaly[] }> => (await fetch(`${collector.httpUrl}/v1/anomalies`, collector.readAuth)).json() as Promise<{ active: FleetAnomaly[]; recent: FleetAnomaly[] }>;
  try {
    await new Promise((r) => setTimeout(r, 4000));
    // (A first_seen_peer is fine here: on a loaded machine the first records may land after warm-up.)
    t.deepEqual((await anomalies()).recent.filter((a) => !a.kind.startsWith('first_seen')), [], 'steady traffic raised no spike');
    t.is(collector.sidecars().length, 2, 'both replicas shipped');
    perTick = 20;
    let gaugeSeen = false;
    await until(async () => {
      const metrics = await (await fetch(`${collector.httpUrl}/metrics`)).text();
      gaugeSeen ||= metricValue(metrics, 'auditmesh_anomaly_active', { kind: 'rate_spike', service: 'frontend', peer: 'catalog', direction: 'outbound' }) === 1;
      return gaugeSeen;
    }, 'auditmesh_anomaly_active on the collector', 30_000);
    const { recent } = await anomalies();
    const spike = recent.find((a) => a.kind === 'rate_spike');
    t.like(spike, { service: 'frontend', peer: 'catalog', direction: 'outbound' });
    t.true(spike!.observed! > 3 * spike!.baseline!);
  } finally {
    calling = false;
    await traffic;
    for (const r of replicas) await r.shipper.stop();
  }
});
