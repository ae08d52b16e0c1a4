import test from 'ava';
import { createHash } from 'node:crypto';
import { inclusionProof, leafHash, merkleRoot, nodeHash, verifyInclusion } from '../ledger/merkle.js';

const sha256 = (...parts: Uint8Array[]): Buffer => {
  const h = createHash('sha256');
  for (const part of parts) h.update(part);
  return h.digest();
};
const leavesOf = (n: number): Buffer[] => Array.from({ length: n }, (_, i) => leafHash(Buffer.from(`{"i":${i}}`)));

test('hashes leaves and nodes with the RFC 6962 domain-separation prefixes', (t) => {
  const data = Buffer.from('{"a":1}');
  t.deepEqual(leafHash(data), sha256(Buffer.from([0]), data));
  const [a, b] = leavesOf(2);
  t.deepEqual(nodeHash(a, b), sha256(Buffer.from([1]), a, b));
  t.deepEqual(merkleRoot([]), sha256());
  t.deepEqual(merkleRoot([a]), a);
});

test('splits an unbalanced tree at the largest power of two below its size', (t) => {
  const [l0, l1, l2, l3, l4] = leavesOf(5);
  // RFC 9162 §2.1.1: MTH(D[5]) = H(MTH(D[0:4]), MTH(D[4:5])), not a left-leaning pairing.
  t.deepEqual(merkleRoot([l0, l1, l2, l3, l4]), nodeHash(nodeHash(nodeHash(l0, l1), nodeHash(l2, l3)), l4));
  t.deepEqual(merkleRoot([l0, l1, l2]), nodeHash(nodeHash(l0, l1), l2));
});

test('inclusion proofs verify for every leaf of trees of many sizes', (t) => {
  for (const size of [1, 2, 3, 4, 5, 7, 8, 9, 31, 100, 256]) {
    const leaves = leavesOf(size);
    const root = merkleRoot(leaves);
    const failed = leaves.map((leaf, i) => verifyInclusion(leaf, i, size, inclusionProof(leaves, i), root)).flatMap((ok, i) => (ok ? [] : [i]));
    t.deepEqual(failed, [], `leaves of a ${size}-leaf tree whose proof did not verify`);
  }
});

test('an inclusion proof fails for a tampered leaf, a wrong index, a wrong size or a cut proof', (t) => {
  const leaves = leavesOf(13);
  const root = merkleRoot(leaves);
  const proof = inclusionProof(leaves, 6);
  t.true(verifyInclusion(leaves[6], 6, 13, proof, root));
  t.false(verifyInclusion(leafHash(Buffer.from('{"i":6,"tampered":true}')), 6, 13, proof, root));
  t.false(verifyInclusion(leaves[6], 7, 13, proof, root));
  // A size whose tree has a different shape; 14 would not do: leaf 6's path is the same there.
  t.false(verifyInclusion(leaves[6], 6, 8, proof, root));
  t.false(verifyInclusion(leaves[6], 6, 13, proof.slice(0, -1), root));
  t.false(verifyInclusion(leaves[6], 13, 13, proof, root));
  t.throws(() => inclusionProof(leaves, 13), { instanceOf: RangeError });
});
