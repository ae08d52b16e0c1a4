import type { DirectoryEntry } from '../../../wire/sync-wire.js';
import type { DirectoryChange, DirectoryView } from './mesh-directory.js';

/** The pods behind each ClusterIP (kube-services.ts). */
export interface ServiceBackends {
  backends(clusterIp: string): readonly string[] | undefined;
  clusterIps(): string[];
}

/**
 * The directory with the cluster's Services in it: a ClusterIP is listed when every ready pod
 * behind it is a listed sidecar and all of them proved one identity, so a caller's sidecar, which
 * sees only the ClusterIP, reaches a sidecar of that identity over mTLS whichever pod the DNAT
 * picks. A Service with a pod outside the mesh (or pods of two identities) is not listed: its
 * callers call it as before, in plaintext, never sending TLS to an app that does not expect it.
 * Recomputed when the pods' directory or the Services change.
 */
export interface DirectoryWithServices extends DirectoryView {
  /** The Services changed (kube-services.ts onChange): recompute their entries. */
  refresh(): void;
  close(): void;
}

export function withClusterIps(pods: DirectoryView, services: ServiceBackends): DirectoryWithServices {
  let listed = new Map<string, DirectoryEntry>();
  const listeners = new Set<(change: DirectoryChange) => void>();
  const emit = (change: DirectoryChange): void => {
    if (change.added.length === 0 && change.removed.length === 0) return;
    for (const l of listeners) l(change);
  };

  const compute = (): Map<string, DirectoryEntry> => {
    const byIp = new Map(pods.entries().map((e) => [e.ip, e]));
    const next = new Map<string, DirectoryEntry>();
    for (const ip of services.clusterIps()) {
      const behind = (services.backends(ip) ?? []).map((pod) => byIp.get(pod));
      if (behind.length === 0 || behind.some((e) => e === undefined)) continue;
      const identities = new Set(behind.map((e) => e!.identity));
      if (identities.size !== 1) continue;
      const first = behind[0]!;
      next.set(ip, { ip, identity: first.identity, sidecar_id: first.sidecar_id, service: first.service });
    }
    return next;
  };
  const refresh = (): void => {
    const next = compute();
    const added = [...next.values()].filter((e) => {
      const had = listed.get(e.ip);
      return had === undefined || had.identity !== e.identity || had.sidecar_id !== e.sidecar_id || had.service !== e.service;
    });
    const removed = [...listed.keys()].filter((ip) => !next.has(ip));
    listed = next;
    emit({ added, removed });
  };
  const unsubscribe = pods.subscribe((change) => {
    emit(change);
    refresh();
  });
  refresh();

  return {
    entries: () => [...pods.entries(), ...listed.values()],
    has: (ip) => pods.has(ip) || listed.has(ip),
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    get size() {
      return pods.size + listed.size;
    },
    refresh,
    close() {
      unsubscribe();
      listeners.clear();
    },
  };
}
