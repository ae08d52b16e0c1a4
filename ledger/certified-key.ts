import { X509Certificate, type KeyObject } from 'node:crypto';
import { fail } from './link-verifier.js';

/**
 * Keys the mesh CA certifies (issue 24), checked against its bundle (`--ca-file`) with Node's
 * X509Certificate (OpenSSL):
 *
 * - a journal key (certifiedIdentity): issued and signed by a certificate of the CA bundle, for
 *   exactly this public key, naming a SPIFFE ID. The validity period is not checked: the
 *   certificate lives 24 hours, the journal for years.
 * - the collector's serving key (servingKeyOf), which signs its Welcomes and Acks: the leaf of
 *   the chain the collector sends, issued and signed by a certificate of the bundle, for
 *   serverAuth, valid now, an Ed25519 key.
 */

/** The certificates of a PEM bundle; throws naming the problem if it holds none. */
export function caBundleFrom(pem: string): X509Certificate[] {
  const blocks = certificateBlocks(pem);
  if (blocks.length === 0) throw new Error('no PEM certificate in the CA bundle');
  return blocks.map((block) => new X509Certificate(block));
}

/** The PEM certificate blocks of a bundle or chain, in order. */
export function certificateBlocks(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
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

/** TLS Web Server Authentication (RFC 5280, id-kp-serverAuth). */
const SERVER_AUTH_OID = '1.3.6.1.5.5.7.3.1';

/** The extended key usages of a certificate (Node 20 names them `keyUsage`, later versions `extKeyUsage`). */
function extendedKeyUsage(cert: X509Certificate): readonly string[] {
  return (cert as X509Certificate & { extKeyUsage?: string[] }).extKeyUsage ?? cert.keyUsage ?? [];
}

/**
 * The collector's serving key from the chain it presents (PEM, leaf first), or why the chain does
 * not certify one: its leaf must be issued by a certificate of the CA bundle, allow serverAuth,
 * be valid at `nowMs` and hold an Ed25519 key.
 */
export function servingKeyOf(chainPem: string, ca: readonly X509Certificate[], nowMs = Date.now()): { key: KeyObject; leaf: X509Certificate } | { problem: string } {
  const first = certificateBlocks(chainPem)[0];
  if (first === undefined) return { problem: 'no certificate' };
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(first);
  } catch (err) {
    return { problem: `its certificate cannot be read (${(err as Error).message})` };
  }
  if (!ca.some((root) => leaf.checkIssued(root) && leaf.verify(root.publicKey))) return { problem: `its certificate (${leaf.subject.replace(/\n/g, ', ')}) is not issued by the mesh CA (--ca-file)` };
  if (!extendedKeyUsage(leaf).includes(SERVER_AUTH_OID)) return { problem: 'its certificate is not for serverAuth' };
  if (nowMs < Date.parse(leaf.validFrom) || nowMs > Date.parse(leaf.validTo)) return { problem: `its certificate is not valid now (${leaf.validFrom} .. ${leaf.validTo})` };
  if (leaf.publicKey.asymmetricKeyType !== 'ed25519') return { problem: `its certificate's key is ${leaf.publicKey.asymmetricKeyType}, not Ed25519` };
  return { key: leaf.publicKey, leaf };
}

/**
 * A key change the mesh CA endorses: the new key's certificate (issued by the CA, for exactly that
 * key) names the same SPIFFE ID as the previous key's certificate. undefined when the new key has
 * no certificate (nothing to check: the change is unendorsed); fails with key-mismatch, naming why,
 * when a certificate is there but does not endorse the change. One rule for every verifier: the
 * journal's, the store's and the collector's ingest.
 */
export function caEndorsedIdentity(change: { batch: number; from: string; to: string }, ca: readonly X509Certificate[], next: { certificate: string | undefined; spki: Buffer }, previous: { certificate: string | undefined; spki: Buffer }): string | undefined {
  if (next.certificate === undefined) return undefined;
  const where = `epoch link ${change.batch}: key ${change.to}`;
  const got = certifiedIdentity(next.certificate, ca, next.spki);
  if ('problem' in got) return fail({ code: 'key-mismatch', batch: change.batch, problem: `${where} is not endorsed: ${got.problem}` });
  if (previous.certificate === undefined) return fail({ code: 'key-mismatch', batch: change.batch, problem: `${where} is certified as ${got.identity}, but the previous key ${change.from} has no mesh CA certificate: no certified identity to continue, so only ${change.from} can endorse the change` });
  const prev = certifiedIdentity(previous.certificate, ca, previous.spki);
  if ('problem' in prev) return fail({ code: 'key-mismatch', batch: change.batch, problem: `${where} is certified as ${got.identity}, but the previous key ${change.from} is not: ${prev.problem}` });
  if (prev.identity !== got.identity) return fail({ code: 'key-mismatch', batch: change.batch, problem: `${where} is certified as ${got.identity}, but the previous key ${change.from} as ${prev.identity}` });
  return got.identity;
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
