import { X509Certificate } from 'node:crypto';

/**
 * Checks a mesh CA certificate of a journal key (the workload key the CA certifies, issue 24):
 * issued and signed by a certificate of the CA bundle, for exactly this public key, naming a
 * SPIFFE ID. Node's X509Certificate (OpenSSL) parses and verifies; the bundle is `--ca-file`.
 * The certificate's validity period is not checked: it lives 24 hours, the journal for years.
 */

/** The certificates of a PEM bundle; throws naming the problem if it holds none. */
export function caBundleFrom(pem: string): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new Error('no PEM certificate in the CA bundle');
  return blocks.map((block) => new X509Certificate(block));
}

/** A stored certificate: DER base64 or PEM. */
function parse(stored: string): X509Certificate {
  return new X509Certificate(stored.startsWith('-----BEGIN') ? stored : Buffer.from(stored, 'base64'));
}

/** The URI SAN starting `spiffe://`, if any. */
function spiffeId(cert: X509Certificate): string | undefined {
  for (const name of (cert.subjectAltName ?? '').split(', ')) if (name.startsWith('URI:spiffe://')) return name.slice(4);
  return undefined;
}

/** The SPIFFE ID the CA certifies for `spki`, or the reason the certificate does not certify it. */
export function certifiedIdentity(stored: string, ca: readonly X509Certificate[], spki: Buffer): { identity: string } | { problem: string } {
  let cert: X509Certificate;
  try {
    cert = parse(stored);
  } catch (err) {
    return { problem: `its certificate cannot be read (${(err as Error).message})` };
  }
  if (!ca.some((root) => cert.checkIssued(root) && cert.verify(root.publicKey))) return { problem: 'its certificate is not issued by the mesh CA (--ca-file)' };
  if (!cert.publicKey.export({ format: 'der', type: 'spki' }).equals(spki)) return { problem: 'its certificate is for another public key' };
  const identity = spiffeId(cert);
  return identity === undefined ? { problem: 'its certificate names no SPIFFE ID' } : { identity };
}

/**
 * Whether the first certificate of `chainPem` is issued by the CA bundle for exactly `spki`:
 * the collector's serving certificate, which names hosts (DNS and IP SANs), not a workload.
 * Returns its subject alternative names, or the reason it does not certify the key.
 */
export function certifiedKey(chainPem: string, ca: readonly X509Certificate[], spki: Buffer): { names: string } | { problem: string } {
  let cert: X509Certificate;
  try {
    const first = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(chainPem)?.[0];
    if (first === undefined) return { problem: 'its chain holds no PEM certificate' };
    cert = new X509Certificate(first);
  } catch (err) {
    return { problem: `its certificate cannot be read (${(err as Error).message})` };
  }
  if (!ca.some((root) => cert.checkIssued(root) && cert.verify(root.publicKey))) return { problem: 'its certificate is not issued by the mesh CA' };
  if (!cert.publicKey.export({ format: 'der', type: 'spki' }).equals(spki)) return { problem: 'its certificate is for another public key' };
  return { names: cert.subjectAltName ?? '' };
}
