import type { KeyObject } from 'node:crypto';
import type { SigningKey } from './keys.js';
import { verifySignature } from './chain.js';
import type { BatchHeader, PrunedMark } from './journal-layout.js';

/**
 * The signed statements around a journal's keys (bytes in chain.ts's module comment): the
 * previous key endorsing the key of a new boot epoch, and the journal key signing the prune mark.
 */

const ENDORSEMENT_TAG = 0x07;
const PRUNE_MARK_TAG = 0x08;

function u64(value: number): Buffer {
  const buf = Buffer.alloc(8);
  buf.writeBigUInt64BE(BigInt(value));
  return buf;
}

/** `0x07 || prev_head (32) || epoch (4 BE) || new key's DER SPKI`: what the previous key signs. */
export function endorsementSigningInput(prevHead: string, epoch: number, spki: Uint8Array): Buffer {
  const e = Buffer.alloc(4);
  e.writeUInt32BE(epoch);
  return Buffer.concat([Buffer.from([ENDORSEMENT_TAG]), Buffer.from(prevHead, 'hex'), e, spki]);
}

/** The fields an endorsed epoch link carries besides its header: who endorsed it, and the signature. */
export function endorseEpoch(previous: SigningKey, prevHead: string, epoch: number, spki: Uint8Array): Pick<BatchHeader, 'endorsed_by' | 'endorsement'> {
  return { endorsed_by: previous.keyId, endorsement: previous.sign(endorsementSigningInput(prevHead, epoch, spki)) };
}

/** true if `h` (an epoch link following `prevHead`) carries a valid endorsement by `previous`. */
export function endorsedBy(h: BatchHeader, prevHead: string, spki: Uint8Array, previousKeyId: string, previous: KeyObject): boolean {
  if (h.endorsed_by !== previousKeyId || typeof h.endorsement !== 'string') return false;
  return verifySignature(endorsementSigningInput(prevHead, h.epoch, spki), h.endorsement, previous);
}

/**
 * `0x08 || head (32) || last_batch (8 BE) || last_seq (8 BE) || sealed_unix_ms (8 BE) || epoch_key (16 ASCII hex)`:
 * what the journal key signs on a prune mark.
 */
export function pruneMarkSigningInput(mark: PrunedMark): Buffer {
  if (!/^[0-9a-f]{16}$/.test(mark.epoch_key ?? '')) throw new TypeError('prune mark epoch_key must be 16 lowercase hex digits');
  return Buffer.concat([Buffer.from([PRUNE_MARK_TAG]), Buffer.from(mark.head, 'hex'), u64(mark.last_batch), u64(mark.last_seq), u64(mark.sealed_unix_ms), Buffer.from(mark.epoch_key!, 'ascii')]);
}

/** The mark with `key` and `sig`: signed by the journal's current key. */
export function signPruneMark(mark: PrunedMark, signer: SigningKey): PrunedMark {
  const { key: _key, sig: _sig, ...fields } = mark;
  return { ...fields, key: signer.keyId, sig: signer.sign(pruneMarkSigningInput(fields)) };
}

/** true if the mark's signature verifies with `key` (the key its `key` field names). */
export function pruneMarkSigned(mark: PrunedMark, key: KeyObject): boolean {
  try {
    return typeof mark.sig === 'string' && verifySignature(pruneMarkSigningInput(mark), mark.sig, key);
  } catch {
    return false;
  }
}

/**
 * The key that endorses this boot's epoch: `previous` when the chain so far ends signed by it and
 * the journal now signs with another key. A key change nobody can endorse is logged: `verify`
 * will fail at the epoch link unless the mesh CA certifies the new key.
 */
export function endorserFor(lastLink: BatchHeader | undefined, signer: SigningKey, previous: SigningKey | undefined, log?: (line: Record<string, unknown>) => void): SigningKey | undefined {
  const chainKey = lastLink?.key;
  if (chainKey === undefined || chainKey === signer.keyId) return undefined;
  if (previous?.keyId === chainKey) return previous;
  log?.({ level: 'warn', msg: 'journal key changed without the previous key to endorse it: verify fails at this epoch unless the mesh CA certifies the new key', previous_key: chainKey, key: signer.keyId, previous_key_held: previous?.keyId ?? null });
  return undefined;
}

/** The key of the boot epoch the last of `pruned` links is in: the newest keyed link among them, else the earlier mark's. */
export function epochKeyThrough(pruned: readonly BatchHeader[], earlier: PrunedMark | undefined): string | undefined {
  for (let i = pruned.length - 1; i >= 0; i--) if (pruned[i].key !== undefined) return pruned[i].key;
  return earlier?.epoch_key;
}
