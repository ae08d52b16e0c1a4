import type { SkipReason } from './admission-outcomes.js';
import type { NamespaceInfo, Pod } from './pod.js';
import { append, prepend, setInMap, type JsonPatchOp } from './json-patch.js';
import { podSettings, type PodSettings } from './pod-settings.js';
import { PROMETHEUS_SCRAPE, prometheusScrapeAnnotations } from './scrape-annotations.js';
import { CA_BUNDLE_ANNOTATION, caBundleVolume } from './ca-bundle.js';
import { dataVolume, identityVolume, initContainer, INIT_CONTAINER, proxyContainer, PROXY_CONTAINER, type InjectOptions } from './sidecar-containers.js';

/** Opt-in label, on the namespace (`enabled`) and on the pod (`true`/`false` overrides). */
export const INJECT_LABEL = 'auditmesh.io/inject';
/** Set on injected pods: what was added, by which version. Its presence makes injection idempotent. */
export const STATUS_ANNOTATION = 'auditmesh.io/status';
/** Label on injected pods, for PodMonitors and `kubectl get pods -l`. */
export const SIDECAR_LABEL = 'auditmesh.io/sidecar';
const MIRROR_ANNOTATION = 'kubernetes.io/config.mirror';

/** The decision for one pod: the patch to apply (empty when skipped), why, and what to tell the user. */
export interface InjectResult {
  injected: boolean;
  /** Short, stable reason: `injected`, or why the pod was skipped. */
  reason: 'injected' | SkipReason;
  patch: JsonPatchOp[];
  /** Shown to whoever created the pod (`kubectl` prints admission warnings). */
  warnings: string[];
}

const skip = (reason: SkipReason, warnings: string[] = []): InjectResult => ({ injected: false, reason, patch: [], warnings });

/**
 * The injection policy, pure: the same pod, namespace and options always give the same patch.
 * Used by the webhook (`auditmesh injector`) and offline (`auditmesh inject -f`).
 */
export function inject(pod: Pod, namespace: NamespaceInfo, options: InjectOptions): InjectResult {
  const meta = pod.metadata ?? {};
  const annotations = meta.annotations ?? {};
  if (annotations[MIRROR_ANNOTATION] !== undefined) return skip('mirror-pod');
  if (pod.spec.hostNetwork === true) return skip('host-network');
  const all = [...(pod.spec.initContainers ?? []), ...pod.spec.containers];
  if (annotations[STATUS_ANNOTATION] !== undefined || all.some((c) => c.name === PROXY_CONTAINER || c.name === INIT_CONTAINER)) return skip('already-injected');
  const podChoice = meta.labels?.[INJECT_LABEL];
  if (podChoice === 'false') return skip('opted-out');
  if (podChoice !== 'true' && namespace.labels[INJECT_LABEL] !== 'enabled') return skip('not-enabled');

  const parsed = podSettings(pod, options);
  if ('errors' in parsed) {
    return skip('invalid-annotations', parsed.errors.map((e) => `auditmesh: sidecar not injected, fix the annotation: ${e}`));
  }
  const settings = { ...parsed.settings, appPort: parsed.settings.appPort ?? firstTcpPort(pod) };
  const warnings = warningsFor(pod, settings, options);
  return { injected: true, reason: 'injected', patch: buildPatch(pod, settings, options), warnings };
}

function buildPatch(pod: Pod, settings: PodSettings, options: InjectOptions): JsonPatchOp[] {
  const meta = pod.metadata ?? {};
  const init = initContainer(options, settings);
  const proxy = proxyContainer(options, settings, serviceName(pod));
  const ops: JsonPatchOp[] = [];
  if (settings.sidecarMode === 'native') {
    // First, so the user's own init containers already run captured (the proxy's startup probe
    // holds them until it is ready).
    prepend(ops, '/spec/initContainers', pod.spec.initContainers, [init, proxy]);
  } else {
    // Last: in container mode nothing proxies until the app's containers start, so earlier init
    // containers must not be captured.
    append(ops, '/spec/initContainers', pod.spec.initContainers, [init]);
    prepend(ops, '/spec/containers', pod.spec.containers, [proxy]);
  }
  const volumes = [dataVolume(settings), identityVolume(), ...(options.caBundle === undefined ? [] : [caBundleVolume()])];
  append(ops, '/spec/volumes', pod.spec.volumes, volumes);
  if (pod.metadata === undefined) ops.push({ op: 'add', path: '/metadata', value: {} });
  setInMap(ops, '/metadata/labels', meta.labels, { [SIDECAR_LABEL]: 'true' });
  const status = { version: options.version, mode: settings.sidecarMode, initContainers: settings.sidecarMode === 'native' ? [INIT_CONTAINER, PROXY_CONTAINER] : [INIT_CONTAINER], containers: settings.sidecarMode === 'native' ? [] : [PROXY_CONTAINER], volumes: volumes.map((v) => v.name) };
  // The app's own prometheus.io annotations win: they can name one port only, and theirs is theirs.
  const scrape = meta.annotations?.[PROMETHEUS_SCRAPE] === undefined ? prometheusScrapeAnnotations(options.adminPort) : {};
  // The injector's bundle replaces any the pod came with: the pod's author does not choose whom its sidecar trusts.
  const bundle: Record<string, string> = options.caBundle === undefined ? {} : { [CA_BUNDLE_ANNOTATION]: options.caBundle };
  setInMap(ops, '/metadata/annotations', meta.annotations, { [STATUS_ANNOTATION]: JSON.stringify(status), ...scrape, ...bundle });
  return ops;
}

/** The service identity for records: the pod's app label; otherwise the sidecar derives it from the pod name. */
function serviceName(pod: Pod): string | undefined {
  const labels = pod.metadata?.labels ?? {};
  return labels['app.kubernetes.io/name'] ?? labels.app;
}

/** The app's port for inbound traffic that was not redirected: the first declared TCP port. */
function firstTcpPort(pod: Pod): number | undefined {
  for (const c of pod.spec.containers) {
    for (const p of c.ports ?? []) if ((p.protocol ?? 'TCP') === 'TCP') return p.containerPort;
  }
  return undefined;
}

function warningsFor(pod: Pod, settings: PodSettings, options: InjectOptions): string[] {
  const warnings: string[] = [];
  if (settings.appPort === undefined) {
    warnings.push('auditmesh: the pod declares no TCP container port (nor auditmesh.io/app-port): inbound traffic is not captured');
  }
  const podUid = pod.spec.securityContext?.runAsUser;
  if (pod.spec.containers.some((c) => (c.securityContext?.runAsUser ?? podUid) === options.proxyUid)) {
    warnings.push(`auditmesh: a container runs as uid ${options.proxyUid}, the proxy's uid: its outbound traffic bypasses the audit`);
  }
  if (pod.metadata?.annotations?.[PROMETHEUS_SCRAPE] !== undefined) {
    warnings.push(`auditmesh: the pod sets its own ${PROMETHEUS_SCRAPE}, so the sidecar's metrics (port ${options.adminPort}) are scraped only through the auditmesh-sidecars PodMonitor`);
  }
  const isJob = pod.metadata?.ownerReferences?.some((o) => o.kind === 'Job') ?? false;
  if (isJob && settings.sidecarMode === 'container') {
    warnings.push('auditmesh: a Job pod with the sidecar as a regular container never completes; use auditmesh.io/sidecar-mode: native (Kubernetes >= 1.29)');
  }
  return warnings;
}
