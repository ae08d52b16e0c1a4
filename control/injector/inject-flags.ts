import { UsageError, type FlagSpec, type FlagValues } from '../../command/flags.js';
import { choice, fixed, flagsOf, optionalText, readSettings, tcpPort, text, whole } from '../../command/settings.js';
import { VERSION } from '../../command/version.js';
import type { InjectOptions } from './sidecar-containers.js';
import type { PodAuditMode, SidecarMode } from './pod-settings.js';
import { isJournalVolumeSize } from './journal-limit.js';

export const DEFAULT_IMAGE = `auditmesh/auditmesh:${VERSION}`;

/** The injection policy's settings, shared by `auditmesh injector`, `auditmesh inject` and `auditmesh install`. */
export const INJECT_SETTINGS = {
  image: text({ name: 'image', default: DEFAULT_IMAGE, help: 'image of the injected auditmesh-init and auditmesh-proxy containers' }),
  imagePullPolicy: choice<InjectOptions['imagePullPolicy']>({ name: 'image-pull-policy', default: 'IfNotPresent', choices: ['Always', 'IfNotPresent', 'Never'], help: 'pull policy of the injected containers' }),
  sidecarMode: choice<SidecarMode>({ name: 'sidecar-mode', default: 'native', choices: ['native', 'container'], help: 'native: init container with restartPolicy Always (Kubernetes >= 1.29); container: a regular container (older clusters)' }),
  auditMode: choice<PodAuditMode>({ name: 'audit-mode', default: 'async', choices: ['async', 'strict', 'off'], help: "injected sidecars' audit mode (annotation auditmesh.io/audit-mode overrides)" }),
  proxyUid: whole({ name: 'proxy-uid', default: 1337, help: "the proxy's uid; its traffic is exempt from capture, so apps must not use it" }, 1, 'the proxy must not run as root (0)'),
  inboundPort: tcpPort({ name: 'proxy-inbound-port', default: 15006, help: "the proxy's inbound listener" }),
  outboundPort: tcpPort({ name: 'proxy-outbound-port', default: 15001, help: "the proxy's outbound listener" }),
  adminPort: tcpPort({ name: 'proxy-admin-port', default: 15020, help: "the proxy's admin port (probes, /metrics); never captured" }),
  resources: {
    cpuRequest: text({ name: 'proxy-cpu-request', default: '50m', help: 'proxy CPU request' }),
    // Measured (bench/README.md, "Memory as Kubernetes counts it"): the working set under the report's
    // full load is the request; the limit is what `npm run soak` runs ten minutes of full load under.
    memoryRequest: text({ name: 'proxy-memory-request', default: '80Mi', help: "proxy memory request (the sidecar's measured working set under full load)" }),
    cpuLimit: optionalText({ name: 'proxy-cpu-limit', help: 'proxy CPU limit (none by default: throttling a proxy slows every call)' }),
    memoryLimit: text({ name: 'proxy-memory-limit', default: '128Mi', help: 'proxy memory limit (a 10-minute full-load soak stays under it)' }),
  },
  journalSizeLimit: text({ name: 'journal-size-limit', default: '1Gi', help: "size limit of the proxy's journal emptyDir (at least 16Mi); the journal's bound is 80% of it" }, (value) => {
    if (!isJournalVolumeSize(value)) throw new UsageError(`--journal-size-limit: expected a quantity of at least 16Mi such as 1Gi, got ${JSON.stringify(value)}`);
  }),
  collector: optionalText({ name: 'collector', help: 'HOST:PORT of the collector the proxies ship to (none: journal only)' }, (value) => {
    if (!/^[^:\s]+:\d+$/.test(value)) throw new UsageError(`--collector: expected HOST:PORT, got ${JSON.stringify(value)}`);
  }),
  version: fixed(VERSION),
  // Not a flag of the policy: `auditmesh injector` and `auditmesh inject` read it from their --ca-file.
  caBundle: fixed<string | undefined>(undefined),
};

export const INJECT_FLAGS: readonly FlagSpec[] = flagsOf(INJECT_SETTINGS);

/** Flag values → the policy's options; throws UsageError naming the flag at fault. */
export function injectOptionsFromFlags(values: FlagValues): InjectOptions {
  return readSettings(INJECT_SETTINGS, values, {});
}
