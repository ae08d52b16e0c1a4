import { randomInt, randomUUID } from 'node:crypto';
import type { ObjectStore, KubeObject } from './objects.js';
import type { PodSpec } from './pod-fields.js';

type PodObject = KubeObject & { spec: PodSpec };
type Template = { metadata?: KubeObject['metadata'] | { labels?: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec };

// The alphabet of generated names (apimachinery's rand.String): no vowels, no confusable digits.
const ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
const suffix = (n: number): string => Array.from({ length: n }, () => ALPHABET[randomInt(ALPHABET.length)]).join('');

/** The pods a workload object makes, named as its controller names them; other kinds make none. */
export function podsOf(o: KubeObject): PodObject[] {
  const ns = o.metadata.namespace;
  const spec = o.spec as { replicas?: number; template?: Template; jobTemplate?: { spec: { template: Template } } } | undefined;
  const make = (name: string, template: Template): PodObject => ({ apiVersion: 'v1', kind: 'Pod', metadata: { ...structuredClone(template.metadata ?? {}), name, namespace: ns }, spec: structuredClone(template.spec) });
  switch (o.kind) {
    case 'Pod':
      return [o as PodObject];
    case 'Deployment': {
      const hash = suffix(10);
      return Array.from({ length: spec!.replicas ?? 1 }, () => make(`${o.metadata.name}-${hash}-${suffix(5)}`, spec!.template!));
    }
    case 'ReplicaSet':
    case 'DaemonSet':
    case 'Job':
      return Array.from({ length: o.kind === 'ReplicaSet' ? (spec!.replicas ?? 1) : 1 }, () => make(`${o.metadata.name}-${suffix(5)}`, spec!.template!));
    case 'StatefulSet':
      return Array.from({ length: spec!.replicas ?? 1 }, (_, i) => statefulPod(o, make(`${o.metadata.name}-${i}`, spec!.template!)));
    default:
      return [];
  }
}

type StatefulSetSpec = { serviceName?: string; volumeClaimTemplates?: Array<{ metadata: { name: string; labels?: Record<string, string> }; spec: unknown }> };

/** What the StatefulSet controller adds to each pod: its stable hostname under the governing Service, and a claim per template. */
function statefulPod(set: KubeObject, pod: PodObject): PodObject {
  const spec = set.spec as StatefulSetSpec;
  const claims = (spec.volumeClaimTemplates ?? []).map((c) => ({ name: c.metadata.name, persistentVolumeClaim: { claimName: `${c.metadata.name}-${pod.metadata.name}` } }));
  pod.spec.hostname = pod.metadata.name;
  if (spec.serviceName !== undefined) pod.spec.subdomain = spec.serviceName;
  pod.spec.volumes = [...(pod.spec.volumes ?? []).filter((v) => !claims.some((c) => c.name === v.name)), ...claims];
  return pod;
}

/** The PersistentVolumeClaims a StatefulSet's controller creates (`TEMPLATE-SET-i`), kept when its pods go. */
export function claimsOf(o: KubeObject): KubeObject[] {
  if (o.kind !== 'StatefulSet') return [];
  const spec = o.spec as StatefulSetSpec & { replicas?: number };
  return Array.from({ length: spec.replicas ?? 1 }, (_, i) =>
    (spec.volumeClaimTemplates ?? []).map((c): KubeObject => ({ apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { ...structuredClone(c.metadata), name: `${c.metadata.name}-${o.metadata.name}-${i}`, namespace: o.metadata.namespace }, spec: structuredClone(c.spec) })),
  ).flat();
}

const defaultAccounts = new Map<string, string>();

/** The pod's ServiceAccount: `default` exists in every namespace; any other must have been applied. */
export function serviceAccountOf(store: ObjectStore, pod: PodObject): { name: string; uid: string } {
  const name = pod.spec.serviceAccountName ?? 'default';
  const ns = pod.metadata.namespace!;
  const sa = store.get('ServiceAccount', ns, name);
  if (sa !== undefined) return { name, uid: sa.metadata.uid! };
  if (name !== 'default') throw new Error(`pod ${ns}/${pod.metadata.name}: serviceaccount "${name}" not found in namespace "${ns}"`);
  if (!defaultAccounts.has(ns)) defaultAccounts.set(ns, randomUUID());
  return { name, uid: defaultAccounts.get(ns)! };
}

const API_ACCESS_PATH = '/var/run/secrets/kubernetes.io/serviceaccount';

/**
 * What the ServiceAccount admission plugin adds unless automountServiceAccountToken is false (on
 * the pod, else on its ServiceAccount): a kube-api-access projected volume (token for the API
 * server, the cluster CA, the namespace) mounted into every container.
 */
export function withKubeApiAccess(store: ObjectStore, pod: PodObject, sa: { name: string }): PodObject {
  const account = store.get('ServiceAccount', pod.metadata.namespace, sa.name);
  const automount = pod.spec.automountServiceAccountToken ?? (account?.automountServiceAccountToken as boolean | undefined) ?? true;
  if (!automount) return pod;
  const name = `kube-api-access-${suffix(5)}`;
  const volume = {
    name,
    projected: {
      defaultMode: 0o644,
      sources: [
        { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
      ],
    },
  };
  const mount = (c: PodSpec['containers'][number]): PodSpec['containers'][number] =>
    c.volumeMounts?.some((m) => m.mountPath === API_ACCESS_PATH) ? c : { ...c, volumeMounts: [...(c.volumeMounts ?? []), { name, mountPath: API_ACCESS_PATH, readOnly: true }] };
  return { ...pod, spec: { ...pod.spec, volumes: [...(pod.spec.volumes ?? []), volume], initContainers: pod.spec.initContainers?.map(mount), containers: pod.spec.containers.map(mount) } };
}
