import { readFileSync } from 'node:fs';
import { Agent, fetch } from 'undici';
import type { Logger } from '../../../command/log.js';

/**
 * The cluster's Services with the pod addresses behind them, as the API server lists them
 * (Services and discovery.k8s.io/v1 EndpointSlices, read with the collector's own ServiceAccount
 * token). An app calls a Service by its ClusterIP; the caller's sidecar sees that address as the
 * connection's original destination, and kube-proxy's DNAT picks the pod only later, outside the
 * pod. So the mesh directory lists a ClusterIP too, when every ready pod behind it is a listed
 * sidecar of one identity (mesh-directory.ts): calling it over mTLS then reaches a sidecar whichever
 * pod the DNAT picks. Polled (a list each interval), not watched: a few requests every few seconds.
 */

export interface KubeServicesOptions {
  /** The API server, e.g. https://kubernetes.default.svc. */
  apiUrl: string;
  /** The CA bundle that signs the API server's certificate. */
  caFile?: string;
  /** The collector's API token, re-read for every request (the kubelet rotates it). */
  bearerTokenFile?: string;
  intervalMs: number;
  /** Called after a poll that changed what some ClusterIP leads to. */
  onChange(): void;
  log: Logger;
}

export interface KubeServices {
  /** The ready pod IPs behind a ClusterIP, or undefined when no Service has that ClusterIP. */
  backends(clusterIp: string): readonly string[] | undefined;
  /** Every ClusterIP known now. */
  clusterIps(): string[];
  close(): void;
}

interface ServiceItem {
  metadata: { name: string; namespace: string };
  spec?: { clusterIP?: string; clusterIPs?: string[]; type?: string };
}
interface SliceItem {
  metadata: { namespace: string; labels?: Record<string, string> };
  endpoints?: Array<{ addresses?: string[]; conditions?: { ready?: boolean | null } }>;
}

export const DEFAULT_KUBE_SERVICES_INTERVAL_MS = 5_000;

export function watchKubeServices(opts: KubeServicesOptions): KubeServices {
  const dispatcher = new Agent({ connect: opts.caFile === undefined ? {} : { ca: readFileSync(opts.caFile) } });
  let byIp = new Map<string, string[]>();
  let failing = false;
  let stopped = false;

  const list = async <T>(path: string): Promise<T[]> => {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.bearerTokenFile !== undefined) headers.authorization = `Bearer ${readFileSync(opts.bearerTokenFile, 'utf8').trim()}`;
    const res = await fetch(new URL(path, opts.apiUrl), { headers, dispatcher, signal: AbortSignal.timeout(10_000) });
    if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${(await res.text()).slice(0, 200)}`);
    return ((await res.json()) as { items?: T[] }).items ?? [];
  };

  const poll = async (): Promise<void> => {
    try {
      const [services, slices] = await Promise.all([list<ServiceItem>('/api/v1/services'), list<SliceItem>('/apis/discovery.k8s.io/v1/endpointslices')]);
      const ready = new Map<string, string[]>();
      for (const s of slices) {
        const name = s.metadata.labels?.['kubernetes.io/service-name'];
        if (name === undefined) continue;
        const key = `${s.metadata.namespace}/${name}`;
        const ips = ready.get(key) ?? [];
        // A pod not ready gets no traffic from the Service; an unknown condition counts as ready, as kube-proxy takes it.
        for (const e of s.endpoints ?? []) if (e.conditions?.ready !== false) ips.push(...(e.addresses ?? []));
        ready.set(key, ips);
      }
      const next = new Map<string, string[]>();
      for (const svc of services) {
        const ips = [...new Set(svc.spec?.clusterIPs ?? (svc.spec?.clusterIP === undefined ? [] : [svc.spec.clusterIP]))].filter((ip) => ip !== '' && ip !== 'None');
        const pods = [...new Set(ready.get(`${svc.metadata.namespace}/${svc.metadata.name}`) ?? [])].sort();
        for (const ip of ips) next.set(ip, pods);
      }
      const changed = next.size !== byIp.size || [...next].some(([ip, pods]) => byIp.get(ip)?.join(',') !== pods.join(','));
      byIp = next;
      if (failing) opts.log('info', 'collector reads the cluster Services again', { services: next.size });
      failing = false;
      if (changed) opts.onChange();
    } catch (err) {
      // What was read last stays: a Service's pods rarely change in the time the API server is away.
      if (!failing) opts.log('warn', 'collector cannot list the cluster Services: ClusterIPs stay as last read', { api: opts.apiUrl, err: (err as Error).message });
      failing = true;
    }
  };

  let timer: NodeJS.Timeout | undefined;
  const loop = (): void => {
    void poll().finally(() => {
      if (!stopped) timer = setTimeout(loop, opts.intervalMs);
    });
  };
  loop();
  return {
    backends: (ip) => byIp.get(ip),
    clusterIps: () => [...byIp.keys()],
    close() {
      stopped = true;
      clearTimeout(timer);
      void dispatcher.close();
    },
  };
}
