import type { KeyObject } from 'node:crypto';
import { inclusionProof, leafHash, merkleRoot, verifyInclusion } from '../audit/merkle.js';
import { EMPTY_ROOT, epochRoot, GENESIS_HEAD, keyIdOf, linkHead, publicKeyFromSpki, verifyHeadSignature } from './chain.js';
import { headerEntries, readHeadFrom, readPrunedFrom, recordEntries, type BatchHeader, type JournalSnapshot } from './read-journal.js';

/**
 * The offline verifier: recomputes every leaf, root, link and signature of a journal snapshot,
 * checks that sequence and batch numbers run on without a hole, and stops at the first thing that
 * does not verify, naming the batch or record. Every link is checked, not only the ends (immudb
 * GHSA-672p-m5jq-mrh8). Streams: one batch's records in memory at a time.
 *
 * What it cannot see on its own: a tail cut off cleanly (the head entry rewritten to match) or a
 * journal rewritten and re-signed with another key. Both need an anchor from outside the journal:
 * a head seen earlier (`expectHead`, e.g. from the sidecar's `journal checkpoint` log lines) or the
 * expected key id (`expectKey`).
 */

export interface VerifyOptions {
  /** A head from elsewhere: it must be one of the chain's heads. */
  expectHead?: string;
  /** Every signature must be by this key id. */
  expectKey?: string;
  /** Also prove this record's inclusion. */
  record?: number;
}

/** Where and what: the first thing that did not verify. */
export interface VerifyFailure {
  batch?: number;
  seq?: number;
  problem: string;
}

/** A record's Merkle inclusion in its batch; the batch's head chains on to the report's head. */
export interface InclusionReport {
  seq: number;
  batch: number;
  /** The record's stored bytes, as text (canonical JSON). */
  record: string;
  leaf: string;
  index: number;
  tree_size: number;
  /** Audit path (RFC 9162 §2.1.3), from the leaf upwards. */
  path: string[];
  root: string;
  batch_head: string;
}

export interface VerifyReport {
  ok: boolean;
  records: number;
  /** Batches of records (links of kind `records`). */
  batches: number;
  epochs: number;
  checkpoints: number;
  first_seq: number;
  last_seq: number;
  last_batch: number;
  head: string;
  /** Ids of the keys that signed heads, in order of first use. */
  keys: string[];
  /** Set when older links were pruned: the verified chain starts after this batch. */
  pruned_through?: { batch: number; seq: number };
  /** Batch whose head is the expected head. */
  expected_head_batch?: number;
  inclusion?: InclusionReport;
  failure?: VerifyFailure;
}

class Broken extends Error {
  constructor(readonly failure: VerifyFailure) {
    super(failure.problem);
  }
}

const fail = (failure: VerifyFailure): never => {
  throw new Broken(failure);
};

const range = (first: number, count: number): string => (count === 1 ? `seq ${first}` : `seqs ${first}-${first + count - 1}`);

/** Verifies the whole journal in one snapshot. Never throws for what it finds; it reports. */
export function verifySnapshot(snapshot: JournalSnapshot, opts: VerifyOptions = {}): VerifyReport {
  const walk = new ChainWalk(snapshot, opts);
  try {
    walk.run();
  } catch (err) {
    if (!(err instanceof Broken)) throw err;
    walk.report.failure = err.failure;
  }
  walk.report.ok = walk.report.failure === undefined;
  return walk.report;
}

class ChainWalk {
  readonly report: VerifyReport;
  #snapshot: JournalSnapshot;
  #opts: VerifyOptions;
  #records: Iterator<{ key: number; value: Buffer }>;
  #next: IteratorResult<{ key: number; value: Buffer }>;
  #epoch: number | undefined;
  #epochKey: string | undefined;
  #lastSigned = 0;
  #publicKeys = new Map<string, KeyObject>();

  constructor(snapshot: JournalSnapshot, opts: VerifyOptions) {
    this.#snapshot = snapshot;
    this.#opts = opts;
    const pruned = readPrunedFrom(snapshot.stores, snapshot.transaction);
    this.report = {
      ok: false,
      records: 0,
      batches: 0,
      epochs: 0,
      checkpoints: 0,
      first_seq: (pruned?.last_seq ?? 0) + 1,
      last_seq: pruned?.last_seq ?? 0,
      last_batch: pruned?.last_batch ?? 0,
      head: pruned?.head ?? GENESIS_HEAD,
      keys: [],
      ...(pruned === undefined ? {} : { pruned_through: { batch: pruned.last_batch, seq: pruned.last_seq } }),
    };
    this.#records = recordEntries(snapshot.stores, {}, snapshot.transaction)[Symbol.iterator]();
    this.#next = this.#records.next();
  }

  run(): void {
    const { stores, transaction } = this.#snapshot;
    for (const { key, value } of headerEntries(stores, {}, transaction)) this.#link(key, value);
    const r = this.report;
    if (!this.#next.done) fail({ seq: this.#next.value.key, problem: `record ${this.#next.value.key} is not covered by any batch: it was added after the last batch (${r.last_batch})` });
    if (r.last_batch === (r.pruned_through?.batch ?? 0)) fail({ problem: 'the journal holds no batches: an empty journal, or not a journal' });
    if (this.#lastSigned !== r.last_batch) fail({ batch: this.#lastSigned + 1, problem: `batches ${this.#lastSigned + 1}-${r.last_batch} come after the last signed head: not covered by any signature` });
    const head = readHeadFrom(stores, transaction);
    if (head.last_batch !== r.last_batch || head.last_seq !== r.last_seq || head.head !== r.head) {
      fail({ batch: r.last_batch, problem: `the journal's head entry (batch ${head.last_batch}, seq ${head.last_seq}, head ${head.head}) does not match its last batch (batch ${r.last_batch}, seq ${r.last_seq}, head ${r.head}): batches were cut off or added` });
    }
    const { expectHead, record } = this.#opts;
    if (expectHead !== undefined && r.expected_head_batch === undefined) {
      fail({ problem: `expected head ${expectHead} is not in this chain, which ends at batch ${r.last_batch} (seq ${r.last_seq}) with head ${r.head}: batches were cut off, or the head is from another journal` });
    }
    if (record !== undefined && r.inclusion === undefined) fail({ seq: record, problem: `record ${record} is not in the journal, which holds ${range(r.first_seq, r.last_seq - r.first_seq + 1)}` });
  }

  /** One link: numbering, contents, chain, signature, in that order. */
  #link(key: number, h: BatchHeader): void {
    const r = this.report;
    const expected = r.last_batch + 1;
    if (h.batch !== key) fail({ batch: key, problem: `the header stored as batch ${key} names itself batch ${h.batch}` });
    if (key !== expected) fail({ batch: expected, problem: key > expected ? `batches ${expected}-${key - 1} are missing` : `batch ${key} is out of order` });
    if (h.first_seq !== r.last_seq + 1) fail({ batch: key, problem: `batch ${key} starts at seq ${h.first_seq}, but the batch before it ends at seq ${r.last_seq}` });
    if (h.kind === 'records') this.#recordsLink(h);
    else if (h.kind === 'epoch') this.#epochLink(h);
    else if (h.kind === 'checkpoint') this.#checkpointLink(h);
    else fail({ batch: key, problem: `batch ${key} has an unknown kind ${JSON.stringify(h.kind)}` });
    if (this.#epoch === undefined) this.#epoch = h.epoch;
    if (h.epoch !== this.#epoch) fail({ batch: key, problem: `batch ${key} is in epoch ${h.epoch}, but follows epoch ${this.#epoch} without an epoch link` });
    let head: string;
    try {
      head = linkHead(r.head, h);
    } catch (err) {
      return fail({ batch: key, problem: `batch ${key} has a malformed header: ${(err as Error).message}` });
    }
    if (head !== h.head) fail({ batch: key, problem: `batch ${key}: chain link broken: its head recomputed from the previous head and its header is ${head}, it says ${h.head}` });
    if (h.sig !== undefined) this.#signature(h);
    if (head === this.#opts.expectHead) r.expected_head_batch = key;
    r.last_batch = key;
    r.last_seq += h.count;
    r.head = head;
  }

  #recordsLink(h: BatchHeader): void {
    if (!Number.isSafeInteger(h.count) || h.count < 1) fail({ batch: h.batch, problem: `batch ${h.batch} of records has count ${h.count}` });
    const leaves: Buffer[] = [];
    const wanted = this.#opts.record;
    let wantedBytes: Buffer | undefined;
    for (let seq = h.first_seq; seq < h.first_seq + h.count; seq++) {
      const bytes = this.#take(seq, h);
      leaves.push(leafHash(bytes));
      if (seq === wanted) wantedBytes = Buffer.from(bytes);
    }
    const root = merkleRoot(leaves).toString('hex');
    if (root !== h.root) {
      fail({ batch: h.batch, problem: `batch ${h.batch} (${range(h.first_seq, h.count)}): the Merkle root of its stored records does not match its header: a record in it was altered, removed, inserted or reordered` });
    }
    if (wantedBytes !== undefined) this.#prove(h, leaves, wanted! - h.first_seq, wantedBytes);
    this.report.records += h.count;
    this.report.batches++;
  }

  /** The stored bytes of `seq`, which must be the next record; names what is missing or extra. */
  #take(seq: number, h: BatchHeader): Buffer {
    const next = this.#next;
    if (!next.done && next.value.key < seq) fail({ seq: next.value.key, problem: `record ${next.value.key} is not covered by any batch: it was inserted before batch ${h.batch}` });
    if (next.done || next.value.key !== seq) fail({ seq, batch: h.batch, problem: `record ${seq} is missing: batch ${h.batch} covers ${range(h.first_seq, h.count)}` });
    this.#next = this.#records.next();
    return (next as IteratorYieldResult<{ key: number; value: Buffer }>).value.value;
  }

  #epochLink(h: BatchHeader): void {
    if (h.count !== 0) fail({ batch: h.batch, problem: `epoch link ${h.batch} claims ${h.count} records` });
    if (h.key === undefined) return fail({ batch: h.batch, problem: `epoch link ${h.batch} names no key` });
    if (this.#epoch !== undefined && h.epoch <= this.#epoch) fail({ batch: h.batch, problem: `epoch link ${h.batch} opens epoch ${h.epoch} after epoch ${this.#epoch}` });
    const spki = this.#spki(h.key, h.batch);
    if (epochRoot(spki) !== h.root) fail({ batch: h.batch, problem: `epoch link ${h.batch}: its root does not commit to the public key recorded for key ${h.key}: the key was swapped` });
    this.#epoch = h.epoch;
    this.#epochKey = h.key;
    this.report.epochs++;
  }

  #checkpointLink(h: BatchHeader): void {
    if (h.count !== 0 || h.root !== EMPTY_ROOT) fail({ batch: h.batch, problem: `checkpoint ${h.batch} claims records (count ${h.count}, root ${h.root})` });
    this.report.checkpoints++;
  }

  #signature(h: BatchHeader): void {
    const keyId = h.key;
    if (keyId === undefined) return fail({ batch: h.batch, problem: `batch ${h.batch} is signed but names no key` });
    if (this.#epochKey !== undefined && keyId !== this.#epochKey) fail({ batch: h.batch, problem: `batch ${h.batch} is signed by key ${keyId}, but its epoch ${this.#epoch} was opened with key ${this.#epochKey}` });
    const { expectKey } = this.#opts;
    if (expectKey !== undefined && keyId !== expectKey) fail({ batch: h.batch, problem: `batch ${h.batch} is signed by key ${keyId}, not by the expected key ${expectKey}` });
    let key = this.#publicKeys.get(keyId);
    if (key === undefined) {
      const parsed = publicKeyFromSpki(this.#spki(keyId, h.batch));
      if (parsed === null) return fail({ batch: h.batch, problem: `the public key recorded for key ${keyId} is not an Ed25519 key` });
      this.#publicKeys.set(keyId, (key = parsed));
    }
    if (!verifyHeadSignature(h.head, h.sig!, key)) fail({ batch: h.batch, problem: `batch ${h.batch}: the signature over its head does not verify with key ${keyId}` });
    if (!this.report.keys.includes(keyId)) this.report.keys.push(keyId);
    this.#lastSigned = h.batch;
  }

  /** The recorded public key for `keyId`, which must hash to that id. */
  #spki(keyId: string, batch: number): Buffer {
    const { stores, transaction } = this.#snapshot;
    const entry = stores.keys.get(keyId, { transaction });
    if (entry === undefined) return fail({ batch, problem: `batch ${batch} names key ${keyId}, which the journal does not hold` });
    const spki = Buffer.from(entry.public_key, 'base64');
    if (keyIdOf(spki) !== keyId) fail({ batch, problem: `the public key recorded for key ${keyId} is not that key (its id is ${keyIdOf(spki)}): the key was swapped` });
    return spki;
  }

  #prove(h: BatchHeader, leaves: Buffer[], index: number, bytes: Buffer): void {
    const path = inclusionProof(leaves, index);
    const root = Buffer.from(h.root, 'hex');
    if (!verifyInclusion(leaves[index], index, leaves.length, path, root)) fail({ seq: h.first_seq + index, problem: `record ${h.first_seq + index}: its inclusion path does not lead to the root of batch ${h.batch}` });
    this.report.inclusion = {
      seq: h.first_seq + index,
      batch: h.batch,
      record: bytes.toString('utf8'),
      leaf: leaves[index].toString('hex'),
      index,
      tree_size: leaves.length,
      path: path.map((p) => p.toString('hex')),
      root: h.root,
      batch_head: h.head,
    };
  }
}
