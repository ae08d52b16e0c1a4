import { COLLECTOR, COLLECTOR_GRPC_PORT, COLLECTOR_HTTP_PORT, componentLabels, INJECTOR, INJECTOR_ADMIN_PORT, INJECTOR_PORT, type InstallOptions, type KubeObject } from './install-options.js';

/** Namespaces labelled so may reach the collector's query API (readers still need a credential). */
export const READER_NAMESPACE_LABEL = 'auditmesh.io/read-access';
/** Namespaces labelled so may scrape the control plane's /metrics (where Prometheus runs). */
export const MONITORING_NAMESPACE_LABEL = 'auditmesh.io/monitoring';

const labelled = (label: string): Record<string, unknown> => ({ namespaceSelector: { matchLabels: { [label]: 'allowed' } } });
const tcp = (port: number): Record<string, unknown> => ({ protocol: 'TCP', port });

function policy(o: InstallOptions, component: string, ingress: Array<Record<string, unknown>>): KubeObject {
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: component, namespace: o.namespace, labels: componentLabels(component) },
    spec: { podSelector: { matchLabels: { 'app.kubernetes.io/name': component } }, policyTypes: ['Ingress'], ingress },
  };
}

/**
 * Who may reach the control plane's pods. Collector: gRPC ingest (and the CA) from pods in any
 * namespace, where sidecars run; the HTTP port (query API and /metrics) from the control plane's
 * own namespace, from namespaces labelled READER_NAMESPACE_LABEL=allowed and, for scraping, from
 * those labelled MONITORING_NAMESPACE_LABEL=allowed. Injector: its webhook from anywhere (the API
 * server may not run in a pod), its metrics from monitoring namespaces. The kubelet's probes come
 * from the node, which common CNIs let through NetworkPolicies.
 */
export function networkPolicies(o: InstallOptions): KubeObject[] {
  return [
    policy(o, COLLECTOR, [
      { from: [{ namespaceSelector: {} }], ports: [tcp(COLLECTOR_GRPC_PORT)] },
      { from: [{ podSelector: {} }, labelled(READER_NAMESPACE_LABEL), labelled(MONITORING_NAMESPACE_LABEL)], ports: [tcp(COLLECTOR_HTTP_PORT)] },
    ]),
    policy(o, INJECTOR, [
      { ports: [tcp(INJECTOR_PORT)] },
      { from: [{ podSelector: {} }, labelled(MONITORING_NAMESPACE_LABEL)], ports: [tcp(INJECTOR_ADMIN_PORT)] },
    ]),
  ];
}
