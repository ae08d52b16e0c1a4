import { SIDECAR_LABEL } from '../injector/inject.js';
import { ADMIN_PORT_NAME } from '../injector/sidecar-containers.js';
import { componentLabels, type InstallOptions, type KubeObject } from './install-options.js';

/**
 * Prometheus Operator objects: a PodMonitor for every injected sidecar (any namespace), a
 * ServiceMonitor for the control plane, and alerts on metrics that exist today. No Grafana
 * dashboard ships yet, so no dashboard ConfigMap is rendered.
 */
export function monitoring(o: InstallOptions): KubeObject[] {
  const labels = { 'app.kubernetes.io/part-of': 'auditmesh' };
  return [
    {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PodMonitor',
      metadata: { name: 'auditmesh-sidecars', namespace: o.namespace, labels },
      spec: { namespaceSelector: { any: true }, selector: { matchLabels: { [SIDECAR_LABEL]: 'true' } }, podMetricsEndpoints: [{ port: ADMIN_PORT_NAME, path: '/metrics', interval: '30s' }] },
    },
    {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'ServiceMonitor',
      metadata: { name: 'auditmesh-control-plane', namespace: o.namespace, labels },
      spec: {
        selector: { matchLabels: { 'app.kubernetes.io/part-of': 'auditmesh' } },
        endpoints: [
          { port: 'http-metrics', path: '/metrics', interval: '30s' },
          { port: 'http', path: '/metrics', interval: '30s' },
        ],
      },
    },
    {
      apiVersion: 'monitoring.coreos.com/v1',
      kind: 'PrometheusRule',
      metadata: { name: 'auditmesh', namespace: o.namespace, labels: componentLabels('auditmesh') },
      spec: {
        groups: [
          {
            name: 'auditmesh',
            rules: [
              alert('AuditmeshExchangesNotRecorded', 'sum by (namespace, pod, reason) (increase(auditmesh_journal_unrecorded_total[5m])) > 0', '0m', 'critical', 'Sidecar {{ $labels.pod }} could not record exchanges ({{ $labels.reason }}): the audit trail has gaps.'),
              alert('AuditmeshJournalWriteFailures', 'sum by (namespace, pod) (increase(auditmesh_journal_records_total{result="failed"}[5m])) > 0', '0m', 'critical', 'Sidecar {{ $labels.pod }} failed to write audit records to its journal.'),
              alert('AuditmeshInjectorErrors', 'sum(increase(auditmesh_injector_admissions_total{result="error"}[15m])) > 0', '0m', 'warning', 'The injector failed on some pods; they were admitted without the audit sidecar.'),
              alert('AuditmeshInjectorCertReloadFailing', 'sum(increase(auditmesh_injector_cert_reloads_total{result="failed"}[30m])) > 0', '30m', 'warning', 'The injector cannot load its renewed serving certificate; it keeps serving the old one until it expires.'),
            ],
          },
        ],
      },
    },
  ];
}

function alert(name: string, expr: string, forDuration: string, severity: string, description: string): Record<string, unknown> {
  return { alert: name, expr, for: forDuration, labels: { severity }, annotations: { summary: name.replace(/([a-z])([A-Z])/g, '$1 $2'), description } };
}
