import { isIP } from 'node:net';
import type { Pod } from './pod.js';
import { isJournalVolumeSize, QUANTITY_RE } from './journal-limit.js';

/** Every per-pod setting lives under this annotation prefix (README.md, Kubernetes). */
export const ANNOTATION_PREFIX = 'auditmesh.io/';

export const ANNOTATIONS = {
  excludeInboundPorts: 'auditmesh.io/exclude-inbound-ports',
  excludeOutboundPorts: 'auditmesh.io/exclude-outbound-ports',
  excludeOutboundCidrs: 'auditmesh.io/exclude-outbound-cidrs',
  auditMode: 'auditmesh.io/audit-mode',
  appPort: 'auditmesh.io/app-port',
  sidecarMode: 'auditmesh.io/sidecar-mode',
  proxyCpuRequest: 'auditmesh.io/proxy-cpu-request',
  proxyCpuLimit: 'auditmesh.io/proxy-cpu-limit',
  proxyMemoryRequest: 'auditmesh.io/proxy-memory-request',
  proxyMemoryLimit: 'auditmesh.io/proxy-memory-limit',
  journalSizeLimit: 'auditmesh.io/journal-size-limit',
  secretPaths: 'auditmesh.io/secret-paths',
  inboundPolicy: 'auditmesh.io/inbound-policy',
} as const;

/** The sidecar's --inbound-policy values (proxy/mesh/mesh-peers.ts), as the annotation takes them. */
export const INBOUND_POLICIES = ['permissive', 'verified', 'mesh-verified'] as const;
export type PodInboundPolicy = (typeof INBOUND_POLICIES)[number];

export type SidecarMode = 'native' | 'container';
export type PodAuditMode = 'async' | 'strict' | 'off';

/** The sidecar's resources, as Kubernetes quantities; an absent limit is not set. */
export interface ProxyResources {
  cpuRequest: string;
  memoryRequest: string;
  cpuLimit?: string;
  memoryLimit?: string;
}

/** What one pod gets, after its annotations are applied over the injector's defaults. */
export interface PodSettings {
  excludeInboundPorts: string;
  excludeOutboundPorts: string;
  excludeOutboundCidrs: string;
  auditMode: PodAuditMode;
  appPort: number | undefined;
  sidecarMode: SidecarMode;
  resources: ProxyResources;
  journalSizeLimit: string;
  /** `--secret-paths` for the sidecar: comma-separated templates, or '' for none. */
  secretPaths: string;
  /** `--inbound-policy` for the sidecar; undefined: the sidecar's default (permissive). */
  inboundPolicy: PodInboundPolicy | undefined;
}

export interface SettingDefaults {
  auditMode: PodAuditMode;
  sidecarMode: SidecarMode;
  resources: ProxyResources;
  journalSizeLimit: string;
}

/**
 * Reads the pod's `auditmesh.io/*` annotations over the defaults. Returns the settings, or the
 * list of annotations that are wrong: a pod whose exclusions cannot be honoured is better left
 * uninjected (and told why) than captured in a way its owner ruled out.
 */
export function podSettings(pod: Pod, defaults: SettingDefaults): { settings: PodSettings } | { errors: string[] } {
  const a = pod.metadata?.annotations ?? {};
  const errors: string[] = [];
  const check = (key: string, ok: (v: string) => boolean, expected: string): string | undefined => {
    const v = a[key]?.trim();
    if (v === undefined || v === '') return undefined;
    if (ok(v)) return v;
    errors.push(`${key}: expected ${expected}, got ${JSON.stringify(a[key])}`);
    return undefined;
  };
  const ports = (v: string): boolean => v.split(',').every((p) => isPort(p.trim()));
  const cidrs = (v: string): boolean => v.split(',').every((c) => isCidr(c.trim()));
  const quantity = (v: string): boolean => QUANTITY_RE.test(v);
  const appPort = check(ANNOTATIONS.appPort, isPort, 'a TCP port');
  const settings: PodSettings = {
    excludeInboundPorts: list(check(ANNOTATIONS.excludeInboundPorts, (v) => v === '*' || ports(v), 'comma-separated ports, or *')),
    excludeOutboundPorts: list(check(ANNOTATIONS.excludeOutboundPorts, ports, 'comma-separated ports')),
    excludeOutboundCidrs: list(check(ANNOTATIONS.excludeOutboundCidrs, cidrs, 'comma-separated CIDRs')),
    auditMode: (check(ANNOTATIONS.auditMode, (v) => ['async', 'strict', 'off'].includes(v), 'async, strict or off') as PodAuditMode | undefined) ?? defaults.auditMode,
    appPort: appPort === undefined ? undefined : Number(appPort),
    sidecarMode: (check(ANNOTATIONS.sidecarMode, (v) => v === 'native' || v === 'container', 'native or container') as SidecarMode | undefined) ?? defaults.sidecarMode,
    resources: {
      cpuRequest: check(ANNOTATIONS.proxyCpuRequest, quantity, 'a quantity such as 100m') ?? defaults.resources.cpuRequest,
      memoryRequest: check(ANNOTATIONS.proxyMemoryRequest, quantity, 'a quantity such as 128Mi') ?? defaults.resources.memoryRequest,
      cpuLimit: check(ANNOTATIONS.proxyCpuLimit, quantity, 'a quantity such as 1') ?? defaults.resources.cpuLimit,
      memoryLimit: check(ANNOTATIONS.proxyMemoryLimit, quantity, 'a quantity such as 256Mi') ?? defaults.resources.memoryLimit,
    },
    journalSizeLimit: check(ANNOTATIONS.journalSizeLimit, isJournalVolumeSize, 'a quantity of at least 16Mi such as 1Gi') ?? defaults.journalSizeLimit,
    secretPaths: list(check(ANNOTATIONS.secretPaths, (v) => v.split(',').every((p) => isSecretPath(p.trim())), 'comma-separated path templates such as /hooks/{secret}')),
    inboundPolicy: check(ANNOTATIONS.inboundPolicy, (v) => (INBOUND_POLICIES as readonly string[]).includes(v), INBOUND_POLICIES.join(', ').replace(/, ([^,]+)$/, ' or $1')) as PodInboundPolicy | undefined,
  };
  return errors.length > 0 ? { errors } : { settings };
}

function list(v: string | undefined): string {
  return v === undefined ? '' : v.split(',').map((s) => s.trim()).filter((s) => s !== '').join(',');
}

/** The shape the sidecar's --secret-paths accepts: from /, a {secret} segment, the others literal or *. */
function isSecretPath(v: string): boolean {
  const segments = v.startsWith('/') ? v.slice(1).split('/') : [];
  return segments.includes('{secret}') && segments.every((s) => s === '*' || s === '{secret}' || !/[{}*]/.test(s));
}

function isPort(v: string): boolean {
  return /^\d{1,5}$/.test(v) && Number(v) >= 1 && Number(v) <= 65535;
}

function isCidr(v: string): boolean {
  const [ip, bits, extra] = v.split('/');
  if (ip === undefined || extra !== undefined) return false;
  const family = isIP(ip);
  if (family === 0) return false;
  if (bits === undefined) return true;
  return /^\d{1,3}$/.test(bits) && Number(bits) <= (family === 4 ? 32 : 128);
}
