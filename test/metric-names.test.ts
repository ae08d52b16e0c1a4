import test from 'ava';
import type { AddressInfo } from 'node:net';
import { RULE_GROUPS } from '../control/install/alert-rules.js';
import { grafanaDashboards } from '../control/install/grafana/dashboards.js';
import { createInjectorMetrics } from '../control/injector/injector-metrics.js';
import { createAdminServer } from '../command/admin-server.js';
import { closeServer } from './helpers/net.js';
import { startTestCollector } from './helpers/collector.js';
import { scrape, startTestSidecar } from './helpers/sidecar.js';
import { exposedNames } from './helpers/prom-text.js';
import { dashboardExpressions, parsePromQL } from './helpers/promql.js';

/** Every metric name any alert rule or dashboard query selects. */
function usedNames(): Set<string> {
  const exprs = [...RULE_GROUPS.flatMap((g) => g.rules.map((r) => r.expr)), ...[...grafanaDashboards().values()].flatMap(dashboardExpressions)];
  return new Set(exprs.flatMap((e) => [...parsePromQL(e).metricNames]));
}

test('every metric a rule or dashboard uses is on the /metrics of the component that owns it', async (t) => {
  const sidecar = await startTestSidecar(t);
  // The injector's registry, served by the same admin server `auditmesh injector` serves it with.
  const injectorAdmin = createAdminServer({ registry: createInjectorMetrics().registry, ready: () => ({ ok: true }), subscribe: null });
  await new Promise<void>((resolve) => injectorAdmin.listen(0, '127.0.0.1', resolve));
  t.teardown(() => closeServer(injectorAdmin));
  // With an exporter (its receiver away), so the OTLP export's series exist too.
  const collector = await startTestCollector(t, { exportOtlp: { protocol: 'http/json', url: 'http://127.0.0.1:9/v1/logs', retryMaxMs: 60_000 } });
  const scraped = [await scrape(sidecar.ports.admin), await scrape((injectorAdmin.address() as AddressInfo).port), await (await fetch(`${collector.httpUrl}/metrics`)).text()];
  const exposed = new Set(scraped.flatMap((text) => [...exposedNames(text)]));

  const used = usedNames();
  t.true(used.size >= 40, `only ${used.size} names used`);
  const missing = [...used].filter((name) => !exposed.has(name)).sort();
  t.deepEqual(missing, [], 'used by a rule or dashboard but exposed by no component (a renamed metric?)');
});
