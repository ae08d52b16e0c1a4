import { join } from 'node:path';
import type { ExecutionContext } from 'ava';
import { loadOrCreateSigningKey } from '../../ledger/keys.js';
import type { WorkloadCertificateSource } from '../../proxy/mesh/mesh-credentials.js';
import { staticDirectory, type MeshDirectory, type MeshPeer } from '../../proxy/mesh/directory.js';
import type { TestMeshCa } from './mesh-ca.js';
import { tempDir } from './sidecar.js';

/** A SPIFFE ID of namespace shop. */
export const spiffe = (serviceAccount: string): string => `spiffe://cluster.local/ns/shop/sa/${serviceAccount}`;

/**
 * A sidecar's key file and a workload certificate of it from `ca`, as a sidecar would hold them
 * after Certify: pass both to startTestSidecar (`keyFile`, `workloadCertificate`). `trust` is the
 * CA bundle the sidecar trusts (its --ca-file); `ca`'s by default.
 */
export async function meshWorkload(t: ExecutionContext, ca: TestMeshCa, spiffeId: string, opts: { trust?: string; validity?: { notBefore: Date; notAfter: Date } } = {}): Promise<{ keyFile: string; workloadCertificate: WorkloadCertificateSource }> {
  const keyFile = join(await tempDir(t, 'auditmesh-key-'), 'sidecar.key');
  const key = await loadOrCreateSigningKey(keyFile);
  const der = await ca.certify(key.publicKeySpki, spiffeId, opts.validity);
  const chainPem = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END CERTIFICATE-----\n`;
  return { keyFile, workloadCertificate: { caPem: opts.trust ?? ca.pem, current: () => ({ chainPem, spiffeId }) } };
}

/** A directory listing `ip` as the meshed pod of `identity`. */
export function directoryOf(ip: string, identity: string, service = identity.split('/').pop()!): MeshDirectory {
  return staticDirectory(new Map<string, MeshPeer>([[ip, { identity, service, sidecarId: `shop/${service}-0` }]]));
}
