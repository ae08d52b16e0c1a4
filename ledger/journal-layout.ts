import type { Database, RootDatabase, Transaction } from 'lmdb';
import type { LinkKind } from './chain.js';

/**
 * The journal's on-disk layout: its sub-databases, their encodings and what they hold. The writer
 * (proxy/journal/journal.ts) and every reader (read-journal.ts, the shipper, verifiers) open them
 * through openJournalStores().
 */

/**
 * One link of the chain (chain.ts), stored under its batch number: a batch of records,
 * the opening of a boot epoch, or a checkpoint. Readers ignore fields they do not know.
 */
export interface BatchHeader {
  batch: number;
  first_seq: number;
  count: number;
  /** Merkle root over the batch's records, lowercase hex (RFC 9162, see merkle.ts). */
  root: string;
  sealed_unix_ms: number;
  kind: LinkKind;
  /** The boot epoch the link was written in; a new one each time the journal is opened for writing. */
  epoch: number;
  /** Chain head after this link, lowercase hex. */
  head: string;
  /** On the last link of every commit and on epoch links: the id of the key below. */
  key?: string;
  /** On the last link of every commit: Ed25519 signature over the head, lowercase hex. */
  sig?: string;
  /** On an epoch link that changes the key: the previous key's id and its signature (key-endorsement.ts). */
  endorsed_by?: string;
  endorsement?: string;
}

/** Where the journal ends; all 0 (and the genesis head) for an empty journal. Numbers start at 1. */
export interface JournalHead {
  last_seq: number;
  last_batch: number;
  /** Chain head of the last link, lowercase hex (journals written before the chain have none). */
  head?: string;
  /** The last boot epoch opened. */
  epoch?: number;
}

/** The last link removed by retention: the oldest link still present chains from its head. */
export interface PrunedMark {
  last_batch: number;
  last_seq: number;
  head: string;
  sealed_unix_ms: number;
  /** The key of the boot epoch the last pruned link was in: the verified chain continues from it. */
  epoch_key?: string;
  /** The journal key that signed the mark, and its signature (key-endorsement.ts). */
  key?: string;
  sig?: string;
}

/**
 * How far the collector has acknowledged the chain (proxy/ship/): every link up to and including
 * `batch` is stored there. With a collector, retention prunes only links at or below it.
 */
export interface ShippedMark {
  batch: number;
}

/** A public key the journal's heads are signed with, stored under its key id. */
export interface KeyEntry {
  /** DER SubjectPublicKeyInfo, base64. */
  public_key: string;
  /** The mesh CA's X.509 certificate for this key, DER base64, once the sidecar has one. */
  certificate?: string;
}

export interface JournalStores {
  readonly env: RootDatabase;
  /** seq -> canonical record bytes (UTF-8 JSON), stored as is: binary encoding, no compression. */
  readonly records: Database<Buffer, number>;
  /** batch number -> header. */
  readonly batches: Database<BatchHeader, number>;
  /** HEAD_KEY -> JournalHead, PRUNED_KEY -> PrunedMark, SHIPPED_KEY -> ShippedMark. */
  readonly meta: Database<JournalHead | PrunedMark | ShippedMark, string>;
  /** key id -> public key; never pruned, so every retained signature can be checked. */
  readonly keys: Database<KeyEntry, string>;
}

/** Stores plus one read transaction: everything read through it is one consistent snapshot. */
export interface JournalSnapshot {
  readonly stores: JournalStores;
  readonly transaction: Transaction;
}

export const HEAD_KEY = 'head';
export const PRUNED_KEY = 'pruned';
export const SHIPPED_KEY = 'shipped';

export function openJournalStores(env: RootDatabase): JournalStores {
  return {
    env,
    records: env.openDB<Buffer, number>('records', { encoding: 'binary', compression: false }),
    batches: env.openDB<BatchHeader, number>('batches', { encoding: 'msgpack' }),
    meta: env.openDB<JournalHead | PrunedMark | ShippedMark, string>('meta', { encoding: 'msgpack' }),
    keys: env.openDB<KeyEntry, string>('keys', { encoding: 'msgpack' }),
  };
}
