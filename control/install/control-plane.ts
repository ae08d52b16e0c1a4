import { restrictedSecurityContext } from '../injector/sidecar-containers.js';
import { prometheusScrapeAnnotations } from '../injector/scrape-annotations.js';
import {
  COLLECTOR,
  COLLECTOR_GRPC_PORT,
  COLLECTOR_HTTP_PORT,
  componentLabels,
  CONTROL_PLANE_UID,
  INJECTOR,
  INJECTOR_ADMIN_PORT,
  INJECTOR_PORT,
  INJECTOR_TLS_SECRET,
  type InstallOptions,
  type KubeObject,
  type Resources,
} from './install-options.js';

import { READ_POLICY_CONFIGMAP, READ_POLICY_DIR, READ_POLICY_FILE } from './read-policy-config.js';
import { MESH_CA_DIR, meshCaMount, meshCaVolume } from './mesh-ca-secret.js';
import { CA_CERT_FILE } from '../collector/ingest/mesh-ca.js';

const TLS_DIR = '/etc/auditmesh/tls';
/** Where the kubelet's kube-api-access volume would put the API token and cluster CA; the collector reads them there. */
const API_ACCESS_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const STORE_DIR = '/var/lib/auditmesh/collector';

/** The control plane's namespace: Pod Security "restricted" enforced, never injected itself. */
export function namespace(o: InstallOptions): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Namespace',
    metadata: {
      name: o.namespace,
      labels: { 'app.kubernetes.io/part-of': 'auditmesh', 'auditmesh.io/inject': 'disabled', 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/enforce-version': 'latest' },
    },
  };
}

/**
 * The control plane's identities. The injector has no Role: it never calls the API server (it
 * reads namespace opt-in from the webhook path; its certificate comes from a mounted Secret). The
 * collector reads the service-account issuer's public keys, which Kubernetes lets every
 * ServiceAccount read (system:service-account-issuer-discovery), and lists Services and
 * EndpointSlices, read-only, so that the mesh directory can list a ClusterIP whose pods are all
 * meshed (directory/kube-services.ts). No token is mounted by default; the collector's pod mounts
 * its own (collector() below).
 */
export function serviceAccounts(o: InstallOptions): KubeObject[] {
  const accounts: KubeObject[] = [INJECTOR, COLLECTOR].map((name) => ({
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name, namespace: o.namespace, labels: componentLabels(name) },
    automountServiceAccountToken: false,
  }));
  const role = `${COLLECTOR}-services`;
  return [
    ...accounts,
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRole',
      metadata: { name: role, labels: componentLabels(COLLECTOR) },
      rules: [
        { apiGroups: [''], resources: ['services'], verbs: ['get', 'list', 'watch'] },
        { apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] },
      ],
    },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1',
      kind: 'ClusterRoleBinding',
      metadata: { name: role, labels: componentLabels(COLLECTOR) },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: role },
      subjects: [{ kind: 'ServiceAccount', name: COLLECTOR, namespace: o.namespace }],
    },
  ];
}

/** Startup probes every 5 s, up to an hour, before liveness applies. */
const STARTUP_PROBE_FAILURES = 720;

/** How the kubelet and Prometheus reach a control-plane pod's probe and metrics port. */
type Scheme = 'http' | 'https';

function container(o: InstallOptions, name: string, args: readonly string[], resources: Resources, adminPort: number, scheme: Scheme, ports: Array<{ name: string; containerPort: number }>, mounts: Array<{ name: string; mountPath: string; readOnly?: boolean }>): Record<string, unknown> {
  // The kubelet does not verify an HTTPS probe's certificate, so the collector's CA-issued one needs nothing more.
  const httpGet = (path: string): Record<string, unknown> => ({ path, port: adminPort, ...(scheme === 'https' ? { scheme: 'HTTPS' } : {}) });
  const probe = (path: string, periodSeconds: number): Record<string, unknown> => ({ httpGet: httpGet(path), periodSeconds, timeoutSeconds: 2, failureThreshold: 3 });
  return {
    name,
    image: o.image,
    imagePullPolicy: o.imagePullPolicy,
    args: [...args],
    ports: ports.map((p) => ({ ...p, protocol: 'TCP' })),
    // Liveness only counts once the process listens: opening a large collector store may take
    // minutes, and must not be killed for it.
    startupProbe: { ...probe('/livez', 5), failureThreshold: STARTUP_PROBE_FAILURES },
    readinessProbe: probe('/readyz', 5),
    livenessProbe: probe('/livez', 10),
    resources: { requests: { cpu: resources.cpu, memory: resources.memory }, limits: { memory: resources.memory } },
    securityContext: restrictedSecurityContext(CONTROL_PLANE_UID),
    volumeMounts: mounts,
  };
}

/** `metricsPort` and `scheme`: where the pod serves /metrics, announced with prometheus.io annotations for Prometheus setups without the Operator. */
function deployment(o: InstallOptions, name: string, replicas: number, metricsPort: number, scheme: Scheme, podSpec: Record<string, unknown>, extra: Record<string, unknown> = {}): KubeObject {
  const labels = componentLabels(name);
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name, namespace: o.namespace, labels },
    spec: {
      replicas,
      selector: { matchLabels: { 'app.kubernetes.io/name': name } },
      ...extra,
      template: {
        metadata: { labels: { ...labels, 'auditmesh.io/inject': 'false' }, annotations: prometheusScrapeAnnotations(metricsPort, scheme) },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: CONTROL_PLANE_UID, runAsGroup: CONTROL_PLANE_UID, fsGroup: CONTROL_PLANE_UID, seccompProfile: { type: 'RuntimeDefault' } },
          ...podSpec,
        },
      },
    },
  };
}

function service(o: InstallOptions, name: string, ports: Array<{ name: string; port: number; targetPort: number | string }>): KubeObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, namespace: o.namespace, labels: componentLabels(name) },
    spec: { selector: { 'app.kubernetes.io/name': name }, ports: ports.map((p) => ({ ...p, protocol: 'TCP' })) },
  };
}

/** The injector: Deployment (spread over nodes, disruption-budgeted when replicated) and its Service. */
export function injector(o: InstallOptions): KubeObject[] {
  // The mesh CA's certificate (never its key), which the injector embeds in every pod.
  const args = ['injector', '--port', String(INJECTOR_PORT), '--admin-port', String(INJECTOR_ADMIN_PORT), '--tls-cert', `${TLS_DIR}/tls.crt`, '--tls-key', `${TLS_DIR}/tls.key`, '--ca-file', `${MESH_CA_DIR}/${CA_CERT_FILE}`, ...o.injectArgs];
  const objects: KubeObject[] = [
    deployment(o, INJECTOR, o.injectorReplicas, INJECTOR_ADMIN_PORT, 'http', {
      containers: [
        container(o, 'injector', args, o.injectorResources, INJECTOR_ADMIN_PORT, 'http', [{ name: 'https-webhook', containerPort: INJECTOR_PORT }, { name: 'http-metrics', containerPort: INJECTOR_ADMIN_PORT }], [{ name: 'tls', mountPath: TLS_DIR, readOnly: true }, meshCaMount()]),
      ],
      volumes: [{ name: 'tls', secret: { secretName: INJECTOR_TLS_SECRET } }, meshCaVolume(false)],
      topologySpreadConstraints: [{ maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway', labelSelector: { matchLabels: { 'app.kubernetes.io/name': INJECTOR } } }],
    }),
    service(o, INJECTOR, [
      { name: 'https-webhook', port: 443, targetPort: 'https-webhook' },
      { name: 'http-metrics', port: INJECTOR_ADMIN_PORT, targetPort: 'http-metrics' },
    ]),
  ];
  if (o.injectorReplicas > 1) {
    objects.push({ apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: { name: INJECTOR, namespace: o.namespace, labels: componentLabels(INJECTOR) }, spec: { minAvailable: 1, selector: { matchLabels: { 'app.kubernetes.io/name': INJECTOR } } } });
  }
  return objects;
}

/**
 * The API token and cluster CA the collector fetches the issuer's keys with, as the kubelet's
 * kube-api-access volume holds them, for the collector container alone (the pod does not
 * automount one): the sidecars' projected tokens are checked against those keys.
 */
function apiAccessVolume(): Record<string, unknown> {
  return {
    name: 'kube-api-access',
    projected: {
      defaultMode: 0o444,
      sources: [
        { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
        { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
        // The collector's namespace: its serving certificate names its Service in it.
        { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
      ],
    },
  };
}

/**
 * The collector (`auditmesh collector`, its own issue): one replica, as its embedded LMDB store
 * has a single writer, on a PersistentVolumeClaim, replaced with Recreate so two never share it.
 * Sidecars present projected ServiceAccount tokens (audience auditmesh); the collector checks them
 * against the cluster issuer's keys and, with the mesh CA of its Secret (--ca-dir), certifies
 * their keys and takes their records over mTLS only. With that CA its HTTP port (reads, /metrics,
 * probes) serves HTTPS with its CA-issued serving certificate. Nothing is to be created by hand.
 */
export function collector(o: InstallOptions): KubeObject[] {
  // The mesh CA comes from its Secret only: in a pod the collector never makes one (a replica of its own would split the trust root).
  const args = ['collector', '--grpc-port', String(COLLECTOR_GRPC_PORT), '--http-port', String(COLLECTOR_HTTP_PORT), '--store', STORE_DIR, '--read-policy', READ_POLICY_FILE, '--ca-dir', MESH_CA_DIR];
  return [
    {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: `${COLLECTOR}-store`, namespace: o.namespace, labels: componentLabels(COLLECTOR) },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: o.collectorStorage } }, ...(o.storageClass !== undefined ? { storageClassName: o.storageClass } : {}) },
    },
    deployment(
      o,
      COLLECTOR,
      1,
      COLLECTOR_HTTP_PORT,
      'https',
      {
        containers: [
          container(o, 'collector', args, o.collectorResources, COLLECTOR_HTTP_PORT, 'https', [{ name: 'grpc', containerPort: COLLECTOR_GRPC_PORT }, { name: 'http', containerPort: COLLECTOR_HTTP_PORT }], [
            { name: 'store', mountPath: STORE_DIR },
            { name: 'kube-api-access', mountPath: API_ACCESS_DIR, readOnly: true },
            { name: 'read-policy', mountPath: READ_POLICY_DIR, readOnly: true },
            meshCaMount(),
          ]),
        ],
        volumes: [
          { name: 'store', persistentVolumeClaim: { claimName: `${COLLECTOR}-store` } },
          apiAccessVolume(),
          { name: 'read-policy', configMap: { name: READ_POLICY_CONFIGMAP } },
          meshCaVolume(true),
        ],
      },
      { strategy: { type: 'Recreate' } },
    ),
    service(o, COLLECTOR, [
      { name: 'grpc', port: COLLECTOR_GRPC_PORT, targetPort: 'grpc' },
      { name: 'http', port: COLLECTOR_HTTP_PORT, targetPort: 'http' },
    ]),
  ];
}
