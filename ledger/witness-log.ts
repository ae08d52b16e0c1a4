import { hash } from 'node:crypto';
import { keyIdOf, publicKeyFromSpki, verifySignature } from './chain.js';
import { leafHash } from './merkle.js';

/**
 * The collector's witness log: an append-only Merkle log (RFC 9162 §2.1, the tree of merkle.ts)
 * of everything the collector stores, and its signed tree heads. The one place its binary
 * encodings live, for the collector that writes it and every verifier of an exported bundle
 * (docs/BUNDLE.md).
 *
 * Each entry is one leaf; its leaf hash is SHA-256(0x00 || entry bytes). Entry bytes start with
 * the tag 0x0b and a kind byte:
 *
 *   link       0x0b 0x01 || batch (8 BE) || head (32) || key_id (16 ASCII hex, or 16 '-' for an unsigned link) || sidecar (UTF-8)
 *              a link of a sidecar's chain, verified and durably stored
 *   heartbeat  0x0b 0x02 || unix_ms (8 BE) || last_batch (8 BE) || head (32) || sig (64) || sidecar (UTF-8)
 *              a sidecar's signed heartbeat naming a head further on than any it named before and than
 *              the stored chain:
 *              the collector saw it sign that head (chain.ts heartbeatSigningInput, `sig` over it)
 *   prune      0x0b 0x03 || from_batch (8 BE) || to_batch (8 BE) || reason length (1) || reason (UTF-8) || sidecar (UTF-8)
 *              reserved: whole batches of a sidecar removed from the store (retention); their
 *              link entries stay in the log, so proofs for later links still verify
 *
 * A tree head is signed by the collector's key (Ed25519, key id as chain.ts) over
 *
 *   0x0c || tree_size (8 BE) || root (32) || unix_ms (8 BE)
 *
 * The tag keeps these signatures from ever being valid for a chain head (0x03) or anything else
 * the key signs. Readers ignore entry kinds they do not know (they can still check inclusion).
 */

export type WitnessEntry =
  | { kind: 'link'; sidecar: string; batch: number; head: string; key_id?: string }
  | { kind: 'heartbeat'; sidecar: string; unix_ms: number; last_batch: number; head: string; sig: string }
  | { kind: 'prune'; sidecar: string; from_batch: number; to_batch: number; reason: string };

/** A signed tree head of the witness log. */
export interface TreeHead {
  tree_size: number;
  /** Lowercase hex, 32 bytes: MTH of the first tree_size entries. */
  root: string;
  unix_ms: number;
  /** The collector key that signed it (collector-key.ts). */
  key_id: string;
  /** Ed25519 over treeHeadSigningInput, lowercase hex. */
  sig: string;
}

const ENTRY_TAG = 0x0b;
const TREE_HEAD_TAG = 0x0c;
const KIND_CODES = { link: 1, heartbeat: 2, prune: 3 } as const;
const UNSIGNED_KEY = '-'.repeat(16);
const TWO_32 = 2 ** 32;

function u64(value: number, what: string): Buffer {
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`${what} must be a non-negative whole number, not ${value}`);
  const buf = Buffer.allocUnsafe(8);
  buf.writeUInt32BE(Math.floor(value / TWO_32), 0);
  buf.writeUInt32BE(value % TWO_32, 4);
  return buf;
}

function hexBytes(value: string, bytes: number, what: string): Buffer {
  const buf = Buffer.from(value, 'hex');
  if (buf.length !== bytes || buf.toString('hex') !== value) throw new TypeError(`${what} is not ${bytes} bytes of lowercase hex`);
  return buf;
}

/** The bytes of one entry, exactly as its leaf hash covers them. Throws TypeError on a malformed field. */
export function encodeWitnessEntry(e: WitnessEntry): Buffer {
  const head = Buffer.from([ENTRY_TAG, KIND_CODES[e.kind]]);
  const sidecar = Buffer.from(e.sidecar, 'utf8');
  switch (e.kind) {
    case 'link': {
      const key = e.key_id ?? UNSIGNED_KEY;
      if (!/^[0-9a-f]{16}$/.test(key) && key !== UNSIGNED_KEY) throw new TypeError('key_id must be 16 lowercase hex digits');
      return Buffer.concat([head, u64(e.batch, 'batch'), hexBytes(e.head, 32, 'head'), Buffer.from(key, 'ascii'), sidecar]);
    }
    case 'heartbeat':
      return Buffer.concat([head, u64(e.unix_ms, 'unix_ms'), u64(e.last_batch, 'last_batch'), hexBytes(e.head, 32, 'head'), hexBytes(e.sig, 64, 'sig'), sidecar]);
    case 'prune': {
      const reason = Buffer.from(e.reason, 'utf8');
      if (reason.length > 255) throw new TypeError('a prune reason is at most 255 bytes');
      return Buffer.concat([head, u64(e.from_batch, 'from_batch'), u64(e.to_batch, 'to_batch'), Buffer.from([reason.length]), reason, sidecar]);
    }
    default:
      throw new TypeError(`unknown witness entry kind ${JSON.stringify((e as { kind: unknown }).kind)}`);
  }
}

/** The leaf hash of an entry (RFC 9162: SHA-256(0x00 || bytes)). */
export function witnessLeaf(e: WitnessEntry): Buffer {
  return leafHash(encodeWitnessEntry(e));
}

/** The bytes a tree head's signature covers. */
export function treeHeadSigningInput(th: Pick<TreeHead, 'tree_size' | 'root' | 'unix_ms'>): Buffer {
  return Buffer.concat([Buffer.from([TREE_HEAD_TAG]), u64(th.tree_size, 'tree_size'), hexBytes(th.root, 32, 'root'), u64(th.unix_ms, 'unix_ms')]);
}

/** The root of the empty log (RFC 9162: SHA-256 of ""). */
export const EMPTY_LOG_ROOT = hash('sha256', Buffer.alloc(0), 'hex');

/** Whether `th` is signed by the key whose DER SPKI is `spki` (and names that key). Never throws. */
export function verifyTreeHead(th: TreeHead, spki: Buffer): boolean {
  const key = publicKeyFromSpki(spki);
  if (key === null || keyIdOf(spki) !== th.key_id) return false;
  try {
    return verifySignature(treeHeadSigningInput(th), th.sig, key);
  } catch {
    return false;
  }
}
