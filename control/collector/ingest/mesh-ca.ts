import { webcrypto } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ED25519, x509 } from '../../../ledger/x509.js';

/**
 * The mesh CA: an ECDSA P-256 key and self-signed certificate in --ca-dir (ca.crt, ca.key 0600),
 * shared by every collector replica, that certifies Ed25519 workload keys (the sidecars' journal
 * keys, from their CSRs) and the collector's own serving key. Leaves carry only what mTLS and
 * record signing need: digitalSignature, serverAuth + clientAuth, and their names as SANs.
 */

const CA_SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const;
const CA_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const CA_VALID_MS = 10 * 365 * 86_400_000;
/** Nodes' clocks disagree a little: certificates start this much before they are issued. */
const BACKDATE_MS = 60_000;

export interface IssuedCertificate {
  /** The leaf, then the CA: what a TLS peer presents. */
  chainPem: string;
  notAfterUnixMs: number;
}

export interface LeafNames {
  uris?: readonly string[];
  dns?: readonly string[];
  ips?: readonly string[];
}

export interface MeshCa {
  /** ca.crt: the bundle sidecars and readers trust. */
  readonly certPem: string;
  /** Certifies `publicKey` (Ed25519) for `names`, valid `ttlMs` from now. */
  issue(publicKey: webcrypto.CryptoKey | x509.PublicKey, names: LeafNames, ttlMs: number): Promise<IssuedCertificate>;
}

/** A CSR refused: not parseable, its signature does not verify, or not an Ed25519 key. */
export class BadCsr extends Error {}

export const CA_CERT_FILE = 'ca.crt';
export const CA_KEY_FILE = 'ca.key';

/**
 * Loads the CA from `dir`; when it holds none and `create` is set (local runs only: in Kubernetes
 * every replica must share the Secret's CA), makes one and writes it there first.
 */
export async function openMeshCa(dir: string, options: { create: boolean; now?: Date }): Promise<MeshCa> {
  const certFile = join(dir, CA_CERT_FILE);
  const keyFile = join(dir, CA_KEY_FILE);
  if (!existsSync(certFile) || !existsSync(keyFile)) {
    if (!options.create) throw new Error(`no mesh CA in ${dir} (${CA_CERT_FILE} and ${CA_KEY_FILE}): mount the CA Secret that auditmesh install renders there`);
    const made = await createCaFiles(options.now ?? new Date());
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    writeFileSync(keyFile, made.keyPem, { mode: 0o600, flag: 'wx' });
    writeFileSync(certFile, made.certPem, { flag: 'wx' });
  }
  const certPem = readFileSync(certFile, 'utf8');
  const caCert = new x509.X509Certificate(certPem);
  const der = x509.PemConverter.decodeFirst(readFileSync(keyFile, 'utf8'));
  const signingKey = await webcrypto.subtle.importKey('pkcs8', der, CA_KEY, false, ['sign']);
  return {
    certPem: caCert.toString('pem'),
    async issue(publicKey, names, ttlMs) {
      const now = Date.now();
      // Certificates carry whole seconds: the answer's not-after must be the certificate's.
      const notAfter = new Date(Math.floor((now + ttlMs) / 1000) * 1000);
      const leaf = await x509.X509CertificateGenerator.create({
        subject: `CN=${names.uris?.[0] ?? names.dns?.[0] ?? 'auditmesh workload'}`.replace(/,/g, '\\,'),
        issuer: caCert.subject,
        notBefore: new Date(now - BACKDATE_MS),
        notAfter,
        publicKey,
        signingKey,
        signingAlgorithm: CA_SIGNING,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension(sans(names), true),
          await x509.AuthorityKeyIdentifierExtension.create(caCert),
        ],
      });
      return { chainPem: `${leaf.toString('pem')}\n${caCert.toString('pem')}\n`, notAfterUnixMs: notAfter.getTime() };
    },
  };
}

/** The public key of a CSR whose own signature verifies; throws BadCsr otherwise. */
export async function csrPublicKey(csrPem: string): Promise<x509.PublicKey> {
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(csrPem);
  } catch (err) {
    throw new BadCsr(`not a PEM PKCS#10 certificate request: ${(err as Error).message}`);
  }
  if (csr.publicKey.algorithm.name !== ED25519.name) throw new BadCsr(`the CSR's key is ${csr.publicKey.algorithm.name}, not Ed25519 (the journal's signing key)`);
  let verified = false;
  try {
    verified = await csr.verify();
  } catch (err) {
    throw new BadCsr(`the CSR's signature cannot be checked: ${(err as Error).message}`);
  }
  if (!verified) throw new BadCsr("the CSR's signature does not verify with the key it carries");
  return csr.publicKey;
}

function sans(names: LeafNames): x509.JsonGeneralNames {
  return [
    ...(names.uris ?? []).map((value) => ({ type: 'url' as const, value })),
    ...(names.dns ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(names.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
}

/** A new CA: key and self-signed certificate, PEM. Also what `auditmesh install` renders into the CA Secret. */
export async function createCaFiles(now = new Date()): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey(CA_KEY, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=auditmesh mesh CA, O=auditmesh',
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + CA_VALID_MS),
    keys,
    signingAlgorithm: CA_SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return { certPem: cert.toString('pem'), keyPem: x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') };
}
