import test from 'ava';
import http from 'node:http';
import { join } from 'node:path';
import { createAnomalyDetector, type Anomaly, type AnomalyOptions } from '../anomalies/anomaly-detector.js';
import { request, startUpstream } from './helpers/net.js';
import { followTail, metricValue, scrape, tempDir } from './helpers/sidecar.js';
import { sidecarConfig } from '../proxy/config.js';
import { startSidecar } from '../proxy/sidecar.js';
import { createLogger } from '../command/log.js';

const OPTIONS: Omit<AnomalyOptions, 'onAnomaly' | 'onClear'> = {
  intervalMs: 1000,
  warmupMs: 5000,
  rateFactor: 3,
  minRate: 1,
  errorRatioDelta: 0.2,
  minRequests: 20,
  alpha: 0.2,
  maxKeys: 100,
};

/** A detector on a hand-driven clock: each window is filled, then ticked. */
function harness() {
  let clock = 0;
  const raised: Anomaly[] = [];
  const cleared: string[] = [];
  const detector = createAnomalyDetector({ ...OPTIONS, onAnomaly: (a) => raised.push(a), onClear: (a) => cleared.push(a.kind) }, () => clock);
  const windowOf = (peer: string, requests: number, errors = 0, method = 'GET'): void => {
    for (let i = 0; i < requests; i++) detector.observe(peer, 'inbound', method, i < errors);
    clock += OPTIONS.intervalMs;
    detector.tick();
  };
  return { detector, raised, cleared, windowOf };
}

test('steady traffic with ordinary jitter raises nothing', (t) => {
  const h = harness();
  t.teardown(() => h.detector.close());
  for (let w = 0; w < 60; w++) h.windowOf('frontend', 50 + ((w * 7) % 20), w % 3);
  t.deepEqual(h.raised, []);
});

test('a rate spike after warm-up is raised once and cleared when traffic settles', (t) => {
  const h = harness();
  t.teardown(() => h.detector.close());
  for (let w = 0; w < 10; w++) h.windowOf('frontend', 50);
  h.windowOf('frontend', 400);
  h.windowOf('frontend', 420);
  t.deepEqual(
    h.raised.map((a) => a.kind),
    ['rate_spike'],
  );
  t.is(h.raised[0]!.observed, 400);
  t.true(Math.abs(h.raised[0]!.baseline! - 50) < 1);
  for (let w = 0; w < 5; w++) h.windowOf('frontend', 50);
  t.deepEqual(h.cleared, ['rate_spike']);
});

test('an error spike is raised on the error ratio, not on the rate', (t) => {
  const h = harness();
  t.teardown(() => h.detector.close());
  for (let w = 0; w < 10; w++) h.windowOf('payments', 40, 1);
  h.windowOf('payments', 40, 30);
  t.deepEqual(
    h.raised.map((a) => a.kind),
    ['error_spike'],
  );
});

test('nothing is raised during warm-up; first-seen peers and methods are raised after it', (t) => {
  const h = harness();
  t.teardown(() => h.detector.close());
  h.windowOf('early', 1000);
  for (let w = 0; w < 6; w++) h.windowOf('frontend', 50);
  t.deepEqual(h.raised, []);
  h.windowOf('frontend', 50, 0, 'DELETE');
  h.windowOf('stranger', 5);
  t.deepEqual(
    h.raised.map((a) => `${a.kind}:${a.peer}:${a.method ?? ''}`),
    ['first_seen_method:frontend:DELETE', 'first_seen_peer:stranger:'],
  );
});

test('a real spike through the sidecar raises the metric, one log line and an alert record in the journal', async (t) => {
  const app = await startUpstream();
  t.teardown(app.close);
  const dir = await tempDir(t);
  const logs: Array<Record<string, unknown>> = [];
  const sidecar = await startSidecar(
    sidecarConfig({
      service: 'orders',
      appPort: app.port,
      journalDir: join(dir, 'j'),
      keyFile: join(dir, 'k'),
      redactionKeyFile: join(dir, 'rk'),
      // The steady caller below can never pass 50 req/s (one call, then a 30 ms pause): a spike
      // must come from the burst, however slowly this machine starts the baselines.
      alerts: { ...OPTIONS, intervalMs: 300, warmupMs: 2000, minRate: 50 },
    }),
    createLogger('info', (line) => logs.push(JSON.parse(line))),
  );
  t.teardown(() => sidecar.close());
  const tail = await followTail(t, sidecar.ports.admin);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
  t.teardown(() => agent.destroy());
  const call = (): Promise<unknown> => request(sidecar.ports.inbound!, { headers: { 'x-auditmesh-client': 'frontend' }, agent });

  // Steady: one request every 30 ms for 3 s (warm-up and a settled baseline of ~33 req/s).
  const steadyUntil = Date.now() + 3000;
  while (Date.now() < steadyUntil) {
    await call();
    await new Promise((r) => setTimeout(r, 30));
  }
  t.deepEqual(logs.filter((l) => l.msg === 'anomaly'), [], 'steady traffic raised nothing');
  // The spike: 16 concurrent callers as fast as they go, until the alert has been checked.
  let spiking = true;
  const spike = Promise.all(Array.from({ length: 16 }, async () => {
    while (spiking) await call();
  }));
  // The gauge is 1 while the spike lasts; scraped as a user would, until it shows (a spike that
  // the baseline catches up with clears a window later, so a single scrape could miss it).
  let activeSeen = false;
  for (const until = Date.now() + 15_000; !activeSeen && Date.now() < until; ) {
    activeSeen = metricValue(await scrape(sidecar.ports.admin), 'auditmesh_anomaly_active', { kind: 'rate_spike', peer: 'frontend' }) === 1;
    if (!activeSeen) await new Promise((r) => setTimeout(r, 50));
  }
  const alert = await tail.next((r) => r['audit.kind'] === 'alert' && r['audit.alert.kind'] === 'rate_spike');
  const metrics = await scrape(sidecar.ports.admin);
  spiking = false;
  await spike;
  t.true(activeSeen, 'auditmesh_anomaly_active{kind="rate_spike",peer="frontend"} was 1 during the spike');
  t.is(alert['peer.service'], 'frontend');
  t.is(alert['audit.alert.state'], 'raised');
  t.true(alert['audit.alert.observed']! > 3 * alert['audit.alert.baseline']!);
  t.true(metricValue(metrics, 'auditmesh_anomalies_total', { kind: 'rate_spike' }) >= 1);
  // One log line per raised anomaly, each also in the journal.
  const raisedRecords = (): number => tail.records.filter((r) => r['audit.alert.kind'] === 'rate_spike' && r['audit.alert.state'] === 'raised').length;
  const raisedLogs = (): number => logs.filter((l) => l.msg === 'anomaly' && l.kind === 'rate_spike').length;
  // A record reaches the tail a batch after its log line: let the last one land.
  for (const until = Date.now() + 3000; raisedRecords() < raisedLogs() && Date.now() < until; ) await new Promise((r) => setTimeout(r, 20));
  t.is(raisedLogs(), raisedRecords());

  // A peer never seen before, after warm-up: first_seen_peer.
  await request(sidecar.ports.inbound!, { headers: { 'x-auditmesh-client': 'newcomer' } });
  const firstSeen = await tail.next((r) => r['audit.kind'] === 'alert' && r['audit.alert.kind'] === 'first_seen_peer');
  t.is(firstSeen['peer.service'], 'newcomer');
});
