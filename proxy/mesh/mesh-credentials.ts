import type { KeyObject } from 'node:crypto';

/**
 * What sidecar-to-sidecar mTLS authenticates with: the workload certificate from the mesh CA
 * (proxy/identity/workload-identity.ts, renewed at half-life) and its key, the journal signer's
 * Ed25519 key. Every new connection reads `current()`, so a renewed certificate is used from the
 * next connection on; open ones finish on the one they started with.
 */

/** The ALPN protocol a sidecar offers to a peer sidecar; the inbound capture listener terminates TLS that offers it. */
export const MESH_ALPN = 'auditmesh/1';

/** The workload certificate as the mesh TLS paths need it: a subset of WorkloadCertificate. */
export interface WorkloadCertificateSource {
  readonly caPem: string;
  current(): { chainPem: string; spiffeId: string };
}

export interface MeshCredentials {
  /** The mesh CA bundle: the only roots a peer sidecar's certificate may chain to. */
  readonly caPem: string;
  /** The workload key, PKCS#8 PEM. */
  readonly keyPem: string;
  /** The current certificate chain and this sidecar's SPIFFE ID. */
  current(): { chainPem: string; spiffeId: string };
}

export function meshCredentials(certificate: WorkloadCertificateSource, privateKey: KeyObject): MeshCredentials {
  return {
    caPem: certificate.caPem,
    keyPem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    current: () => certificate.current(),
  };
}

/** The `spiffe://` URI SAN of a certificate as node:tls shows it (`subjectaltname`), if any. */
export function spiffeIdOfSan(subjectAltName: string | undefined): string | undefined {
  for (const name of (subjectAltName ?? '').split(', ')) if (name.startsWith('URI:spiffe://')) return name.slice(4);
  return undefined;
}
