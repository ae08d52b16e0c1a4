import type { KubeObject } from './objects.js';

/** A pod as the kubelet knows it once scheduled: its object, identity and address. */
export interface PodInfo {
  object: KubeObject & { spec: PodSpec };
  name: string;
  namespace: string;
  uid: string;
  ip: string;
  nodeName: string;
  serviceAccount: { name: string; uid: string };
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number }>;
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean; subPath?: string }>;
  securityContext?: SecurityContext;
  restartPolicy?: string;
  startupProbe?: Probe;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
}

export interface SecurityContext {
  runAsUser?: number;
  runAsGroup?: number;
  runAsNonRoot?: boolean;
  readOnlyRootFilesystem?: boolean;
  allowPrivilegeEscalation?: boolean;
  capabilities?: { add?: string[]; drop?: string[] };
  fsGroup?: number;
}

export interface Probe {
  httpGet?: { path?: string; port: number | string; scheme?: string };
  initialDelaySeconds?: number;
  periodSeconds?: number;
  timeoutSeconds?: number;
  failureThreshold?: number;
  successThreshold?: number;
}

export type EnvVar = { name: string; value?: string; valueFrom?: Record<string, Record<string, unknown>> };

export interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Array<{ name: string; [source: string]: unknown }>;
  securityContext?: SecurityContext;
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
  /** Set by the StatefulSet controller: HOSTNAME.SUBDOMAIN.NAMESPACE.svc names the pod. */
  hostname?: string;
  subdomain?: string;
}

/** The value of a downward-API fieldPath (env fieldRef and downwardAPI volume items). */
export function fieldValue(pod: PodInfo, fieldPath: string): string {
  const meta = pod.object.metadata;
  const label = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (label !== null) return (label[1] === 'labels' ? meta.labels : meta.annotations)?.[label[2]!] ?? '';
  switch (fieldPath) {
    case 'metadata.name':
      return pod.name;
    case 'metadata.namespace':
      return pod.namespace;
    case 'metadata.uid':
      return pod.uid;
    case 'spec.serviceAccountName':
      return pod.serviceAccount.name;
    case 'spec.nodeName':
      return pod.nodeName;
    case 'status.podIP':
    case 'status.hostIP':
      return fieldPath === 'status.podIP' ? pod.ip : '';
    default:
      throw new Error(`pod ${pod.namespace}/${pod.name}: fieldRef ${fieldPath} is not supported by the harness`);
  }
}

/** Kubernetes quantities (`1Gi`, `500M`, `64Mi`) in bytes. */
export function quantityBytes(q: string): number {
  const m = /^(\d+(?:\.\d+)?)([KMGTPE]i?|[kmgtpe])?$/.exec(q);
  if (m === null) throw new Error(`not a quantity: ${q}`);
  const unit = m[2];
  if (unit === undefined) return Math.round(Number(m[1]));
  const power = 'KMGTPE'.indexOf(unit[0]!.toUpperCase()) + 1;
  return Math.round(Number(m[1]) * (unit.endsWith('i') ? 1024 : 1000) ** power);
}
