import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import { writeLocalMonitoring } from '../control/demo/local-prometheus.js';
import { createInjectorMetrics } from '../control/injector/injector-metrics.js';
import { COLLECTOR, INJECTOR } from '../control/install/install-options.js';
import { createAdminServer } from '../command/admin-server.js';
import { startTestCollector } from './helpers/collector.js';
import { closeServer, request, startUpstream } from './helpers/net.js';
import { promtool, requirePrometheus, PROMTOOL } from './helpers/prometheus.js';
import { ruleUnitTests, type AlertCase, type RenderedRule } from './helpers/rule-unit-tests.js';
import { scrapeAsPrometheus } from './helpers/scraped-series.js';
import { startTestSidecar, tempDir } from './helpers/sidecar.js';

const SIDECAR = 'checkout-0';
const COLLECTOR_POD = `${COLLECTOR}-0`;
const INJECTOR_POD = `${INJECTOR}-0`;

// Timelines: one sample a minute from 0m; incidents start at 10m (`x9` is ten samples, 0m to 9m).
const RISING = '0x9 1+1x50';
const STEP = '0x9 1x50';
const FLAT = '0x60';
const POD = ['namespace', 'pod'];

/** Every shipped alert: an incident it must fire on (exactly when its `for:` has passed), normal traffic it must stay silent on, and what it then says. */
const CASES: Record<string, AlertCase> = {
  AuditmeshEdgeHighErrorRatio: {
    // 10% of 1 exchange/s fail from the first rate on (1m); normal traffic fails 1 in 60.
    series: [
      { pod: SIDECAR, name: 'auditmesh_requests_total', match: { status_class: '5xx' }, incident: '0+6x60', normal: '0+1x60' },
      { pod: SIDECAR, name: 'auditmesh_requests_total', match: { status_class: '2xx' }, incident: '0+54x60', normal: '0+59x60' },
    ],
    firesAt: 11,
    severity: 'warning',
    labels: ['namespace', 'service', 'direction', 'peer'],
    value: '10%',
  },
  AuditmeshAnomalyActive: { series: [{ pod: SIDECAR, name: 'auditmesh_anomaly_active', match: { kind: 'rate_spike' }, incident: STEP, normal: FLAT }], firesAt: 10, severity: 'warning', labels: ['namespace', 'service', 'kind', 'peer'] },
  // The workload's service, not the Kubernetes Service the Operator would label the collector's series with.
  AuditmeshFleetAnomalyActive: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_anomaly_active', match: { kind: 'rate_spike', service: 'checkout' }, incident: STEP, normal: FLAT }], firesAt: 10, severity: 'warning', labels: ['namespace', 'service', 'kind', 'peer', 'direction'] },
  AuditmeshFirstSeenEdge: { series: [{ pod: SIDECAR, name: 'auditmesh_anomalies_total', match: { kind: 'first_seen_peer' }, incident: STEP, normal: FLAT }], firesAt: 10, severity: 'info', labels: ['namespace', 'service', 'kind'] },
  AuditmeshEventLoopLag: {
    series: [
      { pod: SIDECAR, name: 'nodejs_eventloop_lag_p99_seconds', incident: '0.01x9 0.25x50', normal: '0.02x60' },
      { pod: SIDECAR, name: 'auditmesh_build_info', incident: '1x60', normal: '1x60' },
    ],
    firesAt: 20,
    severity: 'warning',
    labels: ['namespace', 'pod', 'job', 'instance'],
    value: '250ms',
  },
  AuditmeshExchangesNotRecorded: { series: [{ pod: SIDECAR, name: 'auditmesh_journal_unrecorded_total', match: { reason: 'journal_full' }, incident: RISING, normal: FLAT }], firesAt: 10, severity: 'critical', labels: [...POD, 'reason'] },
  AuditmeshExchangesPassedUnrecorded: { series: [{ pod: SIDECAR, name: 'auditmesh_journal_gap_exchanges_total', match: { reason: 'journal_full' }, incident: RISING, normal: FLAT }], firesAt: 10, severity: 'critical', labels: [...POD, 'reason'] },
  AuditmeshJournalWriteFailures: {
    series: [
      { pod: SIDECAR, name: 'auditmesh_journal_records_total', match: { result: 'failed' }, incident: RISING, normal: FLAT },
      { pod: SIDECAR, name: 'auditmesh_journal_records_total', match: { result: 'written' }, incident: '0+100x60', normal: '0+100x60' },
    ],
    firesAt: 10,
    severity: 'critical',
    labels: POD,
  },
  AuditmeshJournalNearBound: {
    series: [
      { pod: SIDECAR, name: 'auditmesh_journal_bytes', incident: '100x9 900x50', normal: '100+5x60' },
      { pod: SIDECAR, name: 'auditmesh_journal_limit_bytes', incident: '1000x60', normal: '1000x60' },
    ],
    firesAt: 15,
    severity: 'warning',
    labels: POD,
    value: '90%',
  },
  AuditmeshJournalFull: { series: [{ pod: SIDECAR, name: 'auditmesh_journal_full', incident: STEP, normal: FLAT }], firesAt: 10, severity: 'critical', labels: POD },
  AuditmeshRequestsRejected: { series: [{ pod: SIDECAR, name: 'auditmesh_journal_rejected_total', incident: RISING, normal: FLAT }], firesAt: 10, severity: 'critical', labels: POD },
  // Lag 400 s from 10m, growing a minute a minute: 700 s when the 5 minutes have passed.
  AuditmeshShippingLag: { series: [{ pod: SIDECAR, name: 'auditmesh_shipper_lag_seconds', incident: '0x9 400+60x50', normal: '2x60' }], firesAt: 15, severity: 'warning', labels: POD, value: '11m 40s' },
  AuditmeshShippingLagCritical: { series: [{ pod: SIDECAR, name: 'auditmesh_shipper_lag_seconds', incident: '0x9 2000+60x50', normal: '2x60' }], firesAt: 15, severity: 'critical', labels: POD, value: '38m 20s' },
  AuditmeshBatchesRefused: { series: [{ pod: SIDECAR, name: 'auditmesh_shipper_batches_refused_total', match: { code: 'bad-root' }, incident: RISING, normal: FLAT }], firesAt: 10, severity: 'critical', labels: [...POD, 'code'] },
  AuditmeshVerificationFailures: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_collector_verification_failures_total', match: { reason: 'bad-signature' }, incident: RISING, normal: FLAT }], firesAt: 10, severity: 'critical', labels: ['namespace', 'reason'] },
  AuditmeshCollectorForkAfterWitness: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_collector_forks_after_witness_total', incident: '0x9 1x50', normal: FLAT }], firesAt: 10, severity: 'critical', labels: ['namespace'], value: '1' },
  // Two calls checkout → payments found caller-only at 10m (the callee's records never arrived).
  AuditmeshCallsUnreconciled: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_collector_reconcile_disagreements_total', match: { state: 'caller-only' }, incident: '0x9 2x50', normal: FLAT }], firesAt: 10, severity: 'warning', labels: ['namespace', 'caller', 'callee', 'state'], value: '2' },
  AuditmeshCollectorBatchesLost: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_collector_lost_batches_total', incident: '0x9 3x50', normal: FLAT }], firesAt: 10, severity: 'critical', labels: ['namespace'], value: '3' },
  AuditmeshCollectorStoreFull: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_collector_store_full', incident: STEP, normal: FLAT }], firesAt: 10, severity: 'critical', labels: POD },
  AuditmeshCollectorStoreWriteFailures: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_collector_store_write_failures_total', match: { reason: 'disk-full' }, incident: RISING, normal: FLAT }], firesAt: 10, severity: 'critical', labels: [...POD, 'reason'] },
  // Lag 1000 s from 10m, growing a minute a minute: 1600 s when the 10 minutes have passed.
  AuditmeshOtlpExportLag: { series: [{ pod: COLLECTOR_POD, name: 'auditmesh_collector_export_lag_seconds', incident: '0x9 1000+60x50', normal: '1x60' }], firesAt: 20, severity: 'warning', labels: POD, value: '26m 40s' },
  AuditmeshStaleSidecars: {
    series: [
      { pod: COLLECTOR_POD, name: 'auditmesh_collector_sidecars', match: { state: 'stale' }, incident: '0x9 2x50', normal: FLAT },
      { pod: COLLECTOR_POD, name: 'auditmesh_collector_sidecars', match: { state: 'current' }, incident: '3x60', normal: '5x60' },
    ],
    firesAt: 25,
    severity: 'warning',
    labels: ['namespace'],
    value: '2',
  },
  AuditmeshInjectorErrors: {
    series: [
      { pod: INJECTOR_POD, name: 'auditmesh_injector_admissions_total', match: { result: 'error' }, incident: STEP, normal: FLAT },
      { pod: INJECTOR_POD, name: 'auditmesh_injector_admissions_total', match: { result: 'injected' }, incident: '0+5x60', normal: '0+5x60' },
    ],
    firesAt: 10,
    severity: 'warning',
    labels: [],
  },
  // Failing every minute from 10m: the 30 minutes of `for:` end at 40m.
  AuditmeshInjectorCertReloadFailing: { series: [{ pod: INJECTOR_POD, name: 'auditmesh_injector_cert_reloads_total', match: { result: 'failed' }, incident: RISING, normal: FLAT }], firesAt: 40, severity: 'warning', labels: [] },
};

test('every shipped alert fires on the series a real sidecar, collector and injector expose, exactly when due, with its labels and runbook text, and stays silent on normal traffic', async (t) => {
  if (!requirePrometheus(t, [PROMTOOL])) return;
  const started = Date.now();
  const app = await startUpstream((req, res) => {
    res.statusCode = req.url === '/fail' ? 500 : 200;
    res.end();
  });
  t.teardown(app.close);
  const sidecar = await startTestSidecar(t, { service: 'checkout', appPort: app.port });
  // With an exporter (its receiver away), so the export's series exist.
  const collector = await startTestCollector(t, { token: null, exportOtlp: { protocol: 'http/json', url: 'http://127.0.0.1:9/v1/logs', retryMaxMs: 60_000 } });
  const injectorAdmin = createAdminServer({ registry: createInjectorMetrics().registry, ready: () => ({ ok: true }), subscribe: null });
  await new Promise<void>((resolve) => injectorAdmin.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(injectorAdmin));
  // An exchange that succeeds and one that fails, so their series exist as the sidecar labels them.
  for (const path of ['/ok', '/fail']) await request(sidecar.ports.inbound!, { path });
  // A spike takes seconds to drive (the end-to-end test does): its gauges are set as the detectors set them, with the registries' own labels.
  sidecar.metrics.anomalyActive.set({ kind: 'rate_spike', peer: 'payments' }, 0);
  collector.metrics.anomalyActive.set({ kind: 'rate_spike', service: 'checkout', peer: 'payments', direction: 'outbound' }, 0);
  // An edge's disagreement series exists once a call of it is decided one-sided; the reconciliation test drives that end to end.
  collector.metrics.disagreements.inc({ state: 'caller-only', caller: 'checkout', callee: 'payments' }, 0);

  const dir = await tempDir(t);
  const local = { sidecars: [{ service: 'checkout', namespace: 'shop', adminPort: sidecar.ports.admin }], collectorHttpPort: collector.httpPort, injectorAdminPort: (injectorAdmin.address() as AddressInfo).port };
  const { monitoring } = await writeLocalMonitoring(dir, local, { scrapeInterval: '1m', evaluationInterval: '1m' });
  const stored = await scrapeAsPrometheus(monitoring.config);
  const rendered = parse(await readFile(join(dir, 'auditmesh-rules.yml'), 'utf8')) as { groups: Array<{ rules: RenderedRule[] }> };
  const rules = rendered.groups.flatMap((g) => g.rules);
  t.deepEqual(Object.keys(CASES).sort(), rules.map((r) => r.alert).sort(), 'a case for every rendered alert');

  const testFile = join(dir, 'auditmesh-rules.test.yml');
  await writeFile(testFile, stringify(ruleUnitTests('auditmesh-rules.yml', rules, CASES, stored)));
  const ran = Date.now();
  const { code, output } = await promtool(['test', 'rules', testFile]);
  t.is(code, 0, output);
  t.regex(output, /SUCCESS/);
  t.log(`set up in ${ran - started} ms, promtool in ${Date.now() - ran} ms`);
});
