import { hash } from 'node:crypto';

/**
 * Merkle tree hashing of RFC 6962 §2.1 / RFC 9162 §2.1, shared by the sealing worker, the
 * journal and the offline verifier. Pure functions over SHA-256.
 *
 * Leaves and interior nodes get different one-byte prefixes so that a leaf can never be passed
 * off as an interior node (second-preimage resistance, RFC 9162 §2.1.1).
 */

const LEAF_PREFIX = Buffer.from([0x00]);
const NODE_PREFIX = Buffer.from([0x01]);

/**
 * SHA-256 as a 32-character latin1 string (one character per byte): crypto.hash returns a string
 * much faster than a Buffer (bench/README.md, "Figures behind the code"), so the tree is computed over these strings and only what
 * leaves this module becomes a Buffer.
 */
// 'binary' is Node's name for latin1 among the digest encodings.
const digest = (input: Uint8Array): string => hash('sha256', input, 'binary');
const toBuffer = (d: string): Buffer => Buffer.from(d, 'latin1');
const toDigest = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1');

/** SHA-256(0x00 || bytes): the hash of one record's canonical bytes. */
export function leafHash(bytes: Uint8Array): Buffer {
  return toBuffer(digest(Buffer.concat([LEAF_PREFIX, bytes])));
}

/**
 * leafHash of buf(slot, end) without copying it, as a digest string for merkleRootOfDigests:
 * writes the 0x00 prefix into buf[slot], a spare byte the caller keeps before each record (the
 * sealing worker's separators, the length before a record in a received message), and hashes in place.
 */
export function leafDigestAt(buf: Buffer, slot: number, end: number): string {
  buf[slot] = LEAF_PREFIX[0];
  return digest(buf.subarray(slot, end));
}

// One scratch buffer per thread (module instance) for node inputs: no allocation per node.
const nodeInput = Buffer.alloc(65);
nodeInput[0] = NODE_PREFIX[0];

/** SHA-256(0x01 || left || right) over digests (latin1 strings). */
function nodeDigest(left: string, right: string): string {
  if (left.length !== 32 || right.length !== 32) return digest(Buffer.concat([NODE_PREFIX, Buffer.from(left, 'latin1'), Buffer.from(right, 'latin1')]));
  nodeInput.write(left, 1, 'latin1');
  nodeInput.write(right, 33, 'latin1');
  return digest(nodeInput);
}

/** SHA-256(0x01 || left || right): an interior node. */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return toBuffer(nodeDigest(toDigest(left), toDigest(right)));
}

/** The largest power of two strictly below n (n >= 2): the RFC's split point. */
function splitPoint(n: number): number {
  let k = 1;
  while (k * 2 < n) k *= 2;
  return k;
}

/** MTH over leaves[lo, hi), by index range so no sub-array is copied. */
function subtreeDigest(leaves: readonly string[], lo: number, hi: number): string {
  const n = hi - lo;
  if (n === 1) return leaves[lo];
  const k = splitPoint(n);
  return nodeDigest(subtreeDigest(leaves, lo, lo + k), subtreeDigest(leaves, lo + k, hi));
}

/**
 * The Merkle tree hash (MTH) over a list of leaf hashes (not record bytes: hash each record
 * with leafHash first). The empty tree's hash is SHA-256 of the empty string, as in the RFC.
 */
export function merkleRoot(leaves: readonly Uint8Array[]): Buffer {
  return merkleRootOfDigests(leaves.map(toDigest));
}

/** merkleRoot over leaf hashes given as digest strings (leafDigestAt). */
export function merkleRootOfDigests(leaves: readonly string[]): Buffer {
  if (leaves.length === 0) return hash('sha256', Buffer.alloc(0), 'buffer');
  return toBuffer(subtreeDigest(leaves, 0, leaves.length));
}

/** PATH(m, D[lo:hi]) of RFC 9162 §2.1.3.1, appended to `out` from the leaf upwards. */
function auditPath(leaves: readonly string[], m: number, lo: number, hi: number, out: Buffer[]): void {
  const n = hi - lo;
  if (n <= 1) return;
  const k = splitPoint(n);
  if (m < k) {
    auditPath(leaves, m, lo, lo + k, out);
    out.push(toBuffer(subtreeDigest(leaves, lo + k, hi)));
  } else {
    auditPath(leaves, m - k, lo + k, hi, out);
    out.push(toBuffer(subtreeDigest(leaves, lo, lo + k)));
  }
}

/** The inclusion proof (audit path) of leaf `index` in the tree over `leaves` (leaf hashes). */
export function inclusionProof(leaves: readonly Uint8Array[], index: number): Buffer[] {
  if (!Number.isInteger(index) || index < 0 || index >= leaves.length) {
    throw new RangeError(`leaf index ${index} outside a tree of ${leaves.length}`);
  }
  const out: Buffer[] = [];
  auditPath(leaves.map(toDigest), index, 0, leaves.length, out);
  return out;
}

/**
 * Verifies that `leaf` (a leaf hash) sits at `index` in a tree of `treeSize` leaves with root
 * `root`, following RFC 9162 §2.1.3.2 step by step. Returns false, never throws, on bad input.
 */
export function verifyInclusion(
  leaf: Uint8Array,
  index: number,
  treeSize: number,
  proof: readonly Uint8Array[],
  root: Uint8Array,
): boolean {
  if (!Number.isInteger(index) || !Number.isInteger(treeSize) || index < 0 || index >= treeSize) return false;
  // Plain division, not bit shifts: shifts would wrap above 2^31 leaves.
  let fn = index;
  let sn = treeSize - 1;
  let r: Uint8Array = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      r = nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      r = nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && Buffer.from(r).equals(root);
}

/**
 * MTH(D[lo:hi]) of a tree kept elsewhere (the collector's witness log in LMDB): the proof
 * builders below ask only for ranges the RFC's recursion visits, whose `lo` is a multiple of the
 * next power of two at or above `hi - lo`, so a store of perfect subtrees can answer each one.
 */
export type SubtreeHash = (lo: number, hi: number) => Buffer;

/** PATH(m, D[0:n]) of RFC 9162 §2.1.3.1 over `subtree`: the inclusion proof of leaf m in a tree of n. */
export function inclusionPathOf(subtree: SubtreeHash, m: number, n: number): Buffer[] {
  if (!Number.isInteger(m) || m < 0 || m >= n) throw new RangeError(`leaf index ${m} outside a tree of ${n}`);
  const out: Buffer[] = [];
  const walk = (m: number, lo: number, hi: number): void => {
    if (hi - lo <= 1) return;
    const k = splitPoint(hi - lo);
    if (m < k) {
      walk(m, lo, lo + k);
      out.push(subtree(lo + k, hi));
    } else {
      walk(m - k, lo + k, hi);
      out.push(subtree(lo, lo + k));
    }
  };
  walk(m, 0, n);
  return out;
}

/** PROOF(m, D[0:n]) of RFC 9162 §2.1.4.1 over `subtree`: that the tree of m leaves is a prefix of the tree of n. Empty when m is n. */
export function consistencyPathOf(subtree: SubtreeHash, m: number, n: number): Buffer[] {
  if (!Number.isInteger(m) || !Number.isInteger(n) || m < 1 || m > n) throw new RangeError(`no consistency proof from a tree of ${m} to one of ${n}`);
  const out: Buffer[] = [];
  const sub = (m: number, lo: number, hi: number, b: boolean): void => {
    if (m === hi - lo) {
      if (!b) out.push(subtree(lo, hi));
      return;
    }
    const k = splitPoint(hi - lo);
    if (m <= k) {
      sub(m, lo, lo + k, b);
      out.push(subtree(lo + k, hi));
    } else {
      sub(m - k, lo + k, hi, false);
      out.push(subtree(lo, lo + k));
    }
  };
  sub(m, 0, n, true);
  return out;
}

/** The tree hash of an in-memory list of leaf hashes as a SubtreeHash (tests, small trees). */
export function subtreeOfLeaves(leaves: readonly Uint8Array[]): SubtreeHash {
  const digests = leaves.map(toDigest);
  return (lo, hi) => toBuffer(subtreeDigest(digests, lo, hi));
}

/**
 * Verifies a consistency proof between a tree of `first` leaves with root `firstRoot` and one of
 * `second` leaves with root `secondRoot`, following RFC 9162 §2.1.4.2 step by step. Returns false,
 * never throws, on bad input.
 */
export function verifyConsistency(first: number, second: number, proof: readonly Uint8Array[], firstRoot: Uint8Array, secondRoot: Uint8Array): boolean {
  if (!Number.isInteger(first) || !Number.isInteger(second) || first < 1 || first > second) return false;
  if (first === second) return proof.length === 0 && Buffer.from(firstRoot).equals(secondRoot);
  let path = proof;
  // A first tree that is a perfect subtree is its own first node.
  if (Number.isInteger(Math.log2(first))) path = [firstRoot, ...proof];
  if (path.length === 0) return false;
  let fn = first - 1;
  let sn = second - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr: Uint8Array = path[0];
  let sr: Uint8Array = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (fn % 2 === 1 || fn === sn) {
      fr = nodeHash(c, fr);
      sr = nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn = Math.floor(fn / 2);
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 && Buffer.from(fr).equals(firstRoot) && Buffer.from(sr).equals(secondRoot);
}
