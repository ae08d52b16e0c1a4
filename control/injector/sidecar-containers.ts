import { IDENTITY_AUDIENCE } from '../identity-audience.js';
import type { Container } from './pod.js';
import type { PodSettings, SettingDefaults } from './pod-settings.js';
import { journalLimitBytes } from './journal-limit.js';
import { CA_BUNDLE_FILE, caBundleMount } from './ca-bundle.js';

/** Names of what the injector adds to a pod (README.md, Kubernetes). */
export const PROXY_CONTAINER = 'auditmesh-proxy';
export const INIT_CONTAINER = 'auditmesh-init';
export const DATA_VOLUME = 'auditmesh-data';
/** The projected ServiceAccount token the proxy presents to the collector. */
export const IDENTITY_VOLUME = 'auditmesh-identity';
const IDENTITY_DIR = '/var/run/secrets/auditmesh.io/identity';
/** The kubelet rotates a projected token at 80% of this. */
const IDENTITY_TOKEN_SECONDS = 3600;
/** Where the image keeps the init script (deploy/init/iptables.sh) and the CLI. */
export const IMAGE_APP_DIR = '/opt/auditmesh';
const DATA_DIR = '/var/lib/auditmesh';
/** Container port names are at most 15 characters. */
export const ADMIN_PORT_NAME = 'auditmesh-admin';

/** The injector's configuration: the image and ports every injected pod shares, and the per-pod defaults. */
export interface InjectOptions extends SettingDefaults {
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  /** The proxy's uid: the init script's owner match exempts its traffic. */
  proxyUid: number;
  inboundPort: number;
  outboundPort: number;
  adminPort: number;
  /** HOST:PORT of the collector, or undefined to journal only. */
  collector: string | undefined;
  /** Recorded in the status annotation, so an upgrade can tell old injections from new. */
  version: string;
  /** The mesh CA bundle (PEM) every injected pod carries (ca-bundle.ts); undefined: none, the sidecar ships without mTLS. */
  caBundle: string | undefined;
}

/**
 * V8 settings the sidecar runs with, on its container's command where a user sees them (Node
 * refuses --heap-growing-percent in NODE_OPTIONS): a 2 MiB young generation instead of one that
 * grows to 16 MiB per semi-space, and an old generation allowed 20% over what the last full
 * collection kept instead of V8's dynamic factor. Measured side by side, each took ~20-30 MiB off
 * the working set under load, neither cost CPU (bench/README.md, "Memory"); the bench and the soak
 * run their sidecars with the same.
 */
export const SIDECAR_NODE_FLAGS = ['--max-semi-space-size=2', '--heap-growing-percent=20'] as const;

type EnvVar = { name: string; value: string } | { name: string; valueFrom: { fieldRef: { fieldPath: string } } };

const env = (vars: Record<string, string | number | undefined>): EnvVar[] =>
  Object.entries(vars)
    .filter((e): e is [string, string | number] => e[1] !== undefined && e[1] !== '')
    .map(([name, value]) => ({ name, value: String(value) }));

/**
 * `auditmesh-init`: runs deploy/init/iptables.sh in the pod's network namespace. The only
 * container that needs privileges, and only NET_ADMIN and NET_RAW, as root, once.
 */
export function initContainer(options: InjectOptions, settings: PodSettings): Container {
  return {
    name: INIT_CONTAINER,
    image: options.image,
    imagePullPolicy: options.imagePullPolicy,
    command: ['/bin/sh', `${IMAGE_APP_DIR}/deploy/init/iptables.sh`],
    env: env({
      AUDITMESH_INBOUND_PORT: options.inboundPort,
      AUDITMESH_OUTBOUND_PORT: options.outboundPort,
      AUDITMESH_PROXY_UID: options.proxyUid,
      AUDITMESH_ADMIN_PORT: options.adminPort,
      AUDITMESH_EXCLUDE_INBOUND_PORTS: settings.appPort === undefined ? '*' : settings.excludeInboundPorts,
      AUDITMESH_EXCLUDE_OUTBOUND_PORTS: settings.excludeOutboundPorts,
      AUDITMESH_EXCLUDE_OUTBOUND_CIDRS: settings.excludeOutboundCidrs,
    }),
    resources: { requests: { cpu: '10m', memory: '16Mi' }, limits: { memory: '64Mi' } },
    securityContext: {
      runAsUser: 0,
      runAsGroup: 0,
      runAsNonRoot: false,
      privileged: false,
      allowPrivilegeEscalation: false,
      // iptables takes its lock file under /run.
      readOnlyRootFilesystem: false,
      capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
      seccompProfile: { type: 'RuntimeDefault' },
    },
  };
}

/**
 * `auditmesh-proxy`: the sidecar, Pod Security "restricted" as it stands: non-root fixed uid, no
 * capabilities, read-only root filesystem, RuntimeDefault seccomp; its journal and keys on the
 * size-limited `auditmesh-data` emptyDir. Native mode adds `restartPolicy: Always` (an init
 * container that keeps running: Kubernetes >= 1.29).
 */
export function proxyContainer(options: InjectOptions, settings: PodSettings, service: string | undefined): Container {
  const probe = (path: string, extra: Record<string, number>): Record<string, unknown> => ({ httpGet: { path, port: options.adminPort }, ...extra });
  const { cpuRequest, memoryRequest, cpuLimit, memoryLimit } = settings.resources;
  const limits = { ...(cpuLimit !== undefined ? { cpu: cpuLimit } : {}), ...(memoryLimit !== undefined ? { memory: memoryLimit } : {}) };
  return {
    name: PROXY_CONTAINER,
    image: options.image,
    imagePullPolicy: options.imagePullPolicy,
    // The image's entrypoint (deploy/Dockerfile) with the sidecar's V8 settings.
    command: ['node', ...SIDECAR_NODE_FLAGS, `${IMAGE_APP_DIR}/bin/auditmesh.js`],
    args: ['sidecar'],
    ...(settings.sidecarMode === 'native' ? { restartPolicy: 'Always' } : {}),
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
      // Claimed to the collector for the mesh directory, which lists it only as the stream's source address.
      { name: 'AUDITMESH_POD_IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      ...env({
        // The collector lets a token write only under its own pod's id.
        AUDITMESH_SIDECAR_ID: '$(POD_NAMESPACE)/$(POD_NAME)',
        AUDITMESH_IDENTITY_TOKEN_FILE: `${IDENTITY_DIR}/token`,
        // With the bundle the sidecar has its key certified by the mesh CA and ships over mTLS.
        AUDITMESH_CA_FILE: options.caBundle === undefined ? undefined : CA_BUNDLE_FILE,
        AUDITMESH_SERVICE: service,
        AUDITMESH_APP_PORT: settings.appPort,
        AUDITMESH_INBOUND_PORT: options.inboundPort,
        AUDITMESH_OUTBOUND_PORT: options.outboundPort,
        AUDITMESH_ADMIN_PORT: options.adminPort,
        AUDITMESH_BIND: '0.0.0.0',
        AUDITMESH_AUDIT_MODE: settings.auditMode,
        AUDITMESH_JOURNAL: `${DATA_DIR}/journal`,
        AUDITMESH_KEY: `${DATA_DIR}/sidecar.key`,
        AUDITMESH_REDACTION_KEY: `${DATA_DIR}/redaction.key`,
        // The bound applies before the kubelet's eviction at the volume's sizeLimit (journal-limit.ts).
        AUDITMESH_JOURNAL_LIMIT_BYTES: journalLimitBytes(settings.journalSizeLimit),
        AUDITMESH_COLLECTOR: options.collector,
        AUDITMESH_SECRET_PATHS: settings.secretPaths,
        // Which plaintext callers the sidecar refuses (auditmesh.io/inbound-policy); unset: permissive.
        AUDITMESH_INBOUND_POLICY: settings.inboundPolicy,
      }),
    ],
    ports: [{ name: ADMIN_PORT_NAME, containerPort: options.adminPort, protocol: 'TCP' }],
    // Later init containers and the app start only once this passes, so their traffic is captured.
    startupProbe: probe('/readyz', { periodSeconds: 1, failureThreshold: 120, timeoutSeconds: 1 }),
    readinessProbe: probe('/readyz', { periodSeconds: 5, failureThreshold: 3, timeoutSeconds: 1 }),
    livenessProbe: probe('/livez', { periodSeconds: 10, failureThreshold: 3, timeoutSeconds: 1 }),
    resources: { requests: { cpu: cpuRequest, memory: memoryRequest }, ...(Object.keys(limits).length > 0 ? { limits } : {}) },
    securityContext: restrictedSecurityContext(options.proxyUid),
    volumeMounts: [
      { name: DATA_VOLUME, mountPath: DATA_DIR },
      { name: IDENTITY_VOLUME, mountPath: IDENTITY_DIR, readOnly: true },
      ...(options.caBundle === undefined ? [] : [caBundleMount()]),
    ],
  };
}

/**
 * A container security context that meets Pod Security "restricted" on its own (whatever the
 * pod's), plus a read-only root filesystem: fixed non-root uid, no capabilities, no escalation.
 */
export function restrictedSecurityContext(uid: number): Record<string, unknown> {
  return {
    runAsUser: uid,
    runAsGroup: uid,
    runAsNonRoot: true,
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
}

/** The proxy's credential for the collector: a token the kubelet issues for this pod, audience auditmesh, and rotates. */
export function identityVolume(): { name: string; projected: Record<string, unknown> } {
  return { name: IDENTITY_VOLUME, projected: { sources: [{ serviceAccountToken: { audience: IDENTITY_AUDIENCE, expirationSeconds: IDENTITY_TOKEN_SECONDS, path: 'token' } }] } };
}

/** The journal's emptyDir: bounded, so a collector outage cannot fill the node's disk. */
export function dataVolume(settings: PodSettings): { name: string; emptyDir: { sizeLimit: string } } {
  return { name: DATA_VOLUME, emptyDir: { sizeLimit: settings.journalSizeLimit } };
}
