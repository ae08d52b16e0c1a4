import { leafHash, nodeHash } from '../../../ledger/merkle.js';
import { encodeWitnessEntry, EMPTY_LOG_ROOT, verifyTreeHead } from '../../../ledger/witness-log.js';
import type { CollectorStores } from '../store/store-layout.js';
import { foldParts, perfectParts } from './log-tree.js';
import { linkEntry } from './witness-log.js';
import type { WitnessDbs } from './witness-dbs.js';

/**
 * `auditmesh verify STORE`'s check of the collector's witness log: every stored node recomputes
 * from the entries below it, every kept tree head is signed by a kept collector key over the root
 * its size folds to, and every stored link is the entry the log holds for it (a link stored after
 * the log's last entry of its sidecar is counted, not failed: the log follows the store).
 */
export interface WitnessReport {
  ok: boolean;
  entries: number;
  /** Of the entries, the prunings: whole batches the store removed (retention, the byte limit). */
  prunes: number;
  tree_heads: number;
  newest?: { tree_size: number; key_id: string; unix_ms: number };
  /** Stored links the log does not hold yet. */
  unlogged: number;
  failure?: string;
}

/** The kind byte of a prune entry (ledger/witness-log.ts). */
const PRUNE_KIND = 0x03;

export function verifyWitness(stores: CollectorStores, w: WitnessDbs): WitnessReport {
  const r: WitnessReport = { ok: false, entries: 0, prunes: 0, tree_heads: 0, unlogged: 0 };
  try {
    // Level 0 from the entries, each level above from the one below.
    let level: Buffer[] = [];
    for (const { key, value } of w.entries.getRange()) {
      if (key !== r.entries) throw new Error(`entry ${r.entries} is missing (the next is ${key})`);
      const leaf = leafHash(value);
      if (!w.nodes.get([0, r.entries])?.equals(leaf)) throw new Error(`entry ${r.entries} does not hash to its stored leaf: the entry or its node was altered`);
      level.push(leaf);
      if (value[1] === PRUNE_KIND) r.prunes++;
      r.entries++;
    }
    for (let l = 1; level.length > 1; l++) {
      const up: Buffer[] = [];
      for (let i = 0; i + 1 < level.length; i += 2) {
        const node = nodeHash(level[i], level[i + 1]);
        if (!w.nodes.get([l, i / 2])?.equals(node)) throw new Error(`node ${l}/${i / 2} of the log is not the hash of the two below it: it was altered`);
        up.push(node);
      }
      level = up;
    }
    for (const { value: th } of w.heads.getRange()) {
      const k = w.keys.get(th.key_id);
      if (k === undefined || !verifyTreeHead(th, Buffer.from(k.public_key, 'base64'))) throw new Error(`the tree head of size ${th.tree_size} is not signed by the collector key ${th.key_id} it names`);
      if (th.tree_size > r.entries) throw new Error(`the tree head of size ${th.tree_size} covers more than the ${r.entries} entries held: entries were removed`);
      const root = th.tree_size === 0 ? EMPTY_LOG_ROOT : foldParts(perfectParts(0, th.tree_size).map(([lv, i]) => Buffer.from(w.nodes.get([lv, i])!))).toString('hex');
      if (root !== th.root) throw new Error(`the log's first ${th.tree_size} entries no longer hash to the root the tree head of that size signed: the log was altered`);
      r.tree_heads++;
      r.newest = { tree_size: th.tree_size, key_id: th.key_id, unix_ms: th.unix_ms };
    }
    for (const { key, value: link } of stores.links.getRange()) {
      const index = w.links.get(key);
      if (index === undefined) {
        r.unlogged++;
        continue;
      }
      if (!w.entries.get(index)?.equals(encodeWitnessEntry(linkEntry(key[0], link)))) throw new Error(`sidecar ${key[0]} batch ${key[1]} is not the link the witness log holds for it (entry ${index}): the stored link was altered`);
    }
    r.ok = true;
  } catch (err) {
    r.failure = (err as Error).message;
  }
  return r;
}
