/**
 * The few Grafana dashboard shapes auditmesh's dashboards use (schemaVersion 39): time series and
 * stat panels over Prometheus, rows, and the datasource/namespace/service variables. Panels are
 * laid out left to right, top to bottom, so a dashboard reads as its list of panels.
 */

export interface Target {
  expr: string;
  legend?: string;
}

export interface PanelSpec {
  title: string;
  description: string;
  targets: Target[];
  /** Grafana unit id: `reqps`, `percentunit`, `s`, `bytes`, `Bps`, `short`. */
  unit: string;
  kind?: 'timeseries' | 'stat';
  /** Columns out of 24; 12 by default. */
  width?: number;
  stacked?: boolean;
}

export interface RowSpec {
  row: string;
  panels: PanelSpec[];
}

export interface DashboardSpec {
  uid: string;
  title: string;
  description: string;
  rows: RowSpec[];
  /** Whether the service variable applies (sidecar dashboards); collector panels ignore it. */
  serviceVariable: boolean;
}

export type Json = Record<string, unknown>;

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };
const PANEL_HEIGHT = 8;
const STAT_HEIGHT = 4;
const GRID_COLUMNS = 24;

/** The series selector every sidecar query starts from: the chosen namespaces and services. */
export const SIDECAR = 'namespace=~"$namespace", service=~"$service"';
/** Collector and other control-plane series carry no `service`. */
export const NAMESPACE = 'namespace=~"$namespace"';
/** Grafana's rate window: at least four scrape intervals, whatever the zoom. */
export const RATE = '$__rate_interval';

function variables(serviceVariable: boolean): Json[] {
  const query = (name: string, label: string, q: string, allValue: string): Json => ({
    name,
    label,
    type: 'query',
    datasource: DATASOURCE,
    query: { query: q, refId: `${name}-variable` },
    definition: q,
    refresh: 2,
    multi: true,
    includeAll: true,
    allValue,
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
  });
  return [
    { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', current: {}, hide: 0 },
    query('namespace', 'Namespace', 'label_values(auditmesh_build_info, namespace)', '.*'),
    // `.+`, not `.*`, for All: series without `service` (collector, injector) stay out of sidecar panels.
    ...(serviceVariable ? [query('service', 'Service', 'label_values(auditmesh_build_info{namespace=~"$namespace"}, service)', '.+')] : []),
  ];
}

function panel(spec: PanelSpec, id: number, gridPos: Json): Json {
  const kind = spec.kind ?? 'timeseries';
  return {
    id,
    type: kind,
    title: spec.title,
    description: spec.description,
    datasource: DATASOURCE,
    gridPos,
    targets: spec.targets.map((t, i) => ({ refId: String.fromCharCode(65 + i), datasource: DATASOURCE, expr: t.expr, legendFormat: t.legend ?? '__auto', range: true })),
    fieldConfig: {
      defaults: { unit: spec.unit, ...(kind === 'timeseries' ? { custom: { fillOpacity: spec.stacked === true ? 30 : 10, stacking: { mode: spec.stacked === true ? 'normal' : 'none' }, showPoints: 'never' } } : {}) },
      overrides: [],
    },
    options:
      kind === 'stat'
        ? { reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false }, colorMode: 'value', graphMode: 'area' }
        : { legend: { displayMode: 'table', placement: 'bottom', showLegend: true, calcs: ['mean', 'max'] }, tooltip: { mode: 'multi', sort: 'desc' } },
  };
}

/** A whole dashboard: rows of panels, flowed into Grafana's 24-column grid. */
export function dashboard(spec: DashboardSpec): Json {
  const panels: Json[] = [];
  let id = 1;
  let y = 0;
  for (const row of spec.rows) {
    panels.push({ id: id++, type: 'row', title: row.row, collapsed: false, gridPos: { h: 1, w: GRID_COLUMNS, x: 0, y }, panels: [] });
    y += 1;
    let x = 0;
    let lineHeight = 0;
    for (const p of row.panels) {
      const w = p.width ?? 12;
      const h = p.kind === 'stat' ? STAT_HEIGHT : PANEL_HEIGHT;
      if (x + w > GRID_COLUMNS) {
        x = 0;
        y += lineHeight;
        lineHeight = 0;
      }
      panels.push(panel(p, id++, { h, w, x, y }));
      x += w;
      lineHeight = Math.max(lineHeight, h);
    }
    y += lineHeight;
  }
  return {
    uid: spec.uid,
    title: spec.title,
    description: spec.description,
    tags: ['auditmesh'],
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: '30s',
    time: { from: 'now-1h', to: 'now' },
    timepicker: {},
    timezone: 'browser',
    annotations: { list: [] },
    links: [{ title: 'auditmesh', type: 'dashboards', tags: ['auditmesh'], asDropdown: true, includeVars: true, keepTime: true }],
    templating: { list: variables(spec.serviceVariable) },
    panels,
  };
}
