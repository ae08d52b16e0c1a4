import type { KeyObject } from 'node:crypto';
import { leafHash, merkleRoot } from './merkle.js';
import { EMPTY_ROOT, epochRoot, linkHead, verifyHeadSignature } from './chain.js';
import { endorsedBy } from './key-endorsement.js';
import type { BatchHeader } from './journal-layout.js';

/**
 * The per-link checks of the hash chain, in one place for every verifier: the offline journal
 * verifier (verify-journal.ts) walks a whole journal through it, the collector's ingest
 * (control/collector/ingest/) runs every received segment through it from the head it stored for that
 * sidecar. A link is checked for, in this order: its numbers (batch and seq contiguous with the
 * position), its contents (records -> Merkle root, epoch key -> root, checkpoint empty), its boot
 * epoch, its head recomputed from the previous head, and its signature if it is signed.
 */

/**
 * Machine-readable kind of failure: the Refusal codes of wire/sync.proto. The link
 * checks here raise the first six; the collector adds a resent batch that differs from the one it
 * holds (`fork`) and a stream without an accepted credential (`unauthenticated`).
 */
export type FailureCode = 'gap' | 'bad-root' | 'bad-chain' | 'bad-signature' | 'key-mismatch' | 'malformed' | 'fork' | 'unauthenticated';

/** Where and what: the first thing that did not verify. */
export interface VerifyFailure {
  batch?: number;
  seq?: number;
  problem: string;
  code?: FailureCode;
}

/** Thrown by the verifiers at the first failure; carries it. */
export class ChainBroken extends Error {
  constructor(readonly failure: VerifyFailure) {
    super(failure.problem);
  }
}

export const fail = (failure: VerifyFailure): never => {
  throw new ChainBroken(failure);
};

/** Where a verified chain stands: the next link must follow on from this. */
export interface ChainPosition {
  last_batch: number;
  /** undefined when the chain starts after pruned links whose seqs are unknown: the next link sets it. */
  last_seq: number | undefined;
  head: string;
  /** The boot epoch of the last link, and the key its epoch link named (unknown before the first). */
  epoch?: number;
  epoch_key?: string;
  /** The last signed link. */
  last_signed: number;
}

/** A key a link names, resolved by the caller (the journal's keys table, the collector's pinned key). */
export interface ResolvedKey {
  spki: Buffer;
  key: KeyObject;
}

/** A boot epoch that changed the key, and what endorses it. */
export interface KeyChange {
  batch: number;
  epoch: number;
  from: string;
  to: string;
  /** `previous-key`: the epoch link carries the previous key's signature; `ca`: the mesh CA certifies the new key. */
  endorsed: 'previous-key' | 'ca';
  /** With `ca`: the certified identity (SPIFFE ID). */
  identity?: string;
}

export interface LinkVerifierOptions {
  /** The key for `keyId`, or fail() naming why not (unknown, swapped, not pinned). */
  keyFor(keyId: string, batch: number): ResolvedKey;
  /** The new key's CA-certified identity when it endorses a key change, else undefined (fail() for a bad certificate). */
  certified?(change: Omit<KeyChange, 'endorsed' | 'identity'>, spki: Buffer): string | undefined;
  /** Told of every endorsed key change, in chain order. */
  onKeyChange?(change: KeyChange): void;
}

export const seqRange = (first: number, count: number): string => (count === 1 ? `seq ${first}` : `seqs ${first}-${first + count - 1}`);

/** The Merkle root over records' canonical bytes, and their leaf hashes. */
export function recordsRoot(records: readonly Uint8Array[]): { root: string; leaves: Buffer[] } {
  const leaves = records.map((bytes) => leafHash(bytes));
  return { root: merkleRoot(leaves).toString('hex'), leaves };
}

/** Verifies links one after another from a position; throws ChainBroken at the first failure. */
export class LinkVerifier {
  #pos: ChainPosition;
  #opts: LinkVerifierOptions;

  constructor(start: ChainPosition, opts: LinkVerifierOptions) {
    this.#pos = { ...start };
    this.#opts = opts;
  }

  /** The position after the last link that verified. */
  get position(): Readonly<ChainPosition> {
    return this.#pos;
  }

  /**
   * Checks link `h`, whose records are `records` (their canonical bytes; or their Merkle root,
   * computed elsewhere from the bytes, e.g. in a worker). Advances the position; returns the
   * records' leaf hashes when it computed them.
   */
  next(h: BatchHeader, records: readonly Uint8Array[] | { root: string }): Buffer[] | undefined {
    const pos = this.#pos;
    const expected = pos.last_batch + 1;
    if (h.batch !== expected) fail({ code: 'gap', batch: expected, problem: h.batch === expected + 1 ? `batch ${expected} is missing` : h.batch > expected ? `batches ${expected}-${h.batch - 1} are missing` : `batch ${h.batch} is out of order` });
    if (pos.last_seq !== undefined && h.first_seq !== pos.last_seq + 1) {
      fail({ code: 'gap', batch: h.batch, problem: `batch ${h.batch} starts at seq ${h.first_seq}, but the batch before it ends at seq ${pos.last_seq}` });
    }
    let leaves: Buffer[] | undefined;
    if (h.kind === 'records') leaves = this.#recordsLink(h, records);
    else if (h.kind === 'epoch') this.#epochLink(h);
    else if (h.kind === 'checkpoint') this.#checkpointLink(h);
    else fail({ code: 'malformed', batch: h.batch, problem: `batch ${h.batch} has an unknown kind ${JSON.stringify(h.kind)}` });
    if (pos.epoch === undefined) pos.epoch = h.epoch;
    if (h.epoch !== pos.epoch) fail({ code: 'bad-chain', batch: h.batch, problem: `batch ${h.batch} is in epoch ${h.epoch}, but follows epoch ${pos.epoch} without an epoch link` });
    let head: string;
    try {
      head = linkHead(pos.head, h);
    } catch (err) {
      return fail({ code: 'malformed', batch: h.batch, problem: `batch ${h.batch} has a malformed header: ${(err as Error).message}` });
    }
    if (head !== h.head) fail({ code: 'bad-chain', batch: h.batch, problem: `batch ${h.batch}: chain link broken: its head recomputed from the previous head and its header is ${head}, it says ${h.head}` });
    if (h.sig !== undefined) this.#signature(h);
    pos.last_batch = h.batch;
    pos.last_seq = h.first_seq + h.count - 1;
    pos.head = head;
    return leaves;
  }

  #recordsLink(h: BatchHeader, records: readonly Uint8Array[] | { root: string }): Buffer[] | undefined {
    if (!Number.isSafeInteger(h.count) || h.count < 1) fail({ code: 'malformed', batch: h.batch, problem: `batch ${h.batch} of records has count ${h.count}` });
    let root: string;
    let leaves: Buffer[] | undefined;
    if ('root' in records) root = records.root;
    else {
      if (records.length !== h.count) fail({ code: 'malformed', batch: h.batch, problem: `batch ${h.batch} covers ${seqRange(h.first_seq, h.count)} but carries ${records.length} records` });
      ({ root, leaves } = recordsRoot(records));
    }
    if (root !== h.root) {
      fail({ code: 'bad-root', batch: h.batch, problem: `batch ${h.batch} (${seqRange(h.first_seq, h.count)}): the Merkle root of its records does not match its header: a record in it was altered, removed, inserted or reordered` });
    }
    return leaves;
  }

  #epochLink(h: BatchHeader): void {
    const pos = this.#pos;
    if (h.count !== 0) fail({ code: 'malformed', batch: h.batch, problem: `epoch link ${h.batch} claims ${h.count} records` });
    if (h.key === undefined) return fail({ code: 'malformed', batch: h.batch, problem: `epoch link ${h.batch} names no key` });
    if (pos.epoch !== undefined && h.epoch <= pos.epoch) fail({ code: 'bad-chain', batch: h.batch, problem: `epoch link ${h.batch} opens epoch ${h.epoch} after epoch ${pos.epoch}` });
    const { spki } = this.#opts.keyFor(h.key, h.batch);
    if (epochRoot(spki) !== h.root) fail({ code: 'key-mismatch', batch: h.batch, problem: `epoch link ${h.batch}: its root does not commit to the public key recorded for key ${h.key}: the key was swapped` });
    if (pos.epoch_key !== undefined && h.key !== pos.epoch_key) this.#keyChange(h, pos.epoch_key, spki);
    pos.epoch = h.epoch;
    pos.epoch_key = h.key;
  }

  /** A new key must be endorsed: signed by the previous key on the epoch link, or certified by the mesh CA. */
  #keyChange(h: BatchHeader, from: string, spki: Buffer): void {
    const change = { batch: h.batch, epoch: h.epoch, from, to: h.key! };
    if (h.endorsed_by !== undefined || h.endorsement !== undefined) {
      if (!endorsedBy(h, this.#pos.head, spki, from, this.#opts.keyFor(from, h.batch).key)) {
        fail({ code: 'bad-signature', batch: h.batch, problem: `epoch link ${h.batch} (epoch ${h.epoch}): its endorsement of key ${h.key} does not verify with the previous key ${from}` });
      }
      return this.#opts.onKeyChange?.({ ...change, endorsed: 'previous-key' });
    }
    const identity = this.#opts.certified?.(change, spki);
    if (identity === undefined) {
      const ca = this.#opts.certified === undefined ? ' (a mesh CA certificate of the new key would endorse it: --ca-file)' : ', nor certified by the mesh CA';
      fail({ code: 'key-mismatch', batch: h.batch, problem: `epoch link ${h.batch} (epoch ${h.epoch}) changes the key from ${from} to ${h.key} without endorsement: not signed by ${from}${ca}` });
    }
    this.#opts.onKeyChange?.({ ...change, endorsed: 'ca', identity });
  }

  #checkpointLink(h: BatchHeader): void {
    if (h.count !== 0 || h.root !== EMPTY_ROOT) fail({ code: 'malformed', batch: h.batch, problem: `checkpoint ${h.batch} claims records (count ${h.count}, root ${h.root})` });
  }

  #signature(h: BatchHeader): void {
    const pos = this.#pos;
    const keyId = h.key;
    if (keyId === undefined) return fail({ code: 'bad-signature', batch: h.batch, problem: `batch ${h.batch} is signed but names no key` });
    if (pos.epoch_key !== undefined && keyId !== pos.epoch_key) {
      fail({ code: 'key-mismatch', batch: h.batch, problem: `batch ${h.batch} is signed by key ${keyId}, but its epoch ${pos.epoch} was opened with key ${pos.epoch_key}` });
    }
    const { key } = this.#opts.keyFor(keyId, h.batch);
    if (!verifyHeadSignature(h.head, h.sig!, key)) fail({ code: 'bad-signature', batch: h.batch, problem: `batch ${h.batch}: the signature over its head does not verify with key ${keyId}` });
    pos.last_signed = h.batch;
  }
}
