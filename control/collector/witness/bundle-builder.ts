import { chainKeyOf } from '../store/chain-key.js';
import { consistencyPathOf, inclusionPathOf, inclusionProof, leafHash } from '../../../ledger/merkle.js';
import { BUNDLE_FORMAT, type BundleLink, type BundleRecord, type BundleSidecar, type EvidenceBundle } from '../../../ledger/evidence-bundle.js';
import type { TreeHead } from '../../../ledger/witness-log.js';
import { BatchBlob } from '../store/batch-blob.js';
import type { CollectorStores } from '../store/store-layout.js';
import type { SidecarState, StoredLink } from '../collector-store.js';
import { storedSubtree } from './log-tree.js';
import type { WitnessDbs } from './witness-dbs.js';

/**
 * Proofs out of a collector store (`GET /v1/proof`, `auditmesh export`, `auditmesh verify STORE
 * --record`): for each record, its bytes and inclusion path in its batch, the links from its
 * batch to the signed head that seals it, that head's entry in the witness log with its path to a
 * signed tree head (the first that covered it), each sidecar's latest signed head likewise, the
 * consistency paths from every tree head used to the newest, and the keys and certifications
 * that sign them: everything a verifier needs (ledger/evidence-bundle.ts), nothing else. A
 * record costs O(log n) reads of the store, whatever its size.
 */

/** Why a proof cannot be made: `status` is what the HTTP API answers. */
export class ProofError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    message: string,
  ) {
    super(message);
  }
}

/** A record's signed head is logged, but no signed tree head covers it yet. */
export class NotWitnessedYet extends ProofError {
  constructor(message: string) {
    super(409, message);
  }
}

export interface RecordRef {
  sidecar: string;
  seq: number;
}

/** `SIDECAR_ID:SEQ` (the id may itself hold colons: the last one splits). */
export function parseRecordRef(text: string): RecordRef {
  const at = text.lastIndexOf(':');
  const seq = Number(text.slice(at + 1));
  if (at < 1 || !/^\d+$/.test(text.slice(at + 1)) || !Number.isSafeInteger(seq) || seq < 1) throw new ProofError(400, `record: expected SIDECAR_ID:SEQ (a sequence number from 1), got ${JSON.stringify(text)}`);
  return { sidecar: text.slice(0, at), seq };
}

export interface ProofSource {
  stores: CollectorStores;
  witness: WitnessDbs;
  /** The newest signed tree head: every proof leads to it. */
  latest: TreeHead | undefined;
  /** The mesh CA certificate (PEM), when the collector has one. */
  caPem?: string;
}

const MAX = Number.MAX_SAFE_INTEGER;

/** One bundle proving every record of `refs`, against `src.latest`. Throws ProofError naming the first it cannot prove. */
export function buildBundle(src: ProofSource, refs: readonly RecordRef[], source?: string): EvidenceBundle {
  const latest = src.latest;
  if (latest === undefined) throw new NotWitnessedYet('the collector has signed no tree head of its witness log yet');
  const subtree = storedSubtree(src.witness);
  const sidecars = new Map<string, { state: SidecarState; links: Map<number, StoredLink>; witness: Map<number, { index: number; tree_size: number }> }>();
  const heads = new Map<number, TreeHead>([[latest.tree_size, latest]]);
  const records: BundleRecord[] = [];
  // Records of one batch are usually asked for together: its value is read and decompressed once.
  let last: { key: string; blob: BatchBlob; leaves: Buffer[] } | undefined;

  /** The witness entry of a signed link, at the first tree head that covered it. */
  const witnessOf = (s: NonNullable<ReturnType<typeof sidecars.get>>, batch: number): void => {
    if (s.witness.has(batch)) return;
    const index = src.witness.links.get([chainKeyOf(s.state), batch]);
    if (index === undefined || index >= latest.tree_size) throw new NotWitnessedYet(`batch ${batch} of sidecar ${chainKeyOf(s.state)} is not yet in a signed tree head of the collector's log`);
    const th = Array.from(src.witness.heads.getRange({ start: index + 1, limit: 1 }), ({ value }) => value)[0] ?? latest;
    const at = th.tree_size <= latest.tree_size ? th : latest;
    heads.set(at.tree_size, at);
    s.witness.set(batch, { index, tree_size: at.tree_size });
  };

  for (const ref of refs) {
    let s = sidecars.get(ref.sidecar);
    if (s === undefined) {
      const state = src.stores.sidecars.get(ref.sidecar);
      if (state === undefined) throw new ProofError(404, `no sidecar ${JSON.stringify(ref.sidecar)} in this store`);
      s = { state, links: new Map(), witness: new Map() };
      sidecars.set(ref.sidecar, s);
      // The sidecar's latest signed head the tree head covers, with its own entry.
      const newest = latestWitnessed(src, state, latest.tree_size);
      if (newest !== undefined) {
        s.links.set(newest.batch, newest);
        witnessOf(s, newest.batch);
      }
    }
    const link = recordsLinkOf(src.stores, s.state, ref.seq);
    const key = `${ref.sidecar}\u0000${link.batch}`;
    if (last?.key !== key) {
      const blob = new BatchBlob(src.stores.batches.get([ref.sidecar, link.batch])!);
      const leaves = link.leaves !== undefined && link.leaves.length === link.count * 32 ? Array.from({ length: link.count }, (_, j) => link.leaves!.subarray(j * 32, j * 32 + 32)) : blob.all().map((b) => leafHash(b));
      last = { key, blob, leaves };
    }
    const { blob, leaves } = last;
    const i = ref.seq - link.first_seq;
    records.push({ sidecar: ref.sidecar, seq: ref.seq, batch: link.batch, index: i, bytes: Buffer.from(blob.bytes(i)).toString('base64'), path: inclusionProof(leaves, i).map((p) => p.toString('hex')) });
    // The links from its batch to the signed head that seals it.
    let l: StoredLink | undefined = link;
    for (let b = link.batch; ; l = src.stores.links.get([ref.sidecar, ++b])) {
      if (l === undefined) throw new ProofError(404, `record ${ref.sidecar}:${ref.seq}: no signed head follows batch ${link.batch} in this store`);
      s.links.set(b, l);
      if (l.sig !== undefined) break;
    }
    witnessOf(s, l.batch);
  }

  const sizes = [...heads.keys()].sort((a, b) => a - b);
  const consistency = sizes.slice(0, -1).map((from) => ({ from_size: from, to_size: latest.tree_size, path: consistencyPathOf(subtree, from, latest.tree_size).map((p) => p.toString('hex')) }));
  const keyIds = new Set(sizes.map((n) => heads.get(n)!.key_id));
  return {
    format: BUNDLE_FORMAT,
    created_unix_ms: Date.now(),
    ...(source === undefined ? {} : { source }),
    ...(src.caPem === undefined ? {} : { ca_pem: src.caPem }),
    collector_keys: [...keyIds].map((key_id) => {
      const k = src.witness.keys.get(key_id);
      if (k === undefined) throw new ProofError(404, `the collector key ${key_id} that signed a tree head is not in the store`);
      return { key_id, public_key: k.public_key, ...(k.chain_pem === undefined ? {} : { chain_pem: k.chain_pem }) };
    }),
    tree_heads: sizes.map((n) => heads.get(n)!),
    consistency,
    sidecars: [...sidecars.values()].map(({ state, links, witness }) => bundleSidecar(src, state, links, witness, subtree)),
    records,
  };
}

function bundleSidecar(src: ProofSource, state: SidecarState, links: Map<number, StoredLink>, witness: Map<number, { index: number; tree_size: number }>, subtree: ReturnType<typeof storedSubtree>): BundleSidecar {
  const batches = [...links.keys()].sort((a, b) => a - b);
  const keys = new Map([[state.key_id, state.public_key], ...(state.previous_keys ?? []).map((k) => [k.key_id, k.public_key] as const)]);
  const signing = new Set<string>();
  const out: BundleLink[] = batches.map((b) => {
    const { leaves: _, endorsed_by: _e, endorsement: _n, ...h } = links.get(b)!;
    if (h.sig !== undefined && h.key !== undefined) signing.add(h.key);
    return links.has(b - 1) ? h : { ...h, prev_head: headBefore(src, state, b) };
  });
  return {
    id: chainKeyOf(state),
    service: state.service,
    keys: [...signing].map((key_id) => {
      const cert = src.witness.certs.get([chainKeyOf(state), key_id]);
      return { key_id, public_key: keys.get(key_id) ?? '', ...(cert === undefined ? {} : { certificate: cert }) };
    }),
    links: out,
    witness: [...witness.entries()].sort((a, b) => a[0] - b[0]).map(([batch, w]) => ({ batch, index: w.index, tree_size: w.tree_size, path: inclusionPathOf(subtree, w.index, w.tree_size).map((p) => p.toString('hex')) })),
  };
}

/** The head the chain had before link `batch`: the link before it, or where the stored chain (or a lost range) starts. */
function headBefore(src: ProofSource, state: SidecarState, batch: number): string {
  const before = src.stores.links.get([chainKeyOf(state), batch - 1]);
  if (before !== undefined) return before.head;
  if (batch === state.first_batch) return state.base_head;
  const lost = (state.lost ?? []).find((l) => l.to_batch === batch - 1);
  if (lost !== undefined) return lost.base_head;
  throw new ProofError(404, `sidecar ${chainKeyOf(state)}: the link before batch ${batch} is not in this store`);
}

/** The records link holding `seq`: the last link whose first_seq is at or below it, found by bisection over batch numbers. */
function recordsLinkOf(stores: CollectorStores, state: SidecarState, seq: number): StoredLink {
  const id = chainKeyOf(state);
  const firstAtOrAfter = (b: number): StoredLink | undefined => Array.from(stores.links.getRange({ start: [id, b], end: [id, MAX], limit: 1 }), ({ value }) => value)[0];
  let lo = state.first_batch;
  let hi = state.position.last_batch;
  let found: StoredLink | undefined;
  while (lo <= hi) {
    const mid = Math.floor((lo + hi) / 2);
    const l = firstAtOrAfter(mid);
    if (l === undefined || l.batch > hi || l.first_seq > seq) {
      hi = mid - 1;
      continue;
    }
    found = l;
    lo = l.batch + 1;
  }
  if (found?.kind !== 'records' || seq >= found.first_seq + found.count) throw new ProofError(404, `no record ${id}:${seq} in this store`);
  return found;
}

/** The sidecar's newest signed link whose entry is under `treeSize`. */
function latestWitnessed(src: ProofSource, state: SidecarState, treeSize: number): StoredLink | undefined {
  for (const { value: l } of src.stores.links.getRange({ start: [chainKeyOf(state), state.position.last_signed], end: [chainKeyOf(state), 0], reverse: true })) {
    if (l.sig === undefined) continue;
    const index = src.witness.links.get([chainKeyOf(state), l.batch]);
    if (index !== undefined && index < treeSize) return l;
  }
  return undefined;
}
