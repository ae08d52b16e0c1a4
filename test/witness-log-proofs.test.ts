import test from 'ava';
import { join } from 'node:path';
import { open } from 'lmdb';
import { consistencyPathOf, inclusionPathOf, inclusionProof, leafHash, merkleRoot, subtreeOfLeaves, verifyConsistency, verifyInclusion } from '../ledger/merkle.js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { witnessLeaf, type WitnessEntry } from '../ledger/witness-log.js';
import { WitnessLog } from '../control/collector/witness/witness-log.js';
import { tempDir } from './helpers/sidecar.js';

// The witness log's proofs (RFC 9162 §2.1.3, §2.1.4) over its store of perfect subtrees, checked
// against the in-memory tree of merkle.ts on every small size, in a real LMDB file.

const leaves = (n: number): Buffer[] => Array.from({ length: n }, (_, i) => leafHash(Buffer.from(`leaf ${i}`)));

test('consistency proofs between every pair of tree sizes up to 33 verify, and fail for another root or a changed node', (t) => {
  const all = leaves(33);
  const subtree = subtreeOfLeaves(all);
  // Every pair checked, the failures collected: the test names each that does not hold.
  const wrong: string[] = [];
  let checked = 0;
  for (let n = 1; n <= all.length; n++) {
    const second = merkleRoot(all.slice(0, n));
    for (let m = 1; m <= n; m++) {
      const first = merkleRoot(all.slice(0, m));
      const proof = consistencyPathOf(subtree, m, n);
      checked++;
      if (!verifyConsistency(m, n, proof, first, second)) wrong.push(`${m} -> ${n}`);
      if (m < n && verifyConsistency(m, n, proof, leafHash(Buffer.from('other')), second)) wrong.push(`${m} -> ${n} with another first root`);
      if (proof.length > 0 && verifyConsistency(m, n, [leafHash(Buffer.from('x')), ...proof.slice(1)], first, second)) wrong.push(`${m} -> ${n} with a changed node`);
    }
    for (let i = 0; i < n; i++) if (!inclusionPathOf(subtree, i, n).every((p, j) => p.equals(inclusionProof(all.slice(0, n), i)[j]))) wrong.push(`inclusion ${i} of ${n}`);
  }
  t.is(checked, (33 * 34) / 2, 'every pair of sizes was checked');
  t.deepEqual(wrong, []);
});

test('the stored log answers every subtree from its perfect nodes, survives reopening, and proves its entries', async (t) => {
  const dir = await tempDir(t);
  const env = open({ path: join(dir, 'log'), maxDbs: 16 });
  const key = ephemeralSigningKey();
  const signer = { keyId: key.keyId, publicKeySpki: key.publicKeySpki, chainPem: undefined, sign: (b: Buffer) => key.sign(b) };
  const log = new WitnessLog(env, signer);
  const entries: WitnessEntry[] = Array.from({ length: 45 }, (_, i) => ({ kind: 'link', sidecar: `pod-${i % 3}`, batch: Math.floor(i / 3) + 1, head: i.toString(16).padStart(64, '0') }));
  // Appended in uneven groups, some concurrently: one group commit each time the writer is free.
  await Promise.all([log.append({ entries: entries.slice(0, 5) }), log.append({ entries: entries.slice(5, 6) })]);
  await log.append({ entries: entries.slice(6, 30) });
  await Promise.all([log.append({ entries: entries.slice(30, 31) }), log.append({ entries: entries.slice(31) })]);
  const all = entries.map(witnessLeaf);
  t.is(log.size, 45);
  t.true(log.root().equals(merkleRoot(all)));
  const th = await log.checkpoint();
  for (let i = 0; i < all.length; i++) t.true(verifyInclusion(all[i], i, 45, inclusionPathOf(log.subtree, i, 45), Buffer.from(th.root, 'hex')), `entry ${i}`);
  t.is(log.dbs.links.get(['pod-1', 3]), 7);
  await env.close();
  const again = new WitnessLog(open({ path: join(dir, 'log'), maxDbs: 16 }), signer);
  t.teardown(() => again.dbs.env.close());
  t.is(again.size, 45);
  t.true(again.root().equals(merkleRoot(all)));
  t.deepEqual(again.latest, th);
  await again.append({ entries: [{ kind: 'heartbeat', sidecar: 'pod-0', unix_ms: 1, last_batch: 20, head: 'aa'.repeat(32), sig: 'bb'.repeat(64) }] });
  t.true(again.root().equals(merkleRoot([...all, witnessLeaf({ kind: 'heartbeat', sidecar: 'pod-0', unix_ms: 1, last_batch: 20, head: 'aa'.repeat(32), sig: 'bb'.repeat(64) })])));
  for (let m = 1; m <= 45; m++) {
    t.true(again.root(m).equals(merkleRoot(all.slice(0, m))), `the stored root of ${m}`);
    t.true(verifyConsistency(m, 46, consistencyPathOf(again.subtree, m, 46), again.root(m), again.root()), `${m} -> 46`);
  }
});
