import type { Database } from 'lmdb';
import { encodeBatch, type IndexedRecord } from './encoded-batch.js';
import { type CollectorStores, MAX_SPAN, writeBatch } from './lmdb-store.js';
import { indexRecord } from './record-index.js';

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
  sidecars: number;
  batches: number;
  records: number;
}

export function migrateRecordLayout(stores: CollectorStores, dir: string, onStart?: () => void): LayoutMigration | null {
  const { env } = stores;
  if (!Array.from(env.getKeys(), String).includes('records')) return null;
  onStart?.();
  const old = env.openDB<Buffer, [string, number]>('records', { encoding: 'binary', compression: false });
  for (const db of [stores.batches, stores.byTime, stores.byService, stores.byCorrelation, stores.byTrace, stores.errors, stores.meta]) db.clearSync();
  const span = { ms: 0 };
  const done: LayoutMigration = { sidecars: 0, batches: 0, records: 0 };
  for (const { value: state } of stores.sidecars.getRange()) {
    done.sidecars++;
    const links = Array.from(stores.links.getRange({ start: [state.id, 0], end: [state.id, Number.MAX_SAFE_INTEGER] }), ({ value }) => value);
    for (let from = 0; from < links.length; from += LINKS_PER_TRANSACTION) {
      env.transactionSync(() => {
        for (const link of links.slice(from, from + LINKS_PER_TRANSACTION)) {
          if (link.kind !== 'records') continue;
          const records = linkRecords(old, state.id, link.first_seq, link.count, link.batch, dir);
          writeBatch(stores, state.id, encodeBatch(state.id, link.batch, link.first_seq, records), span);
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
    old.dropSync();
  });
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
