import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[1]);

const ECDSA = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };

/** A test mesh CA (ECDSA P-256, as the collector's) that certifies Ed25519 workload keys with a SPIFFE ID. */
export interface TestMeshCa {
  pem: string;
  /** DER of a leaf for the Ed25519 public key `spki`, URI SAN `spiffeId`; valid for a day unless `validity` says otherwise. */
  certify(spki: Uint8Array, spiffeId: string, validity?: { notBefore: Date; notAfter: Date }): Promise<Buffer>;
}

export async function createTestMeshCa(name = 'auditmesh test CA'): Promise<TestMeshCa> {
  const keys = (await webcrypto.subtle.generateKey(ECDSA, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const notBefore = new Date(Date.now() - 60_000);
  const notAfter = new Date(Date.now() + 86_400_000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: `CN=${name}`,
    notBefore,
    notAfter,
    keys,
    signingAlgorithm: ECDSA,
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  let serial = 1;
  return {
    pem: ca.toString('pem'),
    async certify(spki, spiffeId, validity = { notBefore, notAfter }) {
      const publicKey = await webcrypto.subtle.importKey('spki', spki, { name: 'Ed25519' }, true, ['verify']);
      const leaf = await x509.X509CertificateGenerator.create({
        serialNumber: (++serial).toString(16).padStart(2, '0'),
        issuer: ca.subject,
        subject: 'CN=workload',
        notBefore: validity.notBefore,
        notAfter: validity.notAfter,
        publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: ECDSA,
        extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: spiffeId }]), new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true)],
      });
      return Buffer.from(leaf.rawData);
    },
  };
}
