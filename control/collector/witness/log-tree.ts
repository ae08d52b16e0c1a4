import { hash } from 'node:crypto';
import { nodeHash, type SubtreeHash } from '../../../ledger/merkle.js';
import type { WitnessDbs } from './witness-dbs.js';

/**
 * The witness log's tree read from its perfect subtrees (witness-dbs.ts `witness_nodes`): any
 * range a proof asks for is the fold, right to left, of the aligned perfect subtrees it splits
 * into, read from the store: O(log n) reads, whatever the size of the log.
 */

/** The aligned perfect subtrees [lo, hi) splits into, left to right, as [level, index]. */
export function perfectParts(lo: number, hi: number): Array<[number, number]> {
  const parts: Array<[number, number]> = [];
  for (let i = lo; i < hi; ) {
    let size = 1;
    while (i % (size * 2) === 0 && i + size * 2 <= hi) size *= 2;
    parts.push([Math.log2(size), i / size]);
    i += size;
  }
  return parts;
}

/** Folds perfect subtree hashes, right to left, into the RFC 9162 tree hash of their range. */
export function foldParts(hashes: readonly Buffer[]): Buffer {
  if (hashes.length === 0) return hash('sha256', Buffer.alloc(0), 'buffer');
  let acc = hashes[hashes.length - 1];
  for (let j = hashes.length - 2; j >= 0; j--) acc = nodeHash(hashes[j], acc);
  return acc;
}

/** MTH(D[lo:hi]) of the stored log; throws if a node it needs is not stored (a range past the log). */
export function storedSubtree(dbs: WitnessDbs): SubtreeHash {
  return (lo, hi) =>
    foldParts(
      perfectParts(lo, hi).map(([level, i]) => {
        const node = dbs.nodes.get([level, i]);
        if (node === undefined) throw new Error(`the witness log has no node ${level}/${i}: the range ${lo}-${hi} is not stored`);
        return Buffer.from(node);
      }),
    );
}
