import { statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { databaseBytes } from '../../ledger/database-bytes.js';
import { epochKeyThrough } from '../../ledger/key-endorsement.js';
import { headerEntries, readPrunedFrom } from '../../ledger/read-journal.js';
import type { BatchHeader, JournalStores, PrunedMark } from '../../ledger/journal-layout.js';

/**
 * What the journal may drop and how big it is. A link is prunable once it is older than the
 * retention period and, when a collector is configured, once the collector has acknowledged it:
 * an unacknowledged link is never pruned by age (the journal bound still protects the disk).
 * Near the bound, acknowledged links are pruned whatever their age (planPressurePrune).
 */

/**
 * The time retention ages links by: the wall clock, but never further ahead of the last reading
 * than the monotonic clock has moved plus CLOCK_STEP_MS. A wall clock stepped forward (NTP after
 * a bad boot clock, a VM restored, an operator's mistake) would otherwise make every link look old
 * at once and prune the audit trail in one go; after such a step links age by elapsed time until
 * the next start (the journal bound still protects the disk). Smaller differences (NTP slewing,
 * which adds up over weeks) and steps back (which only delay pruning) are taken as they come.
 */
export interface RetentionClock {
  /** The time to age links by, and how far the wall clock is ahead of it (0: in step). */
  read(): { nowUnixMs: number; aheadMs: number };
}

/** A wall clock further ahead than this of the elapsed time since the last reading is a step. */
export const CLOCK_STEP_MS = 60_000;

export function retentionClock(wallNow: () => number = Date.now, monoNow: () => number = () => performance.now()): RetentionClock {
  let wall0 = wallNow();
  let mono0 = monoNow();
  return {
    read() {
      const wall = wallNow();
      const mono = monoNow();
      const reckoned = wall0 + (mono - mono0);
      if (wall - reckoned > CLOCK_STEP_MS) return { nowUnixMs: reckoned, aheadMs: wall - reckoned };
      wall0 = wall;
      mono0 = mono;
      return { nowUnixMs: wall, aheadMs: 0 };
    },
  };
}

/** Whole links to delete, oldest first, and the mark the oldest remaining link chains from. */
export interface PrunePlan {
  headers: BatchHeader[];
  records: number;
  mark: PrunedMark;
  /** retention: past the retention period; pressure: acknowledged and the journal near its bound. */
  cause: 'retention' | 'pressure';
}

/**
 * Room made before the bound: at PRESSURE_HIGH_WATER of the limit the oldest acknowledged links
 * are pruned whatever their age, about enough to come back to PRESSURE_LOW_WATER. A busy sidecar
 * with a working collector then never meets its bound; one whose collector is away still does,
 * and the --on-journal-full policy applies, since unacknowledged links are never pruned.
 */
export const PRESSURE_HIGH_WATER = 0.9;
export const PRESSURE_LOW_WATER = 0.8;

/**
 * The pressure prune due now: null below PRESSURE_HIGH_WATER of `limitBytes`, or when nothing
 * through `shippedBatch` (the collector's acknowledged cursor) is left to prune. The record count
 * comes from the average record's share of the pages in use, at most `maxRecords`.
 */
export function planPressurePrune(stores: JournalStores, used: number, limitBytes: number, shippedBatch: number, maxRecords: number): PrunePlan | null {
  if (used < limitBytes * PRESSURE_HIGH_WATER || shippedBatch < 1) return null;
  const count = (stores.records.getStats() as { entryCount: number }).entryCount;
  if (count === 0) return null;
  const excessBytes = used - limitBytes * PRESSURE_LOW_WATER;
  const wanted = Math.min(maxRecords, Math.max(1, Math.ceil(excessBytes / (used / count))));
  const plan = planPrune(stores, Number.POSITIVE_INFINITY, wanted, shippedBatch);
  return plan === null ? null : { ...plan, cause: 'pressure' };
}

/**
 * The oldest links sealed before `cutoffUnixMs` and numbered at most `throughBatch` (the shipped
 * cursor; Infinity without a collector), at most about `maxRecords` records' worth (one commit's
 * share of the deleting), never the last link: the chain keeps a head to continue from.
 * null when nothing is due.
 */
export function planPrune(stores: JournalStores, cutoffUnixMs: number, maxRecords: number, throughBatch = Number.POSITIVE_INFINITY): PrunePlan | null {
  const headers: BatchHeader[] = [];
  let records = 0;
  let last: BatchHeader | undefined;
  for (const { value } of headerEntries(stores)) {
    if (last !== undefined) headers.push(last);
    last = undefined;
    if (value.sealed_unix_ms >= cutoffUnixMs || value.batch > throughBatch || (records > 0 && records + value.count > maxRecords)) break;
    records += value.count;
    last = value;
  }
  // `last` (if still set) is the newest link of the journal: it stays.
  if (headers.length === 0) return null;
  const end = headers[headers.length - 1];
  // Unsigned links end in the same commit, so the same epoch, as the next keyed link after them.
  let epochKey = epochKeyThrough(headers, readPrunedFrom(stores));
  for (const { value } of headerEntries(stores, { fromBatch: end.batch + 1 })) {
    if (epochKey !== undefined) break;
    epochKey = value.key;
  }
  return { headers, records, mark: { last_batch: end.batch, last_seq: end.first_seq + end.count - 1, head: end.head, sealed_unix_ms: end.sealed_unix_ms, epoch_key: epochKey }, cause: 'retention' };
}

/** Deletes a planned prune's links and records; call inside the write transaction. */
export function applyPrune(stores: JournalStores, plan: PrunePlan): void {
  for (const header of plan.headers) {
    for (let seq = header.first_seq; seq < header.first_seq + header.count; seq++) void stores.records.remove(seq);
    void stores.batches.remove(header.batch);
  }
}

/**
 * Bytes of LMDB pages in use by the journal's databases: what the bound (`--journal-limit-bytes`)
 * is about. The data file can be larger: LMDB keeps freed pages in the file for reuse, it never
 * shrinks it. A few tens of microseconds per database: callers sample it, not per record.
 */
export function usedBytes(stores: JournalStores): number {
  return databaseBytes([stores.records, stores.batches, stores.meta, stores.keys]);
}

/**
 * Room for the journal to grow: free space on its filesystem plus the free pages inside its
 * data file (the file minus the pages in use). After a failed commit the journal takes new work
 * again only with this much room: on a nearly full disk a small commit (a checkpoint) still fits
 * in a page LMDB had free, and treating that as recovered would flap between admitting traffic
 * and losing its records.
 */
export function headroomBytes(dir: string, inUseBytes: number): number {
  const fs = statfsSync(dir);
  const fileBytes = statSync(join(dir, 'data.mdb')).size;
  return fs.bavail * fs.bsize + Math.max(0, fileBytes - inUseBytes);
}
