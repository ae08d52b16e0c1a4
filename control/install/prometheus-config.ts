import type { KubeObject } from './install-options.js';

/**
 * What the Prometheus Operator makes of `auditmesh install --monitoring`, for processes running
 * here instead of in a cluster: each PodMonitor and ServiceMonitor becomes a scrape job with the
 * target labels the Operator sets (namespace, pod, container, endpoint, job; service for a
 * ServiceMonitor), the endpoint's scheme, tlsConfig (its Secret's key as a file here) and
 * relabelings, pointing at 127.0.0.1 and the port the
 * process really listens on; each PrometheusRule's groups go into a rules file. The demo writes
 * it for `npm start`, the tests run Prometheus with it.
 */

type Labels = Record<string, string>;
interface PortSpec {
  name?: string;
  containerPort: number;
}
interface ContainerSpec {
  name: string;
  ports?: PortSpec[];
}
/** A Pod or a pod template, as rendered. */
export interface PodLike {
  metadata?: { name?: string; namespace?: string; labels?: Labels; annotations?: Labels };
  spec: { containers: ContainerSpec[]; initContainers?: ContainerSpec[] };
}

/** A pod running here: its rendered metadata and containers, and where each containerPort listens on 127.0.0.1. */
export interface LocalPod {
  namespace: string;
  name: string;
  labels: Labels;
  annotations: Labels;
  containers: ContainerSpec[];
  localPorts: ReadonlyMap<number, number>;
}

export interface PrometheusSettings {
  scrapeInterval: string;
  evaluationInterval: string;
  rulesFile: string;
  /** host:port of an Alertmanager, if any. */
  alertmanager?: string;
  /**
   * Where a Secret's key a monitor's tlsConfig names is here, as `NAME/KEY` (e.g.
   * `auditmesh-mesh-ca/ca.crt`) to a file: the Operator mounts it into Prometheus as a file too.
   */
  secretFiles?: Readonly<Record<string, string>>;
  /** The local processes run --insecure and serve plain HTTP: the monitors' scheme and tlsConfig are left out. */
  plainHttp?: boolean;
}

/** A rendered pod (or a Deployment's template, named `name`) as one running here. */
export function localPod(pod: PodLike, name: string, namespace: string, localPorts: ReadonlyMap<number, number>): LocalPod {
  const m = pod.metadata ?? {};
  // Native sidecars are init containers that keep running: their ports are served too.
  return { namespace, name, labels: m.labels ?? {}, annotations: m.annotations ?? {}, containers: [...(pod.spec.initContainers ?? []), ...pod.spec.containers], localPorts };
}

const matches = (labels: Labels, selector: Labels | undefined): boolean => Object.entries(selector ?? {}).every(([k, v]) => labels[k] === v);
const spec = (o: KubeObject): Record<string, any> => o.spec as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

function inNamespaces(monitor: KubeObject, namespace: string): boolean {
  const sel = spec(monitor).namespaceSelector as { any?: boolean; matchNames?: string[] } | undefined;
  if (sel?.any === true) return true;
  return (sel?.matchNames ?? [monitor.metadata.namespace]).includes(namespace);
}

/** The container and local port behind a port given by name or number. */
function resolvePort(pod: LocalPod, port: string | number): { container: string; local: number } | undefined {
  for (const c of pod.containers) {
    const p = (c.ports ?? []).find((x) => (typeof port === 'number' ? x.containerPort === port : x.name === port));
    const local = p === undefined ? undefined : pod.localPorts.get(p.containerPort);
    if (local !== undefined) return { container: c.name, local };
  }
  return undefined;
}

/** The Operator's RelabelConfig fields, in Prometheus' spelling. */
function relabelConfigs(relabelings: Array<Record<string, unknown>> | undefined): Array<Record<string, unknown>> {
  const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  return (relabelings ?? []).map((r) => Object.fromEntries(Object.entries(r).map(([k, v]) => [snake(k), k === 'action' ? String(v).toLowerCase() : v])));
}

/** The Operator's SafeTLSConfig, the parts auditmesh renders. */
interface TlsConfig {
  ca?: { secret?: { name: string; key: string } };
  serverName?: string;
  insecureSkipVerify?: boolean;
}

interface Endpoint {
  port: string;
  path?: string;
  scheme?: 'http' | 'https';
  tlsConfig?: TlsConfig;
  relabelings?: Array<Record<string, unknown>>;
}

/** Prometheus' tls_config for an endpoint's tlsConfig; a field it cannot translate is an error, not a scrape that trusts something else. */
function tlsConfig(tls: TlsConfig, settings: PrometheusSettings): Record<string, unknown> {
  const { ca, serverName, insecureSkipVerify, ...rest } = tls;
  const untranslated = [...Object.keys(rest), ...Object.keys(ca ?? {}).filter((k) => k !== 'secret')];
  if (untranslated.length > 0) throw new Error(`tlsConfig: ${untranslated.join(', ')} is not translated`);
  let caFile: string | undefined;
  if (ca?.secret !== undefined) {
    const ref = `${ca.secret.name}/${ca.secret.key}`;
    caFile = settings.secretFiles?.[ref];
    if (caFile === undefined) throw new Error(`tlsConfig: no file for Secret key ${ref} (settings.secretFiles)`);
  }
  return { ...(caFile === undefined ? {} : { ca_file: caFile }), ...(serverName === undefined ? {} : { server_name: serverName }), ...(insecureSkipVerify === undefined ? {} : { insecure_skip_verify: insecureSkipVerify }) };
}

function scrapeJob(jobName: string, endpoint: Endpoint, targets: Array<{ address: string; labels: Labels }>, settings: PrometheusSettings): Record<string, unknown> {
  const tls = settings.plainHttp === true ? {} : { ...(endpoint.scheme === undefined ? {} : { scheme: endpoint.scheme }), ...(endpoint.tlsConfig === undefined ? {} : { tls_config: tlsConfig(endpoint.tlsConfig, settings) }) };
  return {
    job_name: jobName,
    scrape_interval: settings.scrapeInterval,
    metrics_path: endpoint.path ?? '/metrics',
    ...tls,
    static_configs: targets.map((t) => ({ targets: [t.address], labels: t.labels })),
    ...(endpoint.relabelings === undefined ? {} : { relabel_configs: relabelConfigs(endpoint.relabelings) }),
  };
}

function podMonitorJobs(pm: KubeObject, pods: readonly LocalPod[], settings: PrometheusSettings): Array<Record<string, unknown>> {
  const { namespace, name } = pm.metadata;
  const selected = pods.filter((p) => inNamespaces(pm, p.namespace) && matches(p.labels, spec(pm).selector?.matchLabels));
  return (spec(pm).podMetricsEndpoints as Endpoint[]).map((e, i) => {
    const targets = selected.flatMap((p) => {
      const r = resolvePort(p, e.port);
      return r === undefined ? [] : [{ address: `127.0.0.1:${r.local}`, labels: { namespace: p.namespace, pod: p.name, container: r.container, endpoint: e.port, job: `${namespace}/${name}` } }];
    });
    return scrapeJob(`podMonitor/${namespace}/${name}/${i}`, e, targets, settings);
  });
}

function serviceMonitorJobs(sm: KubeObject, objects: readonly KubeObject[], pods: readonly LocalPod[], settings: PrometheusSettings): Array<Record<string, unknown>> {
  const { namespace, name } = sm.metadata;
  const services = objects.filter((o) => o.kind === 'Service' && inNamespaces(sm, o.metadata.namespace ?? '') && matches((o.metadata.labels ?? {}) as Labels, spec(sm).selector?.matchLabels));
  return (spec(sm).endpoints as Endpoint[]).map((e, i) => {
    const targets = services.flatMap((svc) => {
      const port = (spec(svc).ports as Array<{ name: string; targetPort: string | number }>).find((p) => p.name === e.port);
      if (port === undefined) return [];
      const backends = pods.filter((p) => p.namespace === svc.metadata.namespace && matches(p.labels, spec(svc).selector));
      return backends.flatMap((p) => {
        const r = resolvePort(p, port.targetPort);
        return r === undefined ? [] : [{ address: `127.0.0.1:${r.local}`, labels: { namespace: p.namespace, service: svc.metadata.name, pod: p.name, container: r.container, endpoint: e.port, job: svc.metadata.name } }];
      });
    });
    return scrapeJob(`serviceMonitor/${namespace}/${name}/${i}`, e, targets, settings);
  });
}

/** prometheus.yml, as the Operator would generate it from the rendered monitors, for these pods. */
export function operatorPrometheusConfig(objects: readonly KubeObject[], pods: readonly LocalPod[], settings: PrometheusSettings): Record<string, unknown> {
  const scrapeConfigs = objects.flatMap((o) => {
    if (o.kind === 'PodMonitor') return podMonitorJobs(o, pods, settings);
    if (o.kind === 'ServiceMonitor') return serviceMonitorJobs(o, objects, pods, settings);
    return [];
  });
  return {
    global: { scrape_interval: settings.scrapeInterval, evaluation_interval: settings.evaluationInterval },
    rule_files: [settings.rulesFile],
    ...(settings.alertmanager === undefined ? {} : { alerting: { alertmanagers: [{ static_configs: [{ targets: [settings.alertmanager] }] }] } }),
    scrape_configs: scrapeConfigs,
  };
}

/**
 * The conventional `kubernetes-pods` job without the Operator: pods annotated prometheus.io/scrape
 * are scraped on the prometheus.io/port, /path and /scheme (http when absent) they announce.
 */
export function annotatedTargets(pods: readonly LocalPod[]): Array<{ pod: string; address: string; path: string; scheme: string }> {
  return pods.flatMap((p) => {
    const a = p.annotations;
    if (a['prometheus.io/scrape'] !== 'true') return [];
    const r = resolvePort(p, Number(a['prometheus.io/port']));
    return r === undefined ? [] : [{ pod: p.name, address: `127.0.0.1:${r.local}`, path: a['prometheus.io/path'] ?? '/metrics', scheme: a['prometheus.io/scheme'] ?? 'http' }];
  });
}

/** The rules file: every rendered PrometheusRule's groups. */
export function prometheusRules(objects: readonly KubeObject[]): { groups: unknown[] } {
  return { groups: objects.filter((o) => o.kind === 'PrometheusRule').flatMap((o) => spec(o).groups as unknown[]) };
}
