import { auditPipeline } from './audit-pipeline.js';
import type { Json } from './dashboard.js';
import { meshOverview } from './mesh-overview.js';
import { sidecarHealth } from './sidecar-health.js';

/** auditmesh's Grafana dashboards by short name. */
export function grafanaDashboards(): ReadonlyMap<string, Json> {
  return new Map([
    ['mesh-overview', meshOverview()],
    ['sidecar-health', sidecarHealth()],
    ['audit-pipeline', auditPipeline()],
  ]);
}

/** Each dashboard as the file it ships as: in deploy/dashboards/ and in its ConfigMap. */
export function dashboardFiles(): Array<{ name: string; file: string; text: string }> {
  return [...grafanaDashboards()].map(([name, dashboard]) => ({ name, file: `auditmesh-${name}.json`, text: JSON.stringify(dashboard, null, 2) + '\n' }));
}
