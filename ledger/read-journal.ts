import { realpathSync } from 'node:fs';
import { open, type Transaction } from 'lmdb';
import type { JournalRecord } from './record.js';
import { HEAD_KEY, PRUNED_KEY, SHIPPED_KEY, openJournalStores, type BatchHeader, type JournalHead, type JournalSnapshot, type JournalStores, type PrunedMark, type ShippedMark } from './journal-layout.js';
import { writerFor } from './journal-writers.js';

/**
 * Reading a journal (its layout is journal-layout.ts). Which reader to use:
 * - another process (the `tail` and `verify` tools): readJournal/readBatches/withSnapshot open the
 *   environment read-only for the call;
 * - the process that runs the journal (a test reading its own sidecar): the same functions
 *   detect the open writer and read through it, because lmdb-js misbehaves when one process
 *   opens an environment twice (lmdb-js#164). Journal#read and AuditPipeline#read are the same.
 */

const EMPTY_HEAD: JournalHead = { last_seq: 0, last_batch: 0 };

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

async function withStores<T>(dir: string, read: (stores: JournalStores) => T): Promise<T> {
  const realDir = realpathSync(dir);
  const live = writerFor(realDir);
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
