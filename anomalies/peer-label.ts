/** Upper bound on distinct peer label values: past it, new peers are labelled `other`. */
export const MAX_PEER_LABELS = 200;
const PEER_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * Bounded peer-service labels for metrics: only DNS-label-shaped names, at most
 * MAX_PEER_LABELS of them per process, so a client inventing names cannot grow the series.
 */
export function createPeerLabels(max = MAX_PEER_LABELS): (peer: string | undefined) => string {
  const seen = new Set<string>();
  return (peer) => {
    if (peer === undefined || !PEER_RE.test(peer)) return 'unknown';
    if (seen.has(peer)) return peer;
    if (seen.size >= max) return 'other';
    seen.add(peer);
    return peer;
  };
}

const IPV4_RE = /^\d{1,3}(\.\d{1,3}){3}$/;

/** The service a host name names: `inventory.shop.svc.cluster.local` → `inventory`; IPs are unknown. */
export function serviceOfHost(host: string): string | undefined {
  if (host === '' || IPV4_RE.test(host) || host.includes(':')) return undefined;
  const first = host.split('.')[0]!.toLowerCase();
  return PEER_RE.test(first) ? first : undefined;
}

/**
 * The other side's service: for inbound traffic what the calling sidecar stamped in
 * `x-auditmesh-client` (a claim until identities are authenticated), for outbound the service the
 * host name names.
 */
export function peerOf(direction: 'inbound' | 'outbound', claimedClient: string | string[] | undefined, host: string | undefined): string | undefined {
  // Only a service-shaped claim names the peer; anything else is kept as claimed, in the record alone.
  if (direction === 'inbound') return typeof claimedClient === 'string' && PEER_RE.test(claimedClient) ? claimedClient : undefined;
  return host === undefined ? undefined : serviceOfHost(host);
}
