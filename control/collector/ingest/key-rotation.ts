import { publicKeyFromSpki } from '../../../ledger/chain.js';
import { fail, type KeyChange, type ResolvedKey } from '../../../ledger/link-verifier.js';
import type { SidecarState } from '../collector-store.js';
import type { SidecarChain } from './sidecar-chain.js';

/**
 * A sidecar's key changing inside one chain (issue 24): its Hello may present another key than
 * the pinned one, but the chain takes it only through an epoch link the previous key endorsed
 * (LinkVerifier checks the endorsement, ledger/key-endorsement.ts). Then the pin moves to
 * the new key and the old one is kept in `previous_keys`, so `auditmesh verify STORE` checks the
 * links it signed. A certificate-endorsed change would be accepted here too once the stream's
 * client certificate (mTLS) certifies the new key: LinkVerifierOptions.certified is the hook.
 */

/** The endorsed change verified: the chain is pinned to the new key from here on. */
export function repin(chain: SidecarChain, change: KeyChange): void {
  const next = chain.presented;
  if (next === undefined || next.keyId !== change.to) return fail({ code: 'key-mismatch', batch: change.batch, problem: `epoch link ${change.batch} changes the key to ${change.to}, which this stream's Hello did not present` });
  const { key_id, public_key } = chain.state;
  chain.state = { ...chain.state, key_id: next.keyId, public_key: next.spki.toString('base64'), previous_keys: [...(chain.state.previous_keys ?? []), { key_id, public_key }] };
  chain.key = next.key;
  chain.spki = next.spki;
}

/** A resent batch differs from the stored one while the stream presents another key: a new journal, not a rotation. */
export function keyChangeFork(chain: SidecarChain, batch: number): void {
  const presented = chain.presented?.keyId;
  if (presented === undefined || presented === chain.state.key_id) return;
  fail({ code: 'key-mismatch', batch, problem: `sidecar ${chain.state.id} is pinned to key ${chain.state.key_id}; this stream presents key ${presented} and a chain that does not continue the stored one (batch ${batch} differs): a key change must be endorsed by the previous key in the same chain` });
}

/** A key the chain was pinned to before (it signed links before an endorsed change), or undefined. */
export function previousKey(state: Pick<SidecarState, 'previous_keys'>, keyId: string): ResolvedKey | undefined {
  const entry = state.previous_keys?.find((k) => k.key_id === keyId);
  if (entry === undefined) return undefined;
  const spki = Buffer.from(entry.public_key, 'base64');
  const key = publicKeyFromSpki(spki);
  return key === null ? undefined : { spki, key };
}
