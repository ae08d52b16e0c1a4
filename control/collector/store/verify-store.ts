import { realpathSync } from 'node:fs';
import { open, type Transaction } from 'lmdb';
import { leafHash, merkleRoot } from '../../../ledger/merkle.js';
import { keyIdOf, publicKeyFromSpki } from '../../../ledger/chain.js';
import { previousKey } from '../ingest/key-rotation.js';
import { ChainBroken, fail, LinkVerifier, seqRange, type VerifyFailure } from '../../../ledger/link-verifier.js';
import { writerFor } from '../../../ledger/journal-writers.js';
import { BatchBlob, BlobError } from './batch-blob.js';
import type { LostRange, SidecarState, StoredLink } from '../collector-store.js';
import { openCollectorStores, refuseEarlierLayout, type CollectorStores } from './store-layout.js';

/**
 * `auditmesh verify STORE` for a collector store: every sidecar chain in it, end to end, through
 * the same link verifier ingest used, from where the collector's copy of that chain starts to the
 * position it recorded, with the key it pinned. Names the first sidecar, batch or record that
 * does not verify. Reads one snapshot.
 */

export interface SidecarChainReport {
  id: string;
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
  failure?: VerifyFailure;
}

export interface StoreReport {
  ok: boolean;
  kind: 'collector-store';
  sidecars: SidecarChainReport[];
  records: number;
  /** The first sidecar that failed, and where. */
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
export async function verifyStoreDir(dir: string): Promise<StoreReport> {
  const env = open({ path: realpathSync(dir), readOnly: true });
  try {
    refuseEarlierLayout(dir, Array.from(env.getKeys(), String));
  } catch (err) {
    await env.close();
    throw err;
  }
  const stores = openCollectorStores(env);
  try {
    const transaction = stores.env.useReadTransaction();
    try {
      return verifyStore(stores, transaction);
    } finally {
      transaction.done();
    }
  } finally {
    await stores.env.close();
  }
}

export function verifyStore(stores: CollectorStores, transaction: Transaction): StoreReport {
  const report: StoreReport = { ok: true, kind: 'collector-store', sidecars: [], records: 0 };
  for (const { value: state } of stores.sidecars.getRange({ transaction })) {
    const r = verifySidecar(stores, transaction, state);
    report.sidecars.push(r);
    report.records += r.records;
    if (!r.ok && report.failure === undefined) report.failure = { sidecar: r.id, ...r.failure! };
  }
  report.ok = report.failure === undefined;
  return report;
}

function verifySidecar(stores: CollectorStores, transaction: Transaction, state: SidecarState): SidecarChainReport {
  const start = { last_batch: state.first_batch - 1, last_seq: state.first_batch === 1 ? 0 : undefined, head: state.base_head, last_signed: state.first_batch - 1 };
  const lost = state.lost ?? [];
  const r: SidecarChainReport = { id: state.id, key_id: state.key_id, ok: false, records: 0, links: 0, first_batch: state.first_batch, last_batch: start.last_batch, last_seq: start.last_seq ?? null, head: start.head, lost };
  try {
    const spki = Buffer.from(state.public_key, 'base64');
    const key = publicKeyFromSpki(spki);
    if (key === null || keyIdOf(spki) !== state.key_id) fail({ problem: `the pinned public key of sidecar ${state.id} is not an Ed25519 key with id ${state.key_id}: the key was swapped` });
    // Keys before the pinned one sign only up to an epoch link they endorsed: LinkVerifier checks that.
    const keyFor = (keyId: string, batch: number) => (keyId === state.key_id ? { spki, key: key! } : previousKey(state, keyId) ?? fail({ code: 'key-mismatch', batch, problem: `batch ${batch} names key ${keyId}, not the pinned key ${state.key_id}` }));
    let links = new LinkVerifier({ ...start, epoch_key: state.previous_keys?.[0]?.key_id ?? state.key_id }, { keyFor });
    /** Across ranges recorded as lost (one may follow another), the chain starts again from the head the sidecar presented. */
    const crossLost = (before: number): void => {
      for (let l = lost.find((x) => x.from_batch === links.position.last_batch + 1); l !== undefined && l.to_batch < before; l = lost.find((x) => x.from_batch === links.position.last_batch + 1)) {
        links = new LinkVerifier({ last_batch: l.to_batch, last_seq: undefined, head: l.base_head, last_signed: l.to_batch }, { keyFor });
        ({ last_batch: r.last_batch, head: r.head } = links.position);
      }
    };
    const batches = stores.batches.getRange({ start: [state.id, 0], end: [state.id, Number.MAX_SAFE_INTEGER], transaction })[Symbol.iterator]();
    let next = batches.next();
    for (const { key: k, value: h } of stores.links.getRange({ start: [state.id, 0], end: [state.id, Number.MAX_SAFE_INTEGER], transaction })) {
      if (h.batch !== k[1]) fail({ batch: k[1], problem: `the link stored as batch ${k[1]} names itself batch ${h.batch}` });
      crossLost(h.batch);
      if (!next.done && next.value.key[1] < h.batch) fail({ batch: next.value.key[1], problem: `records stored as batch ${next.value.key[1]} have no link: they were inserted before batch ${h.batch}` });
      let bytes: Buffer[] = [];
      if (h.kind === 'records') {
        if (next.done || next.value.key[1] !== h.batch) fail({ seq: h.first_seq, batch: h.batch, problem: `the records of batch ${h.batch} (${seqRange(h.first_seq, h.count)}) are missing` });
        bytes = storedRecords(h, next.value.value);
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
    // Ranges lost after the last link stored (nothing shipped since the sidecar reconnected).
    crossLost(Number.MAX_SAFE_INTEGER);
    const pos = state.position;
    if (pos.last_batch !== r.last_batch || pos.head !== r.head) {
      fail({ batch: r.last_batch, problem: `the stored position of sidecar ${state.id} (batch ${pos.last_batch}, head ${pos.head}) does not match its last link (batch ${r.last_batch}, head ${r.head}): links were cut off or added` });
    }
    if (links.position.last_signed !== r.last_batch) fail({ batch: links.position.last_signed + 1, problem: `batches ${links.position.last_signed + 1}-${r.last_batch} come after the last signed head` });
    for (const l of lost) {
      fail({
        code: 'gap',
        batch: l.from_batch,
        problem: `batches ${l.from_batch}-${l.to_batch} of sidecar ${state.id} never reached this store: at ${new Date(l.recorded_unix_ms).toISOString()} the sidecar no longer retained them and the collector had lost them (restored from an older copy?). The chain verifies on both sides of them, but nothing shows what they held`,
      });
    }
    r.ok = true;
  } catch (err) {
    if (!(err instanceof ChainBroken)) throw err;
    r.failure = err.failure;
  }
  return r;
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
