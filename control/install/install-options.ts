import type { InjectOptions } from '../injector/sidecar-containers.js';

/** CPU and memory for one control-plane container: memory request = limit, no CPU limit. */
export interface Resources {
  cpu: string;
  memory: string;
}

/** Everything `auditmesh install` renders from. */
export interface InstallOptions {
  namespace: string;
  image: string;
  imagePullPolicy: InjectOptions['imagePullPolicy'];
  injectorReplicas: number;
  injectorResources: Resources;
  collectorResources: Resources;
  /** Size of the collector store's PersistentVolumeClaim. */
  collectorStorage: string;
  /** The claim's StorageClass; undefined uses the cluster's default. */
  storageClass: string | undefined;
  /** Webhook serving certificate: issued by cert-manager, or generated now and embedded. */
  certs: 'cert-manager' | 'self-signed';
  certValidDays: number;
  /**
   * The mesh CA's Secret: cert-manager issues it, or install embeds one (`dir`: the pair of an
   * existing CA to keep; none: a new CA, which replaces a running cluster's trust root).
   */
  meshCa: { source: 'cert-manager' | 'self-signed'; dir: string | undefined };
  /** PodMonitor, ServiceMonitor and PrometheusRule (needs the Prometheus Operator's CRDs). */
  monitoring: boolean;
  /** Multiplies every duration the alert rules wait on (`for:`, shipping-lag thresholds); 1 in production. */
  alertDurationScale: number;
  /** A ValidatingAdmissionPolicy refusing pods without the sidecar in namespaces labelled auditmesh.io/audit=mandatory (Kubernetes >= 1.30). */
  mandatoryAuditPolicy: boolean;
  /** The injector's policy flags (image, sidecar mode, proxy resources, collector address, ...). */
  inject: InjectOptions;
  /** The same, as `--flag value` arguments for the injector's container. */
  injectArgs: readonly string[];
  /** `--ha`: the collector as a tier of replicas on a NATS JetStream cluster instead of one replica on its own store. */
  ha: boolean;
  /** The tier's collector replicas (with `ha`). */
  collectorReplicas: number;
  /** The NATS cluster (with `ha`): image, each server's volume size and resources. */
  nats: { image: string; storage: string; resources: Resources };
}

/** A Kubernetes object as rendered: plain data, serialised to YAML or JSON by the CLI. */
export type KubeObject = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; [k: string]: unknown }; [k: string]: unknown };

/** The control plane's namespace unless `install --namespace` says otherwise. */
export const DEFAULT_NAMESPACE = 'auditmesh-system';
export const INJECTOR = 'auditmesh-injector';
export const COLLECTOR = 'auditmesh-collector';
export const INJECTOR_TLS_SECRET = 'auditmesh-injector-tls';
/** The control plane's own uid: not the proxy's, not root. */
export const CONTROL_PLANE_UID = 65532;
export const INJECTOR_PORT = 9443;
export const INJECTOR_ADMIN_PORT = 9444;
export const COLLECTOR_GRPC_PORT = 9400;
export const COLLECTOR_HTTP_PORT = 9401;

/** Recommended labels (app.kubernetes.io/*) for one component. */
export function componentLabels(component: string): Record<string, string> {
  return { 'app.kubernetes.io/name': component, 'app.kubernetes.io/part-of': 'auditmesh', 'app.kubernetes.io/component': component.replace(/^auditmesh-/, '') };
}

/** HOST:PORT of the collector an install in `namespace` runs: where its sidecars ship. */
export function collectorAddress(namespace: string): string {
  return `${COLLECTOR}.${namespace}.svc:${COLLECTOR_GRPC_PORT}`;
}

/** The Service's DNS names the webhook certificate must carry. */
export function injectorDnsNames(namespace: string): string[] {
  return [`${INJECTOR}.${namespace}.svc`, `${INJECTOR}.${namespace}.svc.cluster.local`];
}
