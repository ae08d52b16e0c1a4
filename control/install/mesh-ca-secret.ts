import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CA_CERT_FILE, CA_KEY_FILE, createCaFiles } from '../collector/ingest/mesh-ca.js';
import { COLLECTOR, componentLabels, type InstallOptions, type KubeObject } from './install-options.js';

/**
 * The mesh CA's Secret, shaped as cert-manager writes a CA Certificate's (kubernetes.io/tls:
 * tls.crt and tls.key the CA's own pair, ca.crt its certificate again), so the collector and the
 * injector mount it the same way whoever made it: the collector tls.crt and tls.key as ca.crt and
 * ca.key at its --ca-dir, the injector tls.crt alone, as its --ca-file. Nothing else mounts it.
 */
export const MESH_CA_SECRET = 'auditmesh-mesh-ca';
/** Where the collector and the injector mount it. */
export const MESH_CA_DIR = '/etc/auditmesh/ca';
const MESH_CA_VOLUME = 'mesh-ca';
/** cert-manager's CA: ten years, as a CA the collector makes for itself; renewed a month before, on the same key. */
const CERT_MANAGER_CA = { duration: '87600h', renewBefore: '720h' };

export interface MeshCaPair {
  certPem: string;
  keyPem: string;
}

/**
 * The pair in `dir` (ca.crt, ca.key: an existing CA to keep, such as a running cluster's), checked
 * as the collector will use it: a CA certificate, an ECDSA P-256 key that is its own; the key
 * re-encoded as PKCS#8, which the collector reads. Throws naming what is wrong.
 */
export async function readMeshCaPair(dir: string): Promise<MeshCaPair> {
  const read = async (file: string): Promise<string> => {
    try {
      return await readFile(join(dir, file), 'utf8');
    } catch (err) {
      throw new Error(`--ca-dir: cannot read ${join(dir, file)}: ${(err as Error).message}`);
    }
  };
  const [certText, keyText] = [await read(CA_CERT_FILE), await read(CA_KEY_FILE)];
  let cert: X509Certificate;
  let key: ReturnType<typeof createPrivateKey>;
  try {
    cert = new X509Certificate(certText);
    key = createPrivateKey(keyText);
  } catch (err) {
    throw new Error(`--ca-dir: ${dir} does not hold a PEM certificate and private key: ${(err as Error).message}`);
  }
  if (!cert.ca) throw new Error(`--ca-dir: ${join(dir, CA_CERT_FILE)} is not a CA certificate`);
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') throw new Error(`--ca-dir: ${join(dir, CA_KEY_FILE)} is not an ECDSA P-256 key, which the mesh CA signs with`);
  if (!cert.checkPrivateKey(key)) throw new Error(`--ca-dir: ${join(dir, CA_KEY_FILE)} is not the key of ${join(dir, CA_CERT_FILE)}`);
  return { certPem: cert.toString(), keyPem: key.export({ format: 'pem', type: 'pkcs8' }) as string };
}

/** The objects that make the CA Secret: the Secret itself (self-signed: `pair`), or cert-manager's Issuer and Certificate. */
export function meshCaObjects(o: InstallOptions, pair: MeshCaPair | undefined): KubeObject[] {
  const labels = componentLabels(COLLECTOR);
  const meta = (name: string): KubeObject['metadata'] => ({ name, namespace: o.namespace, labels });
  if (o.meshCa.source === 'cert-manager') {
    const issuer = `${MESH_CA_SECRET}-selfsigned`;
    return [
      { apiVersion: 'cert-manager.io/v1', kind: 'Issuer', metadata: meta(issuer), spec: { selfSigned: {} } },
      {
        apiVersion: 'cert-manager.io/v1',
        kind: 'Certificate',
        metadata: meta(MESH_CA_SECRET),
        spec: {
          secretName: MESH_CA_SECRET,
          isCA: true,
          commonName: 'auditmesh mesh CA',
          subject: { organizations: ['auditmesh'] },
          ...CERT_MANAGER_CA,
          // PKCS#8, which the collector reads; the same key on renewal, so the bundles pods carry stay good.
          privateKey: { algorithm: 'ECDSA', size: 256, encoding: 'PKCS8', rotationPolicy: 'Never' },
          usages: ['cert sign', 'crl sign'],
          issuerRef: { name: issuer, kind: 'Issuer' },
        },
      },
    ];
  }
  if (pair === undefined) throw new Error('a self-signed mesh CA needs its pair');
  const b64 = (pem: string): string => Buffer.from(pem).toString('base64');
  return [{ apiVersion: 'v1', kind: 'Secret', metadata: meta(MESH_CA_SECRET), type: 'kubernetes.io/tls', data: { 'tls.crt': b64(pair.certPem), 'tls.key': b64(pair.keyPem), 'ca.crt': b64(pair.certPem) } }];
}

/** The pair a self-signed install embeds: the one of --ca-dir, or a new CA (which replaces a running cluster's trust root). */
export async function meshCaPair(o: InstallOptions): Promise<MeshCaPair | undefined> {
  if (o.meshCa.source === 'cert-manager') return undefined;
  return o.meshCa.dir === undefined ? await createCaFiles() : await readMeshCaPair(o.meshCa.dir);
}

/**
 * The Secret as a volume: with the key for the collector (owner and group read: the pod's fsGroup),
 * the certificate alone for the injector. `items` picks the keys, so ca.key never reaches a pod
 * that mounts the certificate only.
 */
export function meshCaVolume(withKey: boolean): Record<string, unknown> {
  const items = [{ key: 'tls.crt', path: CA_CERT_FILE }, ...(withKey ? [{ key: 'tls.key', path: CA_KEY_FILE }] : [])];
  return { name: MESH_CA_VOLUME, secret: { secretName: MESH_CA_SECRET, defaultMode: withKey ? 0o440 : 0o444, items } };
}

export function meshCaMount(): { name: string; mountPath: string; readOnly: true } {
  return { name: MESH_CA_VOLUME, mountPath: MESH_CA_DIR, readOnly: true };
}
