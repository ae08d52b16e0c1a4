import { createPublicKey, sign } from 'node:crypto';
import { join } from 'node:path';
import { keyIdOf } from '../../ledger/chain.js';
import { keyFromFlag, loadOrCreateSigningKey } from '../../ledger/keys.js';
import type { ServingIdentity } from './ingest/serving-identity.js';

/**
 * The key the collector signs with (its witness log's tree heads; its sync Acks may use it too).
 * With the mesh CA on, it is the serving identity's Ed25519 key, and its certification is the
 * CA-issued chain (renewed at half-life, so read `chainPem` when it is needed). Otherwise (no mesh
 * CA, or --insecure) it is a key of the collector's own, kept in the store folder as
 * `collector.key` (PKCS#8 PEM, 0600), created at first start: uncertified, but the same across
 * restarts, so a verifier can pin it.
 */
export interface CollectorSigner {
  /** chain.ts keyIdOf: the first 16 hex digits of SHA-256 over the DER SPKI. */
  readonly keyId: string;
  /** DER SubjectPublicKeyInfo. */
  readonly publicKeySpki: Buffer;
  /** The mesh CA's certificate chain for this key (PEM, leaf first); undefined for a key of its own. */
  readonly chainPem: string | undefined;
  /** Ed25519 over already tagged signing input, lowercase hex. */
  sign(input: Buffer): string;
}

export const COLLECTOR_KEY_FILE = 'collector.key';

export async function createCollectorKey(opts: { serving: ServingIdentity | null; storeDir: string }): Promise<CollectorSigner> {
  const { serving } = opts;
  if (serving !== null) {
    const spki = createPublicKey(serving.privateKey).export({ format: 'der', type: 'spki' });
    return {
      keyId: keyIdOf(spki),
      publicKeySpki: spki,
      get chainPem() {
        return serving.chainPem;
      },
      sign: (input) => sign(null, input, serving.privateKey).toString('hex'),
    };
  }
  const path = join(opts.storeDir, COLLECTOR_KEY_FILE);
  const key = await keyFromFlag('--store', path, loadOrCreateSigningKey);
  return { keyId: key.keyId, publicKeySpki: key.publicKeySpki, chainPem: undefined, sign: (input) => key.sign(input) };
}
