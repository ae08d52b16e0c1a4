import { realpathSync } from 'node:fs';
import { open, type Database, type RootDatabase } from 'lmdb';
import type { JournalRecord } from '../audit/record.js';

/**
 * The journal's on-disk layout and its readers. The layout lives here, not in journal.ts, so that
 * the writer and every reader (tests, `tail`, `verify`) open the sub-databases with the same
 * encodings, and journal.ts can import this file without an import cycle.
 *
 * Which reader to use:
 * - another process (the `tail` and `verify` tools): readJournal/readBatches open the environment
 *   read-only for the call;
 * - the process that runs the journal (a test reading its own sidecar): the same functions
 *   detect the open writer and read through it, because lmdb-js misbehaves when one process
 *   opens an environment twice (lmdb-js#164). Journal#read and AuditPipeline#read are the same.
 */

/** One batch header, stored under its batch number. Later fields (hash chain, signature, boot
 * epoch) are added to this object; readers ignore what they do not know. */
export interface BatchHeader {
  batch: number;
  first_seq: number;
  count: number;
  /** Merkle root over the batch's records, lowercase hex (RFC 9162, see audit/merkle.ts). */
  root: string;
  sealed_unix_ms: number;
}

/** Where the journal ends; 0 for an empty journal. Sequence and batch numbers start at 1. */
export interface JournalHead {
  last_seq: number;
  last_batch: number;
}

export interface JournalStores {
  readonly env: RootDatabase;
  /** seq -> canonical record bytes (UTF-8 JSON), stored as is: binary encoding, no compression. */
  readonly records: Database<Buffer, number>;
  /** batch number -> header. */
  readonly batches: Database<BatchHeader, number>;
  /** HEAD_KEY -> JournalHead. */
  readonly meta: Database<JournalHead, string>;
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
const EMPTY_HEAD: JournalHead = { last_seq: 0, last_batch: 0 };

export function openJournalStores(env: RootDatabase): JournalStores {
  return {
    env,
    records: env.openDB<Buffer, number>('records', { encoding: 'binary', compression: false }),
    batches: env.openDB<BatchHeader, number>('batches', { encoding: 'msgpack' }),
    meta: env.openDB<JournalHead, string>('meta', { encoding: 'msgpack' }),
  };
}

/** Records in sequence order, from one snapshot (a range read holds one read transaction). */
export function readRecordsFrom(stores: JournalStores, opts: RecordReadOptions = {}): JournalRecord[] {
  const out: JournalRecord[] = [];
  for (const { key, value } of stores.records.getRange({ start: opts.fromSeq ?? 1, limit: opts.limit })) {
    out.push({ 'audit.seq': key, ...(JSON.parse(value.toString('utf8')) as object) } as JournalRecord);
  }
  return out;
}

/** The stored bytes of records, by sequence, for verification: exactly what was hashed. */
export function readRecordBytesFrom(stores: JournalStores, opts: RecordReadOptions = {}): { seq: number; bytes: Buffer }[] {
  const out: { seq: number; bytes: Buffer }[] = [];
  for (const { key, value } of stores.records.getRange({ start: opts.fromSeq ?? 1, limit: opts.limit })) out.push({ seq: key, bytes: value });
  return out;
}

export function readHeadersFrom(stores: JournalStores, opts: BatchReadOptions = {}): BatchHeader[] {
  const out: BatchHeader[] = [];
  for (const { value } of stores.batches.getRange({ start: opts.fromBatch ?? 1, limit: opts.limit })) out.push(value);
  return out;
}

export function readHeadFrom(stores: JournalStores): JournalHead {
  return stores.meta.get(HEAD_KEY) ?? EMPTY_HEAD;
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
