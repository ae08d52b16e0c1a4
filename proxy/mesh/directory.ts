/**
 * The mesh directory as a sidecar sees it: which pod addresses have an auditmesh sidecar, and the
 * workload identity each proved to the collector (its Hello, over mTLS with its workload
 * certificate). The collector streams it to every sidecar (control/collector/directory/, the
 * `Directory.Watch` RPC of wire/sync.proto); a caller's sidecar upgrades to mTLS only toward an
 * address listed here, and never sends TLS to an app that does not expect it.
 */

export interface MeshPeer {
  /** The pod's SPIFFE ID: spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT. */
  identity: string;
  /** The sidecar id (NS/POD in Kubernetes) and service it reported. */
  sidecarId: string;
  service: string;
}

export interface MeshDirectory {
  /** The meshed pod at this IP address, or undefined when the directory does not list it. */
  lookup(ip: string): MeshPeer | undefined;
  /**
   * False when the directory has not heard from the collector within its staleness bound: a
   * listed address is still called over mTLS (never downgraded), an unlisted one is called as
   * today, and the record says the directory was stale.
   */
  fresh(): boolean;
}

/** A directory that lists nothing: a sidecar without a collector or without identity. */
export const EMPTY_DIRECTORY: MeshDirectory = { lookup: () => undefined, fresh: () => true };

/** A fixed directory (tests, local runs): address to peer. */
export function staticDirectory(entries: ReadonlyMap<string, MeshPeer>): MeshDirectory {
  return { lookup: (ip) => entries.get(ip), fresh: () => true };
}
