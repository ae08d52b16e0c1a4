import { realpathSync } from 'node:fs';
import { open, type Database, type RootDatabase, type Transaction } from 'lmdb';
import type { JournalRecord } from '../audit/record.js';
import type { LinkKind } from './chain.js';

/**
 * The journal's on-disk layout and its readers. The layout lives here, not in journal.ts, so that
 * the writer and every reader (tests, `tail`, `verify`) open the sub-databases with the same
 * encodings, and journal.ts can import this file without an import cycle.
 *
 * Which reader to use:
 * - another process (the `tail` and `verify` tools): readJournal/readBatches/withSnapshot open the
 *   environment read-only for the call;
 * - the process that runs the journal (a test reading its own sidecar): the same functions
 *   detect the open writer and read through it, because lmdb-js misbehaves when one process
 *   opens an environment twice (lmdb-js#164). Journal#read and AuditPipeline#read are the same.
 */

/**
 * One link of the chain (journal/chain.ts), stored under its batch number: a batch of records,
 * the opening of a boot epoch, or a checkpoint. Readers ignore fields they do not know.
 */
export interface BatchHeader {
  batch: number;
  first_seq: number;
  count: number;
  /** Merkle root over the batch's records, lowercase hex (RFC 9162, see audit/merkle.ts). */
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

export interface RecordReadOptions {
  /** First sequence number to return; default 1. */
  fromSeq?: number;
  /** At most this many records; default all. */
  limit?: number;
}

export interface BatchReadOptions {
  /** First batch number to return; default 1. */
  fromBatch?: number;
  /** At most this many headers; default all. */
  limit?: number;
}

export const HEAD_KEY = 'head';
export const PRUNED_KEY = 'pruned';
export const SHIPPED_KEY = 'shipped';
const EMPTY_HEAD: JournalHead = { last_seq: 0, last_batch: 0 };

export function openJournalStores(env: RootDatabase): JournalStores {
  return {
    env,
    records: env.openDB<Buffer, number>('records', { encoding: 'binary', compression: false }),
    batches: env.openDB<BatchHeader, number>('batches', { encoding: 'msgpack' }),
    meta: env.openDB<JournalHead | PrunedMark | ShippedMark, string>('meta', { encoding: 'msgpack' }),
    keys: env.openDB<KeyEntry, string>('keys', { encoding: 'msgpack' }),
  };
}

/** Record bytes by sequence, from `fromSeq` on, through the snapshot (or the current state). */
export function recordEntries(stores: JournalStores, opts: RecordReadOptions = {}, transaction?: Transaction): Iterable<{ key: number; value: Buffer }> {
  return stores.records.getRange({ start: opts.fromSeq, limit: opts.limit, transaction });
}

export function headerEntries(stores: JournalStores, opts: BatchReadOptions = {}, transaction?: Transaction): Iterable<{ key: number; value: BatchHeader }> {
  return stores.batches.getRange({ start: opts.fromBatch, limit: opts.limit, transaction });
}

/** Records in sequence order, from one snapshot (a range read holds one read transaction). */
export function readRecordsFrom(stores: JournalStores, opts: RecordReadOptions = {}): JournalRecord[] {
  const out: JournalRecord[] = [];
  for (const { key, value } of recordEntries(stores, opts)) out.push({ 'audit.seq': key, ...(JSON.parse(value.toString('utf8')) as object) } as JournalRecord);
  return out;
}

/** The stored bytes of records, by sequence, for verification: exactly what was hashed. */
export function readRecordBytesFrom(stores: JournalStores, opts: RecordReadOptions = {}): { seq: number; bytes: Buffer }[] {
  return Array.from(recordEntries(stores, opts), ({ key, value }) => ({ seq: key, bytes: value }));
}

export function readHeadersFrom(stores: JournalStores, opts: BatchReadOptions = {}): BatchHeader[] {
  return Array.from(headerEntries(stores, opts), ({ value }) => value);
}

export function readHeadFrom(stores: JournalStores, transaction?: Transaction): JournalHead {
  return (stores.meta.get(HEAD_KEY, { transaction }) as JournalHead | undefined) ?? EMPTY_HEAD;
}

export function readPrunedFrom(stores: JournalStores, transaction?: Transaction): PrunedMark | undefined {
  return stores.meta.get(PRUNED_KEY, { transaction }) as PrunedMark | undefined;
}

export function readShippedFrom(stores: JournalStores, transaction?: Transaction): ShippedMark | undefined {
  return stores.meta.get(SHIPPED_KEY, { transaction }) as ShippedMark | undefined;
}

// Environments this process has open for writing, by real path (see the comment at the top).
const writers = new Map<string, JournalStores>();

export function writerFor(realDir: string): JournalStores | undefined {
  return writers.get(realDir);
}

export function registerWriter(realDir: string, stores: JournalStores): void {
  if (writers.has(realDir)) throw new Error(`journal ${realDir} is already open in this process`);
  writers.set(realDir, stores);
}

export function unregisterWriter(realDir: string): void {
  writers.delete(realDir);
}

async function withStores<T>(dir: string, read: (stores: JournalStores) => T): Promise<T> {
  const realDir = realpathSync(dir);
  const live = writers.get(realDir);
  if (live !== undefined) return read(live);
  const env = open({ path: realDir, readOnly: true });
  try {
    return read(openJournalStores(env));
  } finally {
    await env.close();
  }
}

/**
 * Runs `read` over one read transaction of the journal in `dir`: records, headers, head and keys
 * all from the same committed state, however the writer (this process or another) moves on
 * meanwhile. `read` must be synchronous: the snapshot ends when it returns.
 */
export function withSnapshot<T>(dir: string, read: (snapshot: JournalSnapshot) => T): Promise<T> {
  return withStores(dir, (stores) => {
    const transaction = stores.env.useReadTransaction();
    try {
      return read({ stores, transaction });
    } finally {
      transaction.done();
    }
  });
}

/** Records of the journal in `dir`, in sequence order, with their sequence numbers. */
export function readJournal(dir: string, opts: RecordReadOptions = {}): Promise<JournalRecord[]> {
  return withStores(dir, (stores) => readRecordsFrom(stores, opts));
}

/** Stored record bytes of the journal in `dir`, for recomputing leaf hashes and roots. */
export function readJournalBytes(dir: string, opts: RecordReadOptions = {}): Promise<{ seq: number; bytes: Buffer }[]> {
  return withStores(dir, (stores) => readRecordBytesFrom(stores, opts));
}

/** Batch headers of the journal in `dir`, in batch order. */
export function readBatches(dir: string, opts: BatchReadOptions = {}): Promise<BatchHeader[]> {
  return withStores(dir, (stores) => readHeadersFrom(stores, opts));
}
