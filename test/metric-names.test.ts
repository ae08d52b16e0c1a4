import test from 'ava';
import type { AddressInfo } from 'node:net';
import { RULE_GROUPS } from '../control/install/alert-rules.js';
import { grafanaDashboards } from '../control/install/grafana/dashboards.js';
import { createInjectorMetrics } from '../control/injector/injector-metrics.js';
import { createAdminServer } from '../proxy/metrics/admin-server.js';
import { closeServer } from './helpers/net.js';
import { startTestCollector } from './helpers/collector.js';
import { scrape, startTestSidecar } from './helpers/sidecar.js';
import { exposedNames } from './helpers/prom-text.js';
import { dashboardExpressions, parsePromQL } from './helpers/promql.js';

/**
 * Names the rules and dashboards use that belong to a component this branch does not have yet:
 * the sidecar's shipper, whose names were agreed in advance. When it lands, the sidecar scraped
 * below exposes them (started with a collector to ship to, if the shipper needs one) and this
 * list empties; until then it must be exactly what the scraped components lack, so a renamed
 * sidecar, injector or collector metric still fails this test.
 */
const NOT_YET_SCRAPED = [
  'auditmesh_shipper_batches_refused_total',
  'auditmesh_shipper_batches_shipped_total',
  'auditmesh_shipper_connected',
  'auditmesh_shipper_lag_seconds',
  'auditmesh_shipper_reconnects_total',
  'auditmesh_shipper_records_shipped_total',
  'auditmesh_shipper_unshipped_records',
];

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
  const collector = await startTestCollector(t);
  const scraped = [await scrape(sidecar.ports.admin), await scrape((injectorAdmin.address() as AddressInfo).port), await (await fetch(`${collector.httpUrl}/metrics`)).text()];
  const exposed = new Set(scraped.flatMap((text) => [...exposedNames(text)]));

  const used = usedNames();
  t.true(used.size >= 40, `only ${used.size} names used`);
  const missing = [...used].filter((name) => !exposed.has(name)).sort();
  t.deepEqual(missing, [...NOT_YET_SCRAPED].sort(), 'used but exposed by no scraped component (a renamed metric?), or listed as not yet scraped but no longer used');
  t.true(NOT_YET_SCRAPED.every((n) => n.startsWith('auditmesh_shipper_')), 'only the shipper\'s metrics may wait for their component');
});
