import test from 'ava';
import http from 'node:http';
import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { writeLocalMonitoring } from '../control/demo/local-prometheus.js';
import { defaultAlertOptions } from '../anomalies/alert-flags.js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { journalShipment, openSync, startTestCollector } from './helpers/collector.js';
import { makeRecord, writeJournal } from './helpers/journal.js';
import { request, startUpstream } from './helpers/net.js';
import { freePort, requirePrometheus, startAlertmanager, startPrometheus, until, type Prometheus } from './helpers/prometheus.js';
import { startTestSidecar, tempDir } from './helpers/sidecar.js';

// 15m × 0.005 = 4.5 s; the shipping-lag threshold of 300 s becomes 1.5 s.
const SCALE = '0.005';
const NAMESPACE = 'shop';
const LONG = '/fill/' + 'x'.repeat(2000);

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Requests at `perSecond` to `port` for `ms`. */
async function drive(port: number, perSecond: number, ms: number, agent: http.Agent): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    void request(port, { path: '/spike', agent }).catch(() => {});
    await sleep(1000 / perSecond);
  }
}

/** A segment of a real journal with one record's bytes changed, sent to the collector like a sidecar would. */
async function sendTamperedSegment(t: ExecutionContext, grpcAddress: string): Promise<void> {
  const key = ephemeralSigningKey();
  const journalDir = join(await tempDir(t), 'journal');
  await writeJournal({ journalDir, maxBatchRecords: 3, signingKey: key }, 2, 6, (i) => makeRecord(i, { 'url.path': `/items/${i}` }));
  const s = await journalShipment(journalDir, key, 'tampered-0');
  const k = s.segments.findIndex((g) => g.links.some((l) => l.kind === 'records'));
  const link = s.segments[k]!.links.find((l) => l.kind === 'records')!;
  link.records[0] = Buffer.from(link.records[0]!.toString().replace('/items/', '/itemz/'));
  const peer = openSync(t, grpcAddress, null);
  peer.send({ hello: s.hello });
  await peer.next();
  for (const before of s.segments.slice(0, k)) {
    peer.send({ segment: before });
    await peer.next();
  }
  peer.send({ segment: s.segments[k] });
  const answer = await peer.next();
  if (answer.body !== 'refusal') throw new Error(`the tampered segment was not refused: ${answer.body}`);
}

/** The alert's labels once Prometheus has had it firing (its ALERTS series: a spike may be over by the time one looks). */
const firedLabels = async (p: Prometheus, alertname: string): Promise<Record<string, string> | undefined> =>
  (await p.query(`last_over_time(ALERTS{alertname="${alertname}", alertstate="firing"}[1m])`))[0]?.metric;
const firing = (p: Prometheus, alertname: string) => until(`${alertname} firing in Prometheus`, 40_000, () => firedLabels(p, alertname));

test('journal full, collector away, a tampered segment, a traffic spike and stopped heartbeats each fire their alert in Prometheus and reach Alertmanager', async (t) => {
  if (!requirePrometheus(t)) return;
  const started = Date.now();
  const app = await startUpstream();
  t.teardown(app.close);
  const collector = await startTestCollector(t, { token: null, heartbeatIntervalMs: 300 });
  const full = await startTestSidecar(t, { service: 'full', appPort: app.port, journalLimitBytes: 256 * 1024, checkpointIntervalMs: 100 });
  const lagging = await startTestSidecar(t, { service: 'lagging', appPort: app.port, collector: `127.0.0.1:${await freePort()}` });
  const spiky = await startTestSidecar(t, { service: 'spiky', appPort: app.port, alerts: { ...defaultAlertOptions(), intervalMs: 1000, warmupMs: 3000 } });
  const stale = await startTestSidecar(t, { service: 'stale', appPort: app.port, collector: collector.grpcAddress, checkpointIntervalMs: 300 });

  t.log(`auditmesh up in ${Date.now() - started} ms`);
  const am = await startAlertmanager(t);
  const sidecars = Object.entries({ full, lagging, spiky, stale }).map(([service, s]) => ({ service, namespace: NAMESPACE, adminPort: s.ports.admin }));
  const { monitoring } = await writeLocalMonitoring(await tempDir(t), { sidecars, collectorHttpPort: Number(new URL(collector.httpUrl).port) }, { scrapeInterval: '500ms', evaluationInterval: '500ms', alertmanager: am.address }, ['--alert-duration-scale', SCALE]);
  const prometheus = await startPrometheus(t, monitoring.config);
  // Incidents come after Prometheus has seen the counters at 0: an increase needs the sample before it.
  await until('every target scraped twice', 20_000, async () => ((await prometheus.query('count_over_time(up[5s]) >= 2 and up == 1')).length === sidecars.length + 1 ? true : undefined));
  t.log(`set up in ${Date.now() - started} ms`);

  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  t.teardown(() => agent.destroy());
  const conditions = {
    AuditmeshJournalFull: async () => {
      for (let i = 0; i < 400; i++) await Promise.all(Array.from({ length: 4 }, (_, k) => request(full.ports.inbound!, { path: `${LONG}?i=${i}-${k}`, agent })));
    },
    AuditmeshShippingLag: () => request(lagging.ports.inbound!, { path: '/unshipped', agent }),
    AuditmeshVerificationFailures: () => sendTamperedSegment(t, collector.grpcAddress),
    AuditmeshAnomalyActive: async () => {
      await drive(spiky.ports.inbound!, 5, 3500, agent);
      // Bursts over a quiet baseline until the alert is seen: a burst is a spike for a window or two, until the baseline catches up.
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && (await firedLabels(prometheus, 'AuditmeshAnomalyActive')) === undefined) {
        await drive(spiky.ports.inbound!, 150, 2500, agent);
        await drive(spiky.ports.inbound!, 5, 2000, agent);
      }
    },
    AuditmeshStaleSidecars: async () => {
      await until('the stale-to-be sidecar heartbeats', 20_000, async () => ((await prometheus.query('auditmesh_collector_sidecars{state="current"} > 0')).length > 0 ? true : undefined));
      await stale.close();
    },
  };
  const expected: Record<keyof typeof conditions, Record<string, string>> = {
    AuditmeshJournalFull: { namespace: NAMESPACE, pod: 'full-0', severity: 'critical' },
    AuditmeshShippingLag: { namespace: NAMESPACE, pod: 'lagging-0', severity: 'warning' },
    AuditmeshVerificationFailures: { namespace: 'auditmesh-system', reason: 'bad-root', severity: 'critical' },
    AuditmeshAnomalyActive: { namespace: NAMESPACE, service: 'spiky', kind: 'rate_spike', peer: 'unknown', severity: 'warning' },
    AuditmeshStaleSidecars: { namespace: 'auditmesh-system', severity: 'warning' },
  };
  const times: string[] = [];
  await Promise.all(
    Object.entries(conditions).map(async ([alertname, drive]) => {
      const since = Date.now();
      await drive();
      const labels = await firing(prometheus, alertname);
      const notified = await am.next((a) => a.labels.alertname === alertname && a.status === 'firing', 20_000);
      times.push(`${alertname} ${Date.now() - since} ms`);
      t.like(labels, expected[alertname as keyof typeof conditions], alertname);
      t.like(notified.labels, expected[alertname as keyof typeof conditions], `${alertname} at Alertmanager`);
      // The runbook text names what the alert carries: no template reference left without a value.
      t.notRegex(notified.annotations.description ?? '', /<no value>|\{\{/, alertname);
      t.true((notified.annotations.summary ?? '').length > 0, alertname);
    }),
  );
  t.log(times.join(', '));
});
