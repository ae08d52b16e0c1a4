import type { X509Certificate } from 'node:crypto';
import { publicKeyFromSpki } from '../../../ledger/chain.js';
import { caEndorsedIdentity } from '../../../ledger/certified-key.js';
import { fail, type KeyChange, type ResolvedKey } from '../../../ledger/link-verifier.js';
import type { SidecarState } from '../collector-store.js';
import type { SidecarChain } from './sidecar-chain.js';

/**
 * A sidecar's key changing inside one chain (issue 24): its Hello may present another key than
 * the pinned one, but the chain takes it only through an epoch link that is endorsed, either by
 * the previous key (its signature on the link, ledger/key-endorsement.ts) or, over mTLS, by the
 * mesh CA: the stream's client certificate certifies exactly the new key and names the SPIFFE ID
 * the chain's previous key was certified as. LinkVerifier checks which; then the pin moves to the
 * new key and the old one is kept in `previous_keys` with its certificate, so `auditmesh verify
 * STORE` (with --ca-file for a CA-endorsed change) checks the links it signed.
 */

/** The endorsed change verified: the chain is pinned to the new key from here on, with the new key's certificate if its stream presented one. */
export function repin(chain: SidecarChain, change: KeyChange): void {
  const next = chain.presented;
  if (next === undefined || next.keyId !== change.to) return fail({ code: 'key-mismatch', batch: change.batch, problem: `epoch link ${change.batch} changes the key to ${change.to}, which this stream's Hello did not present` });
  const { key_id, public_key, certificate } = chain.state;
  const before = { key_id, public_key, ...(certificate === undefined ? {} : { certificate }) };
  const { certificate: _old, ...rest } = chain.state;
  const certified = next.certificate?.spkiMatches === true ? { certificate: next.certificate.der } : {};
  chain.state = { ...rest, key_id: next.keyId, public_key: next.spki.toString('base64'), ...certified, previous_keys: [...(chain.state.previous_keys ?? []), before] };
  chain.key = next.key;
  chain.spki = next.spki;
}

/**
 * The stream's client certificate as endorsement of a key change (LinkVerifier's `certified`):
 * the SPIFFE ID when the mesh CA certifies the new key for the identity the chain's pinned key was
 * certified as; undefined without mTLS (only the previous key can endorse then); fail() naming
 * why when the certificate does not endorse the change.
 */
export function streamCertified(chain: SidecarChain, ca: readonly X509Certificate[] | null, change: Omit<KeyChange, 'endorsed' | 'identity'>, spki: Buffer): string | undefined {
  const presented = chain.presented?.certificate;
  if (ca === null || presented === undefined) return undefined;
  return caEndorsedIdentity(change, ca, { certificate: presented.der, spki }, { certificate: chain.state.certificate, spki: chain.spki });
}

/**
 * The pinned key's certificate, kept once: the first client certificate a stream presented for
 * exactly the pinned key. A later CA-endorsed key change must name the same identity.
 */
export function keepCertificate(chain: SidecarChain): void {
  const presented = chain.presented;
  if (chain.state.certificate !== undefined || presented?.certificate?.spkiMatches !== true || presented.keyId !== chain.state.key_id) return;
  chain.state = { ...chain.state, certificate: presented.certificate.der };
}

/** A resent batch differs from the stored one while the stream presents another key: a new journal, not a rotation. */
export function keyChangeFork(chain: SidecarChain, batch: number): void {
  const presented = chain.presented?.keyId;
  if (presented === undefined || presented === chain.state.key_id) return;
  fail({ code: 'key-mismatch', batch, problem: `sidecar ${chain.state.id} is pinned to key ${chain.state.key_id}; this stream presents key ${presented} and a chain that does not continue the stored one (batch ${batch} differs): a key change must be endorsed by the previous key in the same chain, or over mTLS by a mesh CA certificate of the new key for the chain's identity` });
}

/** A key the chain was pinned to before (it signed links before an endorsed change), or undefined. */
export function previousKey(state: Pick<SidecarState, 'previous_keys'>, keyId: string): ResolvedKey | undefined {
  const entry = state.previous_keys?.find((k) => k.key_id === keyId);
  if (entry === undefined) return undefined;
  const spki = Buffer.from(entry.public_key, 'base64');
  const key = publicKeyFromSpki(spki);
  return key === null ? undefined : { spki, key };
}

/** The stored certificate of a key of the chain (pinned or previous), if any. */
export function certificateOf(state: Pick<SidecarState, 'key_id' | 'certificate' | 'previous_keys'>, keyId: string): string | undefined {
  return keyId === state.key_id ? state.certificate : state.previous_keys?.find((k) => k.key_id === keyId)?.certificate;
}
