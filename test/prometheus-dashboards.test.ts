import test from 'ava';
import { readFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { parse } from 'yaml';
import { grafanaDashboards } from '../control/install/grafana/dashboards.js';
import { createInjectorMetrics } from '../control/injector/injector-metrics.js';
import { createAdminServer } from '../command/admin-server.js';
import { startCli } from './helpers/child.js';
import { closeServer } from './helpers/net.js';
import { dashboardExpressions } from './helpers/promql.js';
import { promtool, requirePrometheus, startPrometheus, until, PROMETHEUS, PROMTOOL } from './helpers/prometheus.js';
import { tempDir } from './helpers/sidecar.js';

// Grafana's variables as "All" selects them; the rate window spans several of the demo's 2 s scrapes.
const asGrafanaRunsIt = (expr: string): string => expr.replaceAll('$__rate_interval', '20s').replaceAll('$namespace', '.*').replaceAll('$service', '.+');

test('after demo traffic every dashboard query answers from Prometheus, error panels with 0, and no /metrics has a promtool finding on auditmesh series', async (t) => {
  if (!requirePrometheus(t, [PROMETHEUS, PROMTOOL])) return;
  const dir = await tempDir(t);
  const demo = startCli(t, ['demo', '--dir', dir, '--rate', '10']);
  const [, configFile] = await demo.waitFor(/--config\.file=(\S+)/, 60_000);
  const config = parse(await readFile(configFile!, 'utf8')) as { scrape_configs: Array<{ static_configs: Array<{ targets: string[] }> }> };
  const targets = config.scrape_configs.flatMap((j) => j.static_configs.flatMap((s) => s.targets));
  t.is(targets.length, 4, 'three sidecars and the collector, from the rendered PodMonitor and ServiceMonitor');
  const prometheus = await startPrometheus(t, config as unknown as Record<string, unknown>);
  // Every target scraped a few times, so rate() has samples to go on.
  await until('every target scraped three times', 30_000, async () => ((await prometheus.query('count_over_time(up[20s]) >= 3 and up == 1')).length === 4 ? true : undefined));
  // A few scrapes of traffic on every edge, the gRPC hop included.
  await until('gRPC traffic scraped twice', 30_000, async () => ((await prometheus.query('rate(auditmesh_requests_total{grpc_status="0"}[20s]) > 0')).length > 0 ? true : undefined));

  const expressions = [...grafanaDashboards()].flatMap(([name, d]) => dashboardExpressions(d).map((expr) => ({ name, expr })));
  const empty: string[] = [];
  for (const { name, expr } of expressions) {
    const q = asGrafanaRunsIt(expr.replace(/^label_values\((.*),\s*\w+\)$/, '$1'));
    if ((await prometheus.query(q)).length === 0) empty.push(`${name}: ${q}`);
  }
  t.true(expressions.length >= 50, `${expressions.length} queries`);
  t.deepEqual(empty, [], 'queries with no data');
  // The error panels read 0 rather than nothing: their counters exist for every known reason and code.
  for (const expr of ['sum(auditmesh_journal_unrecorded_total{reason="journal_full"})', 'sum(auditmesh_shipper_batches_refused_total{code="bad-root"})', 'sum(auditmesh_collector_verification_failures_total{reason="bad-signature"})']) {
    t.deepEqual((await prometheus.query(expr)).map((r) => r.value[1]), ['0'], expr);
  }

  // promtool's lint on every /metrics auditmesh serves: the sidecars', the collector's, and the injector's admin port.
  const injectorAdmin = createAdminServer({ registry: createInjectorMetrics().registry, ready: () => ({ ok: true }), subscribe: null });
  await new Promise<void>((resolve) => injectorAdmin.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(injectorAdmin));
  const findings = new Set<string>();
  for (const target of [...targets, `127.0.0.1:${(injectorAdmin.address() as AddressInfo).port}`]) {
    const { output } = await promtool(['check', 'metrics'], await (await fetch(`http://${target}/metrics`)).text());
    for (const line of output.split('\n').filter((l) => l !== '')) findings.add(line);
  }
  t.deepEqual([...findings].filter((f) => f.startsWith('auditmesh_')), [], 'findings on auditmesh series');
  // prom-client's own default metrics keep theirs (README, Metrics): gauges named *_total.
  t.deepEqual([...findings].sort(), ['nodejs_active_handles_total non-counter metrics should not have "_total" suffix', 'nodejs_active_requests_total non-counter metrics should not have "_total" suffix', 'nodejs_active_resources_total non-counter metrics should not have "_total" suffix']);
  demo.child.kill('SIGINT');
  t.is((await demo.done).code, 0);
});
