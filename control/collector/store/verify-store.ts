import type { X509Certificate } from 'node:crypto';
import { realpathSync } from 'node:fs';
import { open, type Transaction } from 'lmdb';
import { leafHash, merkleRoot } from '../../../ledger/merkle.js';
import { keyIdOf, publicKeyFromSpki } from '../../../ledger/chain.js';
import { caEndorsedIdentity } from '../../../ledger/certified-key.js';
import { certificateOf, previousKey } from '../ingest/key-rotation.js';
import { ChainBroken, fail, LinkVerifier, seqRange, type ChainPosition, type KeyChange, type LinkVerifierOptions, type VerifyFailure } from '../../../ledger/link-verifier.js';
import { writerFor } from '../../../ledger/journal-writers.js';
import { BatchBlob, BlobError } from './batch-blob.js';
import type { LostRange, SidecarState, StoredLink } from '../collector-store.js';
import { openCollectorStores, refuseEarlierLayout, type CollectorStores } from './store-layout.js';
import { chainKeyOf } from './chain-key.js';
import { parseSpiffeId } from '../../../ledger/spiffe-id.js';
import { openPruneDbsIfAny, prunedStart, type PruneDbs } from './prune-log.js';

/**
 * `auditmesh verify STORE` for a collector store: every chain in it (a sidecar has one per
 * incarnation, chain-key.ts), end to end, through
 * the same link verifier ingest used, from where the collector's copy of that chain starts to the
 * position it recorded, with the key it pinned. Names the first sidecar, batch or record that
 * does not verify, and reports every key change with what endorsed it: the previous key, or (with
 * the mesh CA bundle, --ca-file) the new key's certificate the collector kept. Reads one snapshot.
 */

export interface StoreVerifyOptions {
  /** The mesh CA bundle: a key change whose new key it certifies, for the previous key's identity, is endorsed. */
  ca?: readonly X509Certificate[];
}

export interface SidecarChainReport {
  id: string;
  /** The pod uid of this chain's incarnation; null: none. */
  incarnation: string | null;
  /** What the store keeps the chain under (`ID@INCARNATION`, or the id). */
  chain: string;
  key_id: string;
  ok: boolean;
  records: number;
  links: number;
  first_batch: number;
  last_batch: number;
  last_seq: number | null;
  head: string;
  /** Ranges recorded as lost at ingest: the chain verifies on both sides, the store still fails. */
  lost: LostRange[];
  /** Every key change in the chain, with what endorses it. */
  key_changes: KeyChange[];
  failure?: VerifyFailure;
}

export interface StoreReport {
  ok: boolean;
  kind: 'collector-store';
  sidecars: SidecarChainReport[];
  records: number;
  /** The first chain that failed (its chain key), and where. */
  failure?: VerifyFailure & { sidecar: string };
}

/** true if the LMDB environment in `dir` is a collector store (it has the `sidecars` database). */
export async function isCollectorStore(dir: string): Promise<boolean> {
  const realDir = realpathSync(dir);
  // A journal this process writes is not opened a second time (lmdb-js#164).
  if (writerFor(realDir) !== undefined) return false;
  const env = open({ path: realDir, readOnly: true });
  try {
    return Array.from(env.getKeys()).includes('sidecars');
  } finally {
    await env.close();
  }
}

/** Verifies every sidecar chain of the store in `dir`, in one read snapshot. Never opens a store a collector in this process holds. */
export async function verifyStoreDir(dir: string, opts: StoreVerifyOptions = {}): Promise<StoreReport> {
  const env = open({ path: realpathSync(dir), readOnly: true });
  const names = Array.from(env.getKeys(), String);
  try {
    refuseEarlierLayout(dir, names);
  } catch (err) {
    await env.close();
    throw err;
  }
  const stores = openCollectorStores(env);
  // Opened before the read transaction: opening a database renews it.
  const pruned = openPruneDbsIfAny(env, names);
  try {
    const transaction = stores.env.useReadTransaction();
    try {
      return verifyStore(stores, transaction, { ...opts, pruned });
    } finally {
      transaction.done();
    }
  } finally {
    await stores.env.close();
  }
}

/** `opts.pruned`: the store's record of what retention pruned (prune-log.ts); each pruned chain is verified from where it now starts. */
export function verifyStore(stores: CollectorStores, transaction: Transaction, opts: StoreVerifyOptions & { pruned?: PruneDbs | null } = {}): StoreReport {
  const report: StoreReport = { ok: true, kind: 'collector-store', sidecars: [], records: 0 };
  for (const { key, value: state } of stores.sidecars.getRange({ transaction })) {
    const r = verifySidecar(stores, transaction, state, key, opts, prunedStart(opts.pruned ?? null, key, transaction));
    report.sidecars.push(r);
    report.records += r.records;
    if (!r.ok && report.failure === undefined) report.failure = { sidecar: r.chain, ...r.failure! };
  }
  report.ok = report.failure === undefined;
  return report;
}

function verifySidecar(stores: CollectorStores, transaction: Transaction, state: SidecarState, storedAs: string, opts: StoreVerifyOptions, pruned: ChainPosition | undefined): SidecarChainReport {
  // After retention pruned a prefix of the chain, it starts after the last link pruned (a signed one).
  const start: ChainPosition = pruned ?? { last_batch: state.first_batch - 1, last_seq: state.first_batch === 1 ? 0 : undefined, head: state.base_head, last_signed: state.first_batch - 1, epoch_key: state.previous_keys?.[0]?.key_id ?? state.key_id };
  const lost = (state.lost ?? []).filter((l) => l.to_batch > start.last_batch);
  const chain = chainKeyOf(state);
  const r: SidecarChainReport = { id: state.id, incarnation: state.incarnation ?? null, chain, key_id: state.key_id, ok: false, records: 0, links: 0, first_batch: start.last_batch + 1, last_batch: start.last_batch, last_seq: start.last_seq ?? null, head: start.head, lost, key_changes: [] };
  try {
    // A chain's state moved under another key would have its links read as another chain's.
    if (storedAs !== chain) fail({ problem: `the chain stored as ${storedAs} names itself sidecar ${state.id}${state.incarnation === undefined ? '' : `, incarnation ${state.incarnation}`}: two incarnations' states were swapped or merged` });
    const spki = Buffer.from(state.public_key, 'base64');
    const key = publicKeyFromSpki(spki);
    if (key === null || keyIdOf(spki) !== state.key_id) fail({ problem: `the pinned public key of sidecar ${chain} is not an Ed25519 key with id ${state.key_id}: the key was swapped` });
    // Keys before the pinned one sign only up to an epoch link they endorsed: LinkVerifier checks that.
    const keyFor = (keyId: string, batch: number) => (keyId === state.key_id ? { spki, key: key! } : previousKey(state, keyId) ?? fail({ code: 'key-mismatch', batch, problem: `batch ${batch} names key ${keyId}, not the pinned key ${state.key_id}` }));
    const { ca } = opts;
    const verifierOpts: LinkVerifierOptions = {
      keyFor,
      certified: ca === undefined ? undefined : (change, newSpki) => caEndorsedIdentity(change, ca, { certificate: certificateOf(state, change.to), spki: newSpki }, { certificate: certificateOf(state, change.from), spki: keyFor(change.from, change.batch).spki }),
      onKeyChange: (change) => r.key_changes.push(change),
    };
    let links = new LinkVerifier(start, verifierOpts);
    /** Across ranges recorded as lost (one may follow another), the chain starts again from the head the sidecar presented. */
    const crossLost = (before: number): void => {
      for (let l = lost.find((x) => x.from_batch === links.position.last_batch + 1); l !== undefined && l.to_batch < before; l = lost.find((x) => x.from_batch === links.position.last_batch + 1)) {
        links = new LinkVerifier({ last_batch: l.to_batch, last_seq: undefined, head: l.base_head, last_signed: l.to_batch }, verifierOpts);
        ({ last_batch: r.last_batch, head: r.head } = links.position);
      }
    };
    const batches = stores.batches.getRange({ start: [chain, 0], end: [chain, Number.MAX_SAFE_INTEGER], transaction })[Symbol.iterator]();
    let next = batches.next();
    /** Records batches of the chain, for its identity stamps. */
    const held = new Set<number>();
    for (const { key: k, value: h } of stores.links.getRange({ start: [chain, 0], end: [chain, Number.MAX_SAFE_INTEGER], transaction })) {
      if (h.batch !== k[1]) fail({ batch: k[1], problem: `the link stored as batch ${k[1]} names itself batch ${h.batch}` });
      crossLost(h.batch);
      if (!next.done && next.value.key[1] < h.batch) fail({ batch: next.value.key[1], problem: `records stored as batch ${next.value.key[1]} have no link: they were inserted before batch ${h.batch}` });
      let bytes: Buffer[] = [];
      if (h.kind === 'records') {
        if (next.done || next.value.key[1] !== h.batch) fail({ seq: h.first_seq, batch: h.batch, problem: `the records of batch ${h.batch} (${seqRange(h.first_seq, h.count)}) are missing` });
        bytes = storedRecords(h, next.value.value);
        held.add(h.batch);
        next = batches.next();
      }
      try {
        links.next(h, bytes);
      } catch (err) {
        if (err instanceof ChainBroken && err.failure.code === 'bad-root') alteredRecord(h, bytes);
        throw err;
      }
      r.links++;
      r.records += bytes.length;
      ({ last_batch: r.last_batch, head: r.head } = links.position);
      r.last_seq = links.position.last_seq ?? null;
    }
    if (!next.done) fail({ batch: next.value.key[1], problem: `records stored as batch ${next.value.key[1]} have no link: they were added after the last batch (${r.last_batch})` });
    checkStamps(stores, transaction, chain, held);
    // Ranges lost after the last link stored (nothing shipped since the sidecar reconnected).
    crossLost(Number.MAX_SAFE_INTEGER);
    const pos = state.position;
    if (pos.last_batch !== r.last_batch || pos.head !== r.head) {
      fail({ batch: r.last_batch, problem: `the stored position of sidecar ${chain} (batch ${pos.last_batch}, head ${pos.head}) does not match its last link (batch ${r.last_batch}, head ${r.head}): links were cut off or added` });
    }
    if (links.position.last_signed !== r.last_batch) fail({ batch: links.position.last_signed + 1, problem: `batches ${links.position.last_signed + 1}-${r.last_batch} come after the last signed head` });
    for (const l of lost) {
      fail({
        code: 'gap',
        batch: l.from_batch,
        problem: `batches ${l.from_batch}-${l.to_batch} of sidecar ${chain} never reached this store: at ${new Date(l.recorded_unix_ms).toISOString()} the sidecar no longer retained them and the collector had lost them (restored from an older copy?). The chain verifies on both sides of them, but nothing shows what they held`,
      });
    }
    r.ok = true;
  } catch (err) {
    if (!(err instanceof ChainBroken)) throw err;
    r.failure = err.failure;
  }
  return r;
}

/** Every identity stamp of a chain names a workload and stamps a batch of records the chain holds. */
function checkStamps(stores: CollectorStores, transaction: Transaction, chain: string, held: ReadonlySet<number>): void {
  for (const { key: [, batch], value } of stores.identities.getRange({ start: [chain, 0], end: [chain, Number.MAX_SAFE_INTEGER], transaction })) {
    if (parseSpiffeId(value) === null) fail({ batch, problem: `the identity stamp of batch ${batch} is not a workload SPIFFE ID: ${JSON.stringify(value.slice(0, 200))}` });
    if (!held.has(batch)) fail({ batch, problem: `an identity stamp (${value}) names batch ${batch}, whose records this chain does not hold` });
  }
}

/** A records link's stored records, which must be as many as it covers, from its first sequence number. */
export function storedRecords(h: StoredLink, value: Buffer): Buffer[] {
  let blob: BatchBlob;
  try {
    blob = new BatchBlob(value);
  } catch (err) {
    if (!(err instanceof BlobError)) throw err;
    return fail({ seq: h.first_seq, batch: h.batch, problem: `the stored records of batch ${h.batch} are unreadable: ${err.message}` });
  }
  if (blob.count !== h.count || blob.firstSeq !== h.first_seq) {
    fail({ seq: h.first_seq, batch: h.batch, problem: `batch ${h.batch} covers ${seqRange(h.first_seq, h.count)} (${h.count} records), but ${blob.count} are stored for it, from seq ${blob.firstSeq}: records were removed or added` });
  }
  try {
    return blob.all();
  } catch (err) {
    if (!(err instanceof BlobError)) throw err;
    return fail({ seq: h.first_seq, batch: h.batch, problem: `the stored records of batch ${h.batch} are unreadable: ${err.message}` });
  }
}

/**
 * A batch whose records no longer hash to its root: if the leaf hashes stored with it still do,
 * the record whose leaf differs is the one that changed; fails naming it. Returns if it cannot tell.
 */
export function alteredRecord(h: StoredLink, bytes: Buffer[]): void {
  const stored = h.leaves;
  if (stored === undefined || stored.length !== bytes.length * 32) return;
  const leaves = Array.from({ length: bytes.length }, (_, i) => stored.subarray(i * 32, i * 32 + 32));
  if (merkleRoot(leaves).toString('hex') !== h.root) return;
  const i = bytes.findIndex((b, j) => !leafHash(b).equals(leaves[j]));
  if (i === -1) return;
  const seq = h.first_seq + i;
  fail({ code: 'bad-root', batch: h.batch, seq, problem: `record ${seq} (batch ${h.batch}): its bytes no longer hash to the leaf its batch's Merkle root was verified with: the record was altered in the store` });
}
