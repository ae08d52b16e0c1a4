import { restrictedSecurityContext } from '../injector/sidecar-containers.js';
import { quantityBytes } from '../injector/journal-limit.js';
import { COLLECTOR, componentLabels, CONTROL_PLANE_UID, type InstallOptions, type KubeObject } from './install-options.js';

/**
 * The NATS JetStream cluster a collector tier (`install --ha`) stores on: a StatefulSet of
 * NATS_REPLICAS servers, each with its own PersistentVolumeClaim, routed to each other by the
 * headless Service's per-pod DNS names. Written for nats-server 2.9 (the version the tests run).
 */

export const NATS = 'auditmesh-nats';
/** The headless Service: per-pod DNS names for routes and for the collectors' server list. */
export const NATS_HEADLESS = `${NATS}-headless`;
/** Three servers: an R3 stream keeps a quorum with one of them down. */
export const NATS_REPLICAS = 3;
export const NATS_CLIENT_PORT = 4222;
export const NATS_CLUSTER_PORT = 6222;
export const NATS_MONITOR_PORT = 8222;
/** The cluster's name in nats.conf (routes only join servers of the same name). */
export const NATS_CLUSTER_NAME = 'auditmesh';
const CONFIG_DIR = '/etc/nats';
export const NATS_CONFIG_FILE = 'nats.conf';
const DATA_DIR = '/data';
/** Environment variable nats.conf reads the server's name from: the pod's name. */
export const SERVER_NAME_ENV = 'SERVER_NAME';

/** JetStream's file store may fill this share of the volume; the rest is the server's slack (snapshots, compaction). */
const FILE_STORE_SHARE = 0.9;
/** Memory streams may use this share of the memory limit (the tier keeps everything on file; this bounds what else might). */
const MEMORY_STORE_SHARE = 0.25;
/** GOMEMLIMIT as a share of the container's memory limit: the Go runtime collects before the kernel kills. */
const GO_MEMORY_SHARE = 0.9;
/** Startup probes every 5 s for up to 15 min: a restarted server first catches its streams up. */
const STARTUP_PERIOD_SECONDS = 5;
const STARTUP_PROBE_FAILURES = 180;

/** `nats://` URL of every server by its stable per-pod DNS name, as the collectors' `--jetstream` takes them. */
export function natsUrls(namespace: string, port = NATS_CLIENT_PORT): string[] {
  return Array.from({ length: NATS_REPLICAS }, (_, i) => `nats://${NATS}-${i}.${NATS_HEADLESS}.${namespace}.svc:${port}`);
}

const bytesOf = (quantity: string, flag: string): number => {
  const bytes = quantityBytes(quantity);
  if (bytes === null || bytes <= 0) throw new Error(`${flag}: not a quantity: ${JSON.stringify(quantity)}`);
  return bytes;
};

/**
 * nats.conf. `$SERVER_NAME` is read from the environment (nats-server resolves undefined
 * variables there), so one ConfigMap serves every pod. A server finds itself among the routes and
 * skips that one.
 */
export function natsConfig(o: InstallOptions): string {
  const fileStore = Math.floor(bytesOf(o.nats.storage, '--nats-storage') * FILE_STORE_SHARE);
  const memoryStore = Math.floor(bytesOf(o.nats.resources.memory, '--nats-memory') * MEMORY_STORE_SHARE);
  const routes = natsUrls(o.namespace, NATS_CLUSTER_PORT).map((u) => `    ${u}`);
  return [
    `server_name: $${SERVER_NAME_ENV}`,
    `listen: 0.0.0.0:${NATS_CLIENT_PORT}`,
    `http: 0.0.0.0:${NATS_MONITOR_PORT}`,
    // A sidecar's batch (up to 256 records) is published whole and may pass the 1 MB default.
    'max_payload: 8MB',
    '',
    'jetstream {',
    `  store_dir: ${DATA_DIR}`,
    `  max_file_store: ${fileStore}`,
    `  max_memory_store: ${memoryStore}`,
    '}',
    '',
    'cluster {',
    `  name: ${NATS_CLUSTER_NAME}`,
    `  listen: 0.0.0.0:${NATS_CLUSTER_PORT}`,
    '  routes: [',
    ...routes,
    '  ]',
    // DNS names of pods not yet scheduled do not resolve: keep trying while the set comes up.
    '  connect_retries: 120',
    // Clients (the collectors) know every server by its stable name; advertised pod IPs would
    // outlive a rescheduled pod.
    '  no_advertise: true',
    '}',
    '',
  ].join('\n');
}

const meta = (o: InstallOptions, name: string): KubeObject['metadata'] => ({ name, namespace: o.namespace, labels: componentLabels(NATS) });
const selector = { 'app.kubernetes.io/name': NATS };

function natsContainer(o: InstallOptions): Record<string, unknown> {
  const probe = (path: string, periodSeconds: number, failureThreshold = 3): Record<string, unknown> => ({ httpGet: { path, port: 'monitor' }, periodSeconds, timeoutSeconds: 2, failureThreshold });
  const memory = bytesOf(o.nats.resources.memory, '--nats-memory');
  return {
    name: 'nats',
    image: o.nats.image,
    imagePullPolicy: o.imagePullPolicy,
    // Arguments only: the image's own entrypoint runs nats-server (scratch and alpine variants alike).
    args: ['--config', `${CONFIG_DIR}/${NATS_CONFIG_FILE}`],
    env: [
      { name: SERVER_NAME_ENV, valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'GOMEMLIMIT', value: String(Math.floor(memory * GO_MEMORY_SHARE)) },
    ],
    ports: [
      { name: 'client', containerPort: NATS_CLIENT_PORT, protocol: 'TCP' },
      { name: 'cluster', containerPort: NATS_CLUSTER_PORT, protocol: 'TCP' },
      { name: 'monitor', containerPort: NATS_MONITOR_PORT, protocol: 'TCP' },
    ],
    // 2.9's /healthz: the full check (JetStream current with the meta leader, streams and
    // consumers caught up) gates startup, so a rolling restart moves on only once this server has
    // caught up; readiness asks for a current server, liveness only that JetStream runs.
    startupProbe: probe('/healthz', STARTUP_PERIOD_SECONDS, STARTUP_PROBE_FAILURES),
    readinessProbe: probe('/healthz?js-server-only=true', 10),
    livenessProbe: probe('/healthz?js-enabled-only=true', 30),
    resources: { requests: { cpu: o.nats.resources.cpu, memory: o.nats.resources.memory }, limits: { memory: o.nats.resources.memory } },
    securityContext: restrictedSecurityContext(CONTROL_PLANE_UID),
    volumeMounts: [
      { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
      { name: 'data', mountPath: DATA_DIR },
    ],
  };
}

/** The StatefulSet: parallel pod management, since no server is healthy before a quorum of them runs. */
function statefulSet(o: InstallOptions): KubeObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    metadata: meta(o, NATS),
    spec: {
      replicas: NATS_REPLICAS,
      serviceName: NATS_HEADLESS,
      podManagementPolicy: 'Parallel',
      updateStrategy: { type: 'RollingUpdate' },
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: { ...componentLabels(NATS), 'auditmesh.io/inject': 'false' } },
        spec: {
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: CONTROL_PLANE_UID, runAsGroup: CONTROL_PLANE_UID, fsGroup: CONTROL_PLANE_UID, seccompProfile: { type: 'RuntimeDefault' } },
          // Two servers on one node would lose the quorum with that node: one per node, or unscheduled.
          affinity: { podAntiAffinity: { requiredDuringSchedulingIgnoredDuringExecution: [{ topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: selector } }] } },
          containers: [natsContainer(o)],
          volumes: [{ name: 'config', configMap: { name: NATS } }],
        },
      },
      volumeClaimTemplates: [
        {
          metadata: { name: 'data', labels: componentLabels(NATS) },
          spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: o.nats.storage } }, ...(o.storageClass !== undefined ? { storageClassName: o.storageClass } : {}) },
        },
      ],
    },
  };
}

const tcpPort = (name: string, port: number): Record<string, unknown> => ({ name, port, targetPort: name, protocol: 'TCP' });

/** ConfigMap, headless and client Services, StatefulSet and its PodDisruptionBudget. */
export function natsCluster(o: InstallOptions): KubeObject[] {
  return [
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta(o, NATS), data: { [NATS_CONFIG_FILE]: natsConfig(o) } },
    {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: meta(o, NATS_HEADLESS),
      // Routes must resolve before any server is ready: none is ready without a quorum.
      spec: { clusterIP: 'None', publishNotReadyAddresses: true, selector, ports: [tcpPort('client', NATS_CLIENT_PORT), tcpPort('cluster', NATS_CLUSTER_PORT), tcpPort('monitor', NATS_MONITOR_PORT)] },
    },
    { apiVersion: 'v1', kind: 'Service', metadata: meta(o, NATS), spec: { selector, ports: [tcpPort('client', NATS_CLIENT_PORT)] } },
    statefulSet(o),
    { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: meta(o, NATS), spec: { maxUnavailable: 1, selector: { matchLabels: selector } } },
  ];
}

/** NATS pods: clients only from the collectors, routes only among themselves (probes come from the node). */
export function natsNetworkPolicy(o: InstallOptions): KubeObject {
  const pods = (name: string): Record<string, unknown> => ({ podSelector: { matchLabels: { 'app.kubernetes.io/name': name } } });
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta(o, NATS),
    spec: {
      podSelector: { matchLabels: selector },
      policyTypes: ['Ingress'],
      ingress: [
        { from: [pods(COLLECTOR)], ports: [{ protocol: 'TCP', port: NATS_CLIENT_PORT }] },
        { from: [pods(NATS)], ports: [{ protocol: 'TCP', port: NATS_CLUSTER_PORT }] },
      ],
    },
  };
}
