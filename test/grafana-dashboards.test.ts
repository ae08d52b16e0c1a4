import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dashboardFiles, grafanaDashboards } from '../control/install/grafana/dashboards.js';
import { ROOT } from './helpers/child.js';
import { dashboardExpressions, parsePromQL } from './helpers/promql.js';

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Array<{ refId: string; expr: string; datasource: { uid: string } }>;
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown; datasource?: { uid: string } }> };
}

const dashboards = [...grafanaDashboards()].map(([name, d]) => ({ name, d: d as unknown as Dashboard }));

test('dashboard uids are unique and stable: links and bookmarks to them keep working across releases', (t) => {
  // Renaming one breaks every saved link: change this list only on purpose.
  t.deepEqual(dashboards.map(({ d }) => d.uid), ['auditmesh-mesh-overview', 'auditmesh-sidecar-health', 'auditmesh-audit-pipeline']);
  t.is(new Set(dashboards.map(({ d }) => d.title)).size, dashboards.length);
});

test('every panel has a query, on the chosen data source, that parses as PromQL', (t) => {
  for (const { name, d } of dashboards) {
    const panels = d.panels.filter((p) => p.type !== 'row');
    t.true(panels.length >= 8, `${name} has ${panels.length} panels`);
    for (const p of panels) {
      const where = `${name} / ${p.title}`;
      t.true((p.targets ?? []).length > 0, `${where} has no query`);
      t.is(p.datasource?.uid, '${datasource}', where);
      for (const target of p.targets ?? []) {
        t.is(target.datasource.uid, '${datasource}', where);
        t.deepEqual(parsePromQL(target.expr).errors, [], `${where}: ${target.expr}`);
      }
      t.is(new Set((p.targets ?? []).map((x) => x.refId)).size, (p.targets ?? []).length, `${where}: refIds repeat`);
    }
    for (const expr of dashboardExpressions(d)) t.deepEqual(parsePromQL(expr).errors, [], `${name}: ${expr}`);
  }
});

test('every dashboard has the datasource, namespace and service variables, and its queries use them', (t) => {
  for (const { name, d } of dashboards) {
    const vars = new Map(d.templating.list.map((v) => [v.name, v]));
    t.is(vars.get('datasource')?.type, 'datasource', name);
    t.is(vars.get('namespace')?.type, 'query', name);
    t.is(vars.get('service')?.type, 'query', name);
    t.is(vars.get('namespace')?.datasource?.uid, '${datasource}');
    for (const p of d.panels.filter((x) => x.type !== 'row')) {
      for (const target of p.targets ?? []) t.regex(target.expr, /namespace=~"\$namespace"/, `${name} / ${p.title}: not filtered by namespace`);
    }
  }
});

test('panels have unique ids and tile the 24-column grid without overlapping', (t) => {
  for (const { name, d } of dashboards) {
    t.is(new Set(d.panels.map((p) => p.id)).size, d.panels.length, name);
    const cells = new Set<string>();
    for (const p of d.panels) {
      const { x, y, w, h } = p.gridPos;
      t.true(x >= 0 && w > 0 && x + w <= 24, `${name} / ${p.title}: x ${x} w ${w}`);
      for (let i = x; i < x + w; i++) {
        for (let j = y; j < y + h; j++) {
          t.false(cells.has(`${i},${j}`), `${name} / ${p.title} overlaps another panel at ${i},${j}`);
          cells.add(`${i},${j}`);
        }
      }
    }
  }
});

test('deploy/dashboards/ holds exactly the rendered dashboards (npm run render-deploy refreshes it)', (t) => {
  const dir = join(ROOT, 'deploy/dashboards');
  const files = dashboardFiles();
  t.deepEqual(readdirSync(dir).sort(), files.map((f) => f.file).sort());
  for (const f of files) t.true(readFileSync(join(dir, f.file), 'utf8') === f.text, `deploy/dashboards/${f.file} is stale: run npm run render-deploy`);
});
