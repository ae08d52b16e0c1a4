import { SIDECAR_LABEL } from '../injector/inject.js';
import { ADMIN_PORT_NAME } from '../injector/sidecar-containers.js';
import { promRule, ruleGroups } from './alert-rules.js';
import { dashboardFiles } from './grafana/dashboards.js';
import { COLLECTOR, componentLabels, type InstallOptions, type KubeObject } from './install-options.js';
import { MESH_CA_SECRET } from './mesh-ca-secret.js';
import { CA_CERT_FILE } from '../collector/ingest/mesh-ca.js';

/** The label Grafana's dashboard sidecar (kube-prometheus-stack, grafana helm chart) watches ConfigMaps for. */
export const GRAFANA_DASHBOARD_LABEL = 'grafana_dashboard';
const SCRAPE_INTERVAL = '30s';
/**
 * The Operator labels ServiceMonitor targets with the Kubernetes Service's name as `service`; in
 * auditmesh `service` is a workload's identity (the collector's fleet anomalies carry it), which
 * that label would push aside as `exported_service`. Control-plane series carry no `service`.
 */
const DROP_SERVICE_LABEL = [{ action: 'labeldrop', regex: 'service' }];

/**
 * How Prometheus verifies the collector: the mesh CA's certificate from its Secret (in the
 * monitor's namespace, where the Operator reads it), and the Service's name, as a scrape goes to
 * a pod IP that the serving certificate does not name.
 */
function collectorTlsConfig(o: InstallOptions): Record<string, unknown> {
  return { ca: { secret: { name: MESH_CA_SECRET, key: CA_CERT_FILE } }, serverName: `${COLLECTOR}.${o.namespace}.svc` };
}

/**
 * Prometheus Operator objects: a PodMonitor for every injected sidecar (any namespace), a
 * ServiceMonitor for the control plane (collector and injector), the alerting rules; and the
 * Grafana dashboards, one ConfigMap each (well under the 256 KiB a client-side apply can annotate).
 */
export function monitoring(o: InstallOptions): KubeObject[] {
  const labels = { 'app.kubernetes.io/part-of': 'auditmesh' };
  return [
    {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PodMonitor',
      metadata: { name: 'auditmesh-sidecars', namespace: o.namespace, labels },
      spec: { namespaceSelector: { any: true }, selector: { matchLabels: { [SIDECAR_LABEL]: 'true' } }, podMetricsEndpoints: [{ port: ADMIN_PORT_NAME, path: '/metrics', interval: SCRAPE_INTERVAL }] },
    },
    {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'ServiceMonitor',
      metadata: { name: 'auditmesh-control-plane', namespace: o.namespace, labels },
      spec: {
        selector: { matchLabels: { 'app.kubernetes.io/part-of': 'auditmesh' } },
        // The injector's admin port, and the collector's HTTP port that also serves /metrics: over
        // HTTPS with its serving certificate, which the mesh CA issued for its Service's names.
        endpoints: [
          { port: 'http-metrics', path: '/metrics', interval: SCRAPE_INTERVAL, relabelings: DROP_SERVICE_LABEL },
          { port: 'http', path: '/metrics', interval: SCRAPE_INTERVAL, relabelings: DROP_SERVICE_LABEL, scheme: 'https', tlsConfig: collectorTlsConfig(o) },
        ],
      },
    },
    {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PrometheusRule',
      metadata: { name: 'auditmesh', namespace: o.namespace, labels: componentLabels('auditmesh') },
      spec: { groups: ruleGroups(o.alertDurationScale).map((g) => ({ name: g.name, rules: g.rules.map(promRule) })) },
    },
    ...dashboardFiles().map(({ name, file, text }): KubeObject => ({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: `auditmesh-dashboard-${name}`, namespace: o.namespace, labels: { ...labels, [GRAFANA_DASHBOARD_LABEL]: '1' }, annotations: { grafana_folder: 'auditmesh' } },
      data: { [file]: text },
    })),
  ];
}
