import { port, UsageError, type FlagSpec, type FlagValues } from '../../proxy/config/flags.js';
import { VERSION } from '../version.js';
import type { InjectOptions } from './sidecar-containers.js';
import type { PodAuditMode, SidecarMode } from './pod-settings.js';

export const DEFAULT_IMAGE = `auditmesh/auditmesh:${VERSION}`;

/** The injection policy's flags, shared by `auditmesh injector`, `auditmesh inject` and `auditmesh install`. */
export const INJECT_FLAGS: readonly FlagSpec[] = [
  { name: 'image', type: 'string', default: DEFAULT_IMAGE, help: 'image of the injected auditmesh-init and auditmesh-proxy containers' },
  { name: 'image-pull-policy', type: 'string', default: 'IfNotPresent', choices: ['Always', 'IfNotPresent', 'Never'], help: 'pull policy of the injected containers' },
  { name: 'sidecar-mode', type: 'string', default: 'native', choices: ['native', 'container'], help: 'native: init container with restartPolicy Always (Kubernetes >= 1.29); container: a regular container (older clusters)' },
  { name: 'audit-mode', type: 'string', default: 'async', choices: ['async', 'strict', 'off'], help: "injected sidecars' audit mode (annotation auditmesh.io/audit-mode overrides)" },
  { name: 'proxy-uid', type: 'int', default: '1337', help: "the proxy's uid; its traffic is exempt from capture, so apps must not use it" },
  { name: 'proxy-inbound-port', type: 'int', default: '15006', help: "the proxy's inbound listener" },
  { name: 'proxy-outbound-port', type: 'int', default: '15001', help: "the proxy's outbound listener" },
  { name: 'proxy-admin-port', type: 'int', default: '15020', help: "the proxy's admin port (probes, /metrics); never captured" },
  { name: 'proxy-cpu-request', type: 'string', default: '50m', help: 'proxy CPU request' },
  // Measured (bench/README.md, "Memory as Kubernetes counts it"): the working set under the report's
  // full load is the request; the limit is what `npm run soak` runs ten minutes of full load under.
  { name: 'proxy-memory-request', type: 'string', default: '80Mi', help: "proxy memory request (the sidecar's measured working set under full load)" },
  { name: 'proxy-cpu-limit', type: 'string', help: 'proxy CPU limit (none by default: throttling a proxy slows every call)' },
  { name: 'proxy-memory-limit', type: 'string', default: '128Mi', help: 'proxy memory limit (a 10-minute full-load soak stays under it)' },
  { name: 'journal-size-limit', type: 'string', default: '1Gi', help: "size limit of the proxy's journal emptyDir" },
  { name: 'collector', type: 'string', help: 'HOST:PORT of the collector the proxies ship to (none: journal only)' },
];

/** Flag values → the policy's options; throws UsageError naming the flag at fault. */
export function injectOptionsFromFlags(values: FlagValues): InjectOptions {
  const uid = values['proxy-uid'] as number;
  if (uid === 0) throw new UsageError('--proxy-uid: the proxy must not run as root (0)');
  const collector = values.collector as string | undefined;
  if (collector !== undefined && !/^[^:\s]+:\d+$/.test(collector)) throw new UsageError(`--collector: expected HOST:PORT, got ${JSON.stringify(collector)}`);
  return {
    image: values.image as string,
    imagePullPolicy: values['image-pull-policy'] as InjectOptions['imagePullPolicy'],
    sidecarMode: values['sidecar-mode'] as SidecarMode,
    auditMode: values['audit-mode'] as PodAuditMode,
    proxyUid: uid,
    inboundPort: port(values, 'proxy-inbound-port'),
    outboundPort: port(values, 'proxy-outbound-port'),
    adminPort: port(values, 'proxy-admin-port'),
    resources: {
      cpuRequest: values['proxy-cpu-request'] as string,
      memoryRequest: values['proxy-memory-request'] as string,
      cpuLimit: values['proxy-cpu-limit'] as string | undefined,
      memoryLimit: values['proxy-memory-limit'] as string | undefined,
    },
    journalSizeLimit: values['journal-size-limit'] as string,
    collector,
    version: VERSION,
  };
}
