import type { Database, RootDatabase } from 'lmdb';
import { BatchBlob, BlobError } from './batch-blob.js';
import { encodeBatch, type IndexedRecord } from './encoded-batch.js';
import { IdIndexWriter, type IdIndexDbs } from './id-index.js';
import { type CollectorStores, EARLIER_BATCHES_DB, MAX_SPAN, writeBatch } from './lmdb-store.js';
import { indexRecord } from './record-index.js';

/** Databases of earlier layouts: per-record B-tree indexes of request ids and trace ids. */
const EARLIER_ID_DBS = ['by_correlation', 'by_trace'];

/**
 * Stores written before the one-value-per-batch layout kept a `records` database, one value per
 * record ([sidecar, seq] -> bytes), and time, service, id and error entries per record under the
 * same database names with other keys. Opening such a store migrates it in place, so an upgrade
 * loses nothing the collector acknowledged: every records link's records become its batch value
 * and the indexes are rebuilt from the records' bytes, as ingest builds them. Records and links
 * are not touched otherwise, so `auditmesh verify` proves the same chains afterwards.
 *
 * Crash-safe by starting over: the old `records` database is dropped only after everything is
 * rebuilt, and while it exists every open clears the new layout's databases and migrates again.
 * A store whose records do not match its links (a record missing or not covered by any link) is
 * not migrated: opening fails, naming the first one, and the store stays as it is.
 */

/** Links migrated per LMDB transaction. */
const LINKS_PER_TRANSACTION = 256;

export interface LayoutMigration {
  /** The layout migrated from. */
  from: string;
  sidecars: number;
  /** Batches rewritten (every one, in the copy to compressed values) or re-indexed (the readable ones). */
  batches: number;
  /** Records of the readable batches. */
  records: number;
  /** Stored batches that could not be read (altered by hand): the copy to compressed values keeps them as they are, the id re-index leaves them out. */
  unreadable?: number;
}

const dbNames = (env: RootDatabase): string[] => Array.from(env.getKeys(), String);

function clearIds(ids: IdIndexDbs): void {
  for (const db of Object.values(ids)) db.clearSync();
}

function dropEarlierIdDbs(env: RootDatabase): void {
  const present = dbNames(env);
  for (const name of EARLIER_ID_DBS) if (present.includes(name)) env.openDB({ name }).dropSync();
}

export function migrateRecordLayout(stores: CollectorStores, ids: IdIndexDbs, dir: string, onStart?: (from: string) => void): LayoutMigration | null {
  const { env } = stores;
  if (!dbNames(env).includes('records')) return null;
  const done: LayoutMigration = { from: 'one value per record', sidecars: 0, batches: 0, records: 0 };
  onStart?.(done.from);
  const old = env.openDB<Buffer, [string, number]>('records', { encoding: 'binary', compression: false });
  for (const db of [stores.batches, stores.byTime, stores.byService, stores.errors, stores.meta]) db.clearSync();
  clearIds(ids);
  const writer = new IdIndexWriter(env, ids);
  const span = { ms: 0 };
  for (const { value: state } of stores.sidecars.getRange()) {
    done.sidecars++;
    const links = Array.from(stores.links.getRange({ start: [state.id, 0], end: [state.id, Number.MAX_SAFE_INTEGER] }), ({ value }) => value);
    for (let from = 0; from < links.length; from += LINKS_PER_TRANSACTION) {
      env.transactionSync(() => {
        for (const link of links.slice(from, from + LINKS_PER_TRANSACTION)) {
          if (link.kind !== 'records') continue;
          const records = linkRecords(old, state.id, link.first_seq, link.count, link.batch, dir);
          writeBatch(stores, writer, state.id, encodeBatch(state.id, link.batch, link.first_seq, records), span);
          done.batches++;
          done.records += records.length;
        }
      });
    }
  }
  const held = old.getCount();
  if (held !== done.records) {
    throw new Error(`${dir}: migrating this collector store to the one-value-per-batch layout found ${held - done.records} records not covered by any batch; it is left as it is. Verify it with the auditmesh version that wrote it`);
  }
  env.transactionSync(() => {
    void stores.meta.put(MAX_SPAN, span.ms);
    dropEarlierIdDbs(env);
    // What an earlier auditmesh's migration had written before it was cut short: rebuilt above.
    if (dbNames(env).includes(EARLIER_BATCHES_DB)) env.openDB({ name: EARLIER_BATCHES_DB }).dropSync();
    old.dropSync();
  });
  return done;
}

/** Batches re-indexed or copied per LMDB transaction. */
const BATCHES_PER_TRANSACTION = 256;

/** Calls `each` with every stored batch of `db`, in key order, BATCHES_PER_TRANSACTION to a write transaction. */
function eachBatch(env: RootDatabase, db: Database<Buffer, [string, number]>, each: (key: [string, number], bytes: Buffer) => void): void {
  const keys = Array.from(db.getKeys());
  for (let from = 0; from < keys.length; from += BATCHES_PER_TRANSACTION) {
    env.transactionSync(() => {
      for (const key of keys.slice(from, from + BATCHES_PER_TRANSACTION)) {
        const bytes = db.get(key);
        if (bytes !== undefined) each(key, bytes);
      }
    });
  }
}

/**
 * Stores written before batch values were compressed kept them as they are under `batches`
 * (EARLIER_BATCHES_DB; lmdb-store.ts's BATCHES_DB says why they are now compressed). Opening one
 * copies every value byte for byte into the compressed database, then drops the old one, so
 * nothing verify reads changes: a batch altered by hand is copied altered, and verify names it
 * as before. Crash-safe as the migrations above: while `batches` exists, every open empties the
 * new database and copies again.
 */
export function migrateBatchCompression(stores: CollectorStores, _ids: IdIndexDbs, _dir: string, onStart?: (from: string) => void): LayoutMigration | null {
  const { env } = stores;
  if (!dbNames(env).includes(EARLIER_BATCHES_DB)) return null;
  const done: LayoutMigration = { from: 'uncompressed batch values', sidecars: stores.sidecars.getCount(), batches: 0, records: 0 };
  onStart?.(done.from);
  const old = env.openDB<Buffer, [string, number]>(EARLIER_BATCHES_DB, { encoding: 'binary', compression: false });
  stores.batches.clearSync();
  eachBatch(env, old, (key, bytes) => {
    void stores.batches.put(key, bytes);
    done.batches++;
    try {
      done.records += new BatchBlob(bytes).count;
    } catch (err) {
      if (!(err instanceof BlobError)) throw err;
      done.unreadable = (done.unreadable ?? 0) + 1;
    }
  });
  env.transactionSync(() => old.dropSync());
  return done;
}

/**
 * Stores written before the id index (id-index.ts) kept request ids and trace ids in B-trees of
 * their own (by_correlation, by_trace). Opening one rebuilds the id index from the stored batches'
 * records, as ingest indexes them, then drops those. Crash-safe as the layout migration above:
 * while by_correlation or by_trace exists, every open empties the id index and starts over.
 * Nothing verify reads is touched.
 */
export function migrateIdLayout(stores: CollectorStores, ids: IdIndexDbs, _dir: string, onStart?: (from: string) => void): LayoutMigration | null {
  const { env } = stores;
  if (!EARLIER_ID_DBS.some((name) => dbNames(env).includes(name))) return null;
  const done: LayoutMigration = { from: 'per-record id B-trees', sidecars: stores.sidecars.getCount(), batches: 0, records: 0 };
  onStart?.(done.from);
  clearIds(ids);
  const writer = new IdIndexWriter(env, ids);
  eachBatch(env, stores.batches, ([id, batch], bytes) => {
    let records: IndexedRecord[];
    let blob: BatchBlob;
    try {
      blob = new BatchBlob(bytes);
      records = blob.all().map((b) => ({ bytes: b, index: indexRecord(b) }));
    } catch (err) {
      // A batch altered by hand: verify names it; the collector still opens, without its ids.
      if (!(err instanceof BlobError)) throw err;
      done.unreadable = (done.unreadable ?? 0) + 1;
      return;
    }
    writer.add(id, encodeBatch(id, batch, blob.firstSeq, records).ids);
    done.batches++;
    done.records += records.length;
  });
  env.transactionSync(() => dropEarlierIdDbs(env));
  return done;
}

function linkRecords(old: Database<Buffer, [string, number]>, id: string, firstSeq: number, count: number, batch: number, dir: string): IndexedRecord[] {
  const records: IndexedRecord[] = [];
  for (let seq = firstSeq; seq < firstSeq + count; seq++) {
    const bytes = old.get([id, seq]);
    if (bytes === undefined) throw new Error(`${dir}: migrating this collector store to the one-value-per-batch layout: record ${seq} of sidecar ${id} (batch ${batch}) is missing; the store is left as it is. Verify it with the auditmesh version that wrote it`);
    records.push({ bytes, index: indexRecord(bytes) });
  }
  return records;
}
