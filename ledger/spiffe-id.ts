/** A workload identity: `spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT`. */
export interface SpiffeParts {
  trustDomain: string;
  namespace: string;
  serviceAccount: string;
}

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

export function spiffeIdOf(p: SpiffeParts): string {
  return `spiffe://${p.trustDomain}/ns/${p.namespace}/sa/${p.serviceAccount}`;
}

const SPIFFE_WORKLOAD = /^spiffe:\/\/([^/]+)\/ns\/([^/]+)\/sa\/([^/]+)$/;

/** The parts of a workload SPIFFE ID, or null for anything else (untrusted input never throws). */
export function parseSpiffeId(id: string): SpiffeParts | null {
  const m = SPIFFE_WORKLOAD.exec(id);
  return m === null ? null : { trustDomain: m[1], namespace: m[2], serviceAccount: m[3] };
}
