import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { injectManifest } from '../injector/inject-manifest.js';
import { COLLECTOR, INJECTOR, type KubeObject } from '../install/install-options.js';
import { localPod, operatorPrometheusConfig, prometheusRules, type LocalPod, type PodLike, type PrometheusSettings } from '../install/prometheus-config.js';
import { renderInstall } from '../install/render-install.js';
import { MESH_CA_SECRET } from '../install/mesh-ca-secret.js';
import { CA_CERT_FILE } from '../collector/ingest/mesh-ca.js';
import { installOptions } from '../cli/install.js';

/** auditmesh processes running on 127.0.0.1, standing in for pods of a cluster. */
export interface LocalProcesses {
  /** Each sidecar: its service (the pod's app), the pod's namespace, its admin port here. */
  sidecars: Array<{ service: string; namespace: string; adminPort: number }>;
  collectorHttpPort?: number;
  /**
   * The mesh CA certificate (ca.crt) of a collector that serves HTTPS, as the install's does; its
   * serving certificate must name the Service (`serviceNames(namespace)`). Without it the collector
   * runs --insecure, serves plain HTTP, and is scraped so.
   */
  collectorCaFile?: string;
  injectorAdminPort?: number;
}

export interface LocalMonitoring {
  /** What `auditmesh install --monitoring` rendered, with the pods the sidecars stand for. */
  objects: KubeObject[];
  pods: LocalPod[];
  config: Record<string, unknown>;
  rules: { groups: unknown[] };
}

/**
 * prometheus.yml and the rules file for local processes, derived from `auditmesh install
 * --monitoring [installArgs]` as the Prometheus Operator would derive them in a cluster: the
 * sidecars' pods are demo pods passed through the injector's policy (its labels, ports and
 * annotations), the collector's and injector's pods are their rendered Deployments.
 */
export async function localMonitoring(local: LocalProcesses, settings: PrometheusSettings, installArgs: readonly string[] = []): Promise<LocalMonitoring> {
  const o = installOptions(['--monitoring', ...installArgs]);
  const objects = await renderInstall(o);
  const pods: LocalPod[] = local.sidecars.map((s) => {
    const pod = { apiVersion: 'v1', kind: 'Pod', metadata: { name: `${s.service}-0`, namespace: s.namespace, labels: { app: s.service } }, spec: { containers: [{ name: s.service, image: 'app', ports: [{ containerPort: 8080 }] }] } };
    const injected = injectManifest([pod], o.inject).objects[0] as PodLike;
    return localPod(injected, `${s.service}-0`, s.namespace, new Map([[o.inject.adminPort, s.adminPort]]));
  });
  const controlPlane = (name: string, containerPort: number, port: number | undefined): void => {
    if (port === undefined) return;
    const deployment = objects.find((x) => x.kind === 'Deployment' && x.metadata.name === name)!;
    const template = (deployment.spec as { template: PodLike }).template;
    pods.push(localPod(template, `${name}-0`, o.namespace, new Map([[containerPort, port]])));
  };
  controlPlane(COLLECTOR, collectorHttpContainerPort(objects), local.collectorHttpPort);
  controlPlane(INJECTOR, injectorMetricsContainerPort(objects), local.injectorAdminPort);
  const tls: Partial<PrometheusSettings> = local.collectorCaFile === undefined ? { plainHttp: true } : { secretFiles: { [`${MESH_CA_SECRET}/${CA_CERT_FILE}`]: local.collectorCaFile } };
  return { objects, pods, config: operatorPrometheusConfig(objects, pods, { ...settings, ...tls }), rules: prometheusRules(objects) };
}

function containerPort(objects: readonly KubeObject[], deployment: string, portName: string): number {
  const d = objects.find((x) => x.kind === 'Deployment' && x.metadata.name === deployment)!;
  const containers = (d.spec as { template: PodLike }).template.spec.containers;
  return containers.flatMap((c) => c.ports ?? []).find((p) => p.name === portName)!.containerPort;
}
const collectorHttpContainerPort = (objects: readonly KubeObject[]): number => containerPort(objects, COLLECTOR, 'http');
const injectorMetricsContainerPort = (objects: readonly KubeObject[]): number => containerPort(objects, INJECTOR, 'http-metrics');

/** Writes prometheus.yml and auditmesh-rules.yml into `dir`; returns the config's path. */
export async function writeLocalMonitoring(dir: string, local: LocalProcesses, settings: Omit<PrometheusSettings, 'rulesFile'>, installArgs: readonly string[] = []): Promise<{ configFile: string; monitoring: LocalMonitoring }> {
  await mkdir(dir, { recursive: true });
  const rulesFile = join(dir, 'auditmesh-rules.yml');
  const monitoring = await localMonitoring(local, { ...settings, rulesFile }, installArgs);
  const configFile = join(dir, 'prometheus.yml');
  await writeFile(rulesFile, stringify(monitoring.rules));
  await writeFile(configFile, stringify(monitoring.config));
  return { configFile, monitoring };
}
