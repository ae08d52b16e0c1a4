import { X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { certificateBlocks } from '../../ledger/certified-key.js';
import { ANNOTATION_PREFIX } from './pod-settings.js';

/**
 * The mesh CA bundle as an injected pod carries it. A Secret or ConfigMap of the control plane's
 * namespace cannot be mounted by pods elsewhere, so the injector embeds the bundle in the pod
 * itself, as Linkerd does with its trust anchors: an annotation holds the PEM, a downwardAPI
 * volume shows that annotation to auditmesh-proxy as a file, and AUDITMESH_CA_FILE names it.
 */
export const CA_BUNDLE_ANNOTATION = `${ANNOTATION_PREFIX}ca-bundle`;
export const CA_VOLUME = 'auditmesh-ca';
const CA_DIR = '/var/run/secrets/auditmesh.io/ca';
export const CA_BUNDLE_FILE = `${CA_DIR}/ca.crt`;

/**
 * The certificates of a PEM bundle, re-encoded one after another; throws when it holds none, one
 * that does not parse, or anything private: a CA key must never reach a pod.
 */
export function caBundleOf(pem: string, where: string): string {
  if (/PRIVATE KEY-----/.test(pem)) throw new Error(`${where} holds a private key: give the mesh CA's certificate (ca.crt) only; its key stays with the collector`);
  const blocks = certificateBlocks(pem);
  if (blocks.length === 0) throw new Error(`${where} holds no PEM certificate`);
  return blocks
    .map((block, i) => {
      try {
        return new X509Certificate(block).toString().trim();
      } catch (err) {
        throw new Error(`${where}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
      }
    })
    .join('\n')
    .concat('\n');
}

/** The bundle in `file` (`--ca-file` of the injector and of `auditmesh inject`). */
export async function readCaBundle(file: string): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new Error(`cannot read the mesh CA bundle ${file}: ${(err as Error).message}`);
  }
  return caBundleOf(text, file);
}

/** The downwardAPI volume that shows the pod's CA_BUNDLE_ANNOTATION as ca.crt. */
export function caBundleVolume(): { name: string; downwardAPI: Record<string, unknown> } {
  return { name: CA_VOLUME, downwardAPI: { defaultMode: 0o444, items: [{ path: 'ca.crt', fieldRef: { apiVersion: 'v1', fieldPath: `metadata.annotations['${CA_BUNDLE_ANNOTATION}']` } }] } };
}

/** auditmesh-proxy's read-only mount of it. */
export function caBundleMount(): { name: string; mountPath: string; readOnly: true } {
  return { name: CA_VOLUME, mountPath: CA_DIR, readOnly: true };
}
