import type { X509Certificate } from 'node:crypto';
import { inclusionProof, verifyInclusion } from './merkle.js';
import { caEndorsedIdentity } from './certified-key.js';
import { pruneMarkSigned } from './key-endorsement.js';
import { GENESIS_HEAD, keyIdOf, publicKeyFromSpki } from './chain.js';
import { ChainBroken, fail, LinkVerifier, seqRange as range, type KeyChange, type ResolvedKey, type VerifyFailure } from './link-verifier.js';
import { headerEntries, readHeadFrom, readPrunedFrom, recordEntries } from './read-journal.js';
import type { BatchHeader, JournalSnapshot, PrunedMark } from './journal-layout.js';

export type { VerifyFailure } from './link-verifier.js';

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
  /** The mesh CA bundle (`--ca-file`): a key change it certifies is endorsed. */
  ca?: readonly X509Certificate[];
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
  /** Every boot epoch that changed the key, with what endorses it. A change nothing endorses fails. */
  key_changes: KeyChange[];
  /** Set when older links were pruned: the verified chain starts after this batch. */
  pruned_through?: { batch: number; seq: number };
  /** Batch whose head is the expected head. */
  expected_head_batch?: number;
  inclusion?: InclusionReport;
  failure?: VerifyFailure;
}

/** Verifies the whole journal in one snapshot. Never throws for what it finds; it reports. */
export function verifySnapshot(snapshot: JournalSnapshot, opts: VerifyOptions = {}): VerifyReport {
  const walk = new ChainWalk(snapshot, opts);
  try {
    walk.run();
  } catch (err) {
    if (!(err instanceof ChainBroken)) throw err;
    walk.report.failure = err.failure;
  }
  walk.report.ok = walk.report.failure === undefined;
  return walk.report;
}

/**
 * Walks a journal snapshot: the links through the shared LinkVerifier, the records table
 * alongside (every record covered by exactly one batch), then the journal's own head entry and
 * the outside anchors.
 */
class ChainWalk {
  readonly report: VerifyReport;
  #snapshot: JournalSnapshot;
  #opts: VerifyOptions;
  #records: Iterator<{ key: number; value: Buffer }>;
  #next: IteratorResult<{ key: number; value: Buffer }>;
  #links: LinkVerifier;
  #keys = new Map<string, ResolvedKey>();
  #pruned: PrunedMark | undefined;

  constructor(snapshot: JournalSnapshot, opts: VerifyOptions) {
    this.#snapshot = snapshot;
    this.#opts = opts;
    const pruned = readPrunedFrom(snapshot.stores, snapshot.transaction);
    this.#pruned = pruned;
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
      key_changes: [],
      ...(pruned === undefined ? {} : { pruned_through: { batch: pruned.last_batch, seq: pruned.last_seq } }),
    };
    const r = this.report;
    const start = { last_batch: r.last_batch, last_seq: r.last_seq, head: r.head, last_signed: 0, epoch_key: pruned?.epoch_key };
    this.#links = new LinkVerifier(start, {
      keyFor: (keyId, batch) => this.#keyFor(keyId, batch),
      certified: opts.ca === undefined ? undefined : (change, spki) => this.#certified(change, spki, opts.ca!),
      onKeyChange: (change) => r.key_changes.push(change),
    });
    this.#records = recordEntries(snapshot.stores, {}, snapshot.transaction)[Symbol.iterator]();
    this.#next = this.#records.next();
  }

  run(): void {
    const { stores, transaction } = this.#snapshot;
    this.#checkPruneMark();
    for (const { key, value } of headerEntries(stores, {}, transaction)) this.#link(key, value);
    const r = this.report;
    const lastSigned = this.#links.position.last_signed;
    if (!this.#next.done) fail({ seq: this.#next.value.key, problem: `record ${this.#next.value.key} is not covered by any batch: it was added after the last batch (${r.last_batch})` });
    if (r.last_batch === (r.pruned_through?.batch ?? 0)) fail({ problem: 'the journal holds no batches: an empty journal, or not a journal' });
    if (lastSigned !== r.last_batch) fail({ batch: lastSigned + 1, problem: `batches ${lastSigned + 1}-${r.last_batch} come after the last signed head: not covered by any signature` });
    const mark = this.#pruned;
    if (mark !== undefined && mark.key !== mark.epoch_key && !r.key_changes.some((c) => c.to === mark.key)) {
      fail({ batch: mark.last_batch, problem: `the prune mark is signed by key ${mark.key}, which is not a key of this chain (it starts with key ${mark.epoch_key}): the mark was forged` });
    }
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

  /** One link: stored under its own number, then the shared checks, then this walk's tallies. */
  #link(key: number, h: BatchHeader): void {
    const r = this.report;
    if (h.batch !== key) fail({ batch: key, problem: `the header stored as batch ${key} names itself batch ${h.batch}` });
    const bytes: Buffer[] = [];
    if (h.kind === 'records' && Number.isSafeInteger(h.count)) for (let seq = h.first_seq; seq < h.first_seq + h.count; seq++) bytes.push(this.#take(seq, h));
    const leaves = this.#links.next(h, bytes);
    if (h.kind === 'records') {
      const wanted = this.#opts.record;
      if (wanted !== undefined && wanted >= h.first_seq && wanted < h.first_seq + h.count) this.#prove(h, leaves!, wanted - h.first_seq, Buffer.from(bytes[wanted - h.first_seq]));
      r.records += h.count;
      r.batches++;
    } else if (h.kind === 'epoch') r.epochs++;
    else r.checkpoints++;
    if (h.sig !== undefined && !r.keys.includes(h.key!)) r.keys.push(h.key!);
    if (h.head === this.#opts.expectHead) r.expected_head_batch = key;
    r.last_batch = key;
    r.last_seq += h.count;
    r.head = h.head;
  }

  /** The stored bytes of `seq`, which must be the next record; names what is missing or extra. */
  #take(seq: number, h: BatchHeader): Buffer {
    const next = this.#next;
    if (!next.done && next.value.key < seq) fail({ seq: next.value.key, problem: `record ${next.value.key} is not covered by any batch: it was inserted before batch ${h.batch}` });
    if (next.done || next.value.key !== seq) fail({ seq, batch: h.batch, problem: `record ${seq} is missing: batch ${h.batch} covers ${range(h.first_seq, h.count)}` });
    this.#next = this.#records.next();
    return (next as IteratorYieldResult<{ key: number; value: Buffer }>).value.value;
  }

  /**
   * The prune mark (the oldest link still present chains from it) must be signed by a key of the
   * chain and name the key of its epoch: otherwise cutting the oldest links and writing a mark would
   * let a journal start over with any key.
   */
  #checkPruneMark(): void {
    const mark = this.#pruned;
    if (mark === undefined) return;
    const where = { batch: mark.last_batch };
    if (mark.sig === undefined || mark.key === undefined || mark.epoch_key === undefined) fail({ ...where, problem: `the prune mark (batches up to ${mark.last_batch} pruned) is not signed: forged, or written before prune marks were signed` });
    if (!pruneMarkSigned(mark, this.#keyFor(mark.key!, mark.last_batch).key)) fail({ ...where, problem: `the prune mark (batches up to ${mark.last_batch} pruned): its signature does not verify with key ${mark.key}: the mark was altered` });
  }

  /** With --ca-file: the new key's certificate in the journal's key table, for the previous key's certified identity. */
  #certified(change: Omit<KeyChange, 'endorsed' | 'identity'>, spki: Buffer, ca: readonly X509Certificate[]): string | undefined {
    const { stores, transaction } = this.#snapshot;
    const certificateOf = (keyId: string): string | undefined => stores.keys.get(keyId, { transaction })?.certificate;
    return caEndorsedIdentity(change, ca, { certificate: certificateOf(change.to), spki }, { certificate: certificateOf(change.from), spki: this.#keyFor(change.from, change.batch).spki });
  }

  /** The recorded public key for `keyId`, which must hash to that id and be the expected key. */
  #keyFor(keyId: string, batch: number): ResolvedKey {
    const { expectKey } = this.#opts;
    if (expectKey !== undefined && keyId !== expectKey) fail({ batch, problem: `batch ${batch} is signed by key ${keyId}, not by the expected key ${expectKey}` });
    const known = this.#keys.get(keyId);
    if (known !== undefined) return known;
    const { stores, transaction } = this.#snapshot;
    const entry = stores.keys.get(keyId, { transaction });
    if (entry === undefined) return fail({ batch, problem: `batch ${batch} names key ${keyId}, which the journal does not hold` });
    const spki = Buffer.from(entry.public_key, 'base64');
    if (keyIdOf(spki) !== keyId) fail({ batch, problem: `the public key recorded for key ${keyId} is not that key (its id is ${keyIdOf(spki)}): the key was swapped` });
    const key = publicKeyFromSpki(spki);
    if (key === null) return fail({ batch, problem: `the public key recorded for key ${keyId} is not an Ed25519 key` });
    const resolved = { spki, key };
    this.#keys.set(keyId, resolved);
    return resolved;
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
