import { createPublicKey, webcrypto, type KeyObject } from 'node:crypto';
import { ED25519, x509 } from '../../ledger/x509.js';

/**
 * A PKCS#10 request for the workload's own Ed25519 key (the journal key), signed with it, as the
 * mesh CA's Certify takes it. The subject is a placeholder: the CA names the certificate after
 * the ServiceAccount token, never after what the request claims.
 */
export async function createWorkloadCsr(privateKey: KeyObject): Promise<string> {
  const keys = {
    privateKey: await webcrypto.subtle.importKey('pkcs8', privateKey.export({ format: 'der', type: 'pkcs8' }), ED25519, false, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', createPublicKey(privateKey).export({ format: 'der', type: 'spki' }), ED25519, true, ['verify']),
  };
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: 'CN=auditmesh workload', keys, signingAlgorithm: ED25519 });
  return csr.toString('pem');
}
