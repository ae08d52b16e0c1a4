import { writeKey } from 'ordered-binary';
import type { ExchangeSummary } from '../../../anomalies/exchange-summary.js';
import { encodeBatchBlob } from './batch-blob.js';
import { ENTRY_BYTES, writeIdEntry } from './id-index.js';
import type { RecordIndex } from './record-index.js';
import type { CallEnd } from '../reconcile/call-end.js';

/**
 * One records batch ready for the store, everything per record already done: its value
 * (batch-blob.ts) and every index entry's key, encoded as lmdb-js encodes a key array (with
 * ordered-binary's writeKey, the function lmdb-js itself calls, so the bytes are the ones a
 * query's range is compared with). Ingest's hashing workers build these, so the collector's
 * event loop only puts buffers; the store migration and tests build them with the same function.
 */

/** The index databases, by their number in `keyDbs` (the names of lmdb-store.ts's CollectorStores). */
export const INDEX_DBS = ['errors', 'byTime', 'byService'] as const;
export type IndexDb = (typeof INDEX_DBS)[number];
const DB = { errors: 0, byTime: 1, byService: 2 } as const satisfies Record<IndexDb, number>;

/** Finished exchanges of one kind in a batch, as fleet anomaly detection reads them. */
export type ExchangeGroup = Omit<ExchangeSummary, 'endUnixMs'> & { ends: Float64Array };

export interface EncodedBatch {
  batch: number;
  firstSeq: number;
  count: number;
  /** The batch's value: its records' bytes exactly as hashed, with their start times. */
  blob: Buffer;
  /** Every index entry's key, back to back: entry j ends at keyEnds[j] and goes to INDEX_DBS[keyDbs[j]]. */
  keys: Buffer;
  keyEnds: Uint32Array;
  keyDbs: Uint8Array;
  /** Its records' request id and trace id entries for the id index (id-index.ts), their sidecar number unset. */
  ids: Buffer;
  /** Newest minus oldest start time of its indexed records (0 when none). */
  span: number;
  /** The newest start time of its indexed records (the time in its by_time key; 0 when none). */
  newest: number;
  /**
   * The SPIFFE ID its writer's stream proved (the client certificate's, or the ServiceAccount
   * token's): set by ingest on the event loop, never by the worker, and stored beside the batch,
   * not in it (the records' bytes stay as hashed).
   */
  identity?: string;
  /** Its records that are finished exchanges, grouped by edge, method and outcome. */
  exchanges: ExchangeGroup[];
  /** Its records that are ends of calls, for reconciliation (absent: none read). */
  calls?: CallEnd[];
}

/** A record as the encoder takes it: canonical bytes and what indexRecord read of them (null: not JSON, stored unindexed). */
export interface IndexedRecord {
  bytes: Uint8Array;
  index: RecordIndex | null;
}

/**
 * The blob, keys, id entries and exchange groups of one batch of sidecar `id`. The keys are those
 * of lmdb-store.ts's layout: per record [start, sidecar, batch, i] when it is an error; per batch
 * [newest start, sidecar, batch] and [service, newest start, sidecar, batch] for each service its
 * records name, own or peer. Per record, an id entry for its request id and one for its trace id
 * when it has them.
 */
export function encodeBatch(id: string, batch: number, firstSeq: number, records: readonly IndexedRecord[]): EncodedBatch {
  const blob = encodeBatchBlob(firstSeq, records.map((r) => ({ bytes: r.bytes, start: r.index?.start ?? 0 })));
  let keys = Buffer.allocUnsafeSlow(Math.max(4096, records.length * 160));
  const keyEnds: number[] = [];
  const dbs: number[] = [];
  let at = 0;
  const entry = (db: number, key: unknown[]): void => {
    // A key is at most LMDB's 1,978 bytes (ids are indexed up to 256 characters); writeKey may
    // also write a 4-byte terminator past the key's end.
    if (at + 2048 > keys.length) {
      const bigger = Buffer.allocUnsafeSlow(keys.length * 2);
      keys.copy(bigger, 0, 0, at);
      keys = bigger;
    }
    at = writeKey(key as never, keys, at);
    keyEnds.push(at);
    dbs.push(db);
  };
  let min = Number.POSITIVE_INFINITY;
  let max = Number.NEGATIVE_INFINITY;
  const services = new Set<string>();
  const ids = Buffer.allocUnsafeSlow(records.length * 2 * ENTRY_BYTES);
  let nIds = 0;
  const groups = new Map<string, { group: Omit<ExchangeGroup, 'ends'>; ends: number[] }>();
  const calls: CallEnd[] = [];
  for (let i = 0; i < records.length; i++) {
    const index = records[i].index;
    if (index === null) continue;
    const { start } = index;
    if (start < min) min = start;
    if (start > max) max = start;
    services.add(index.service);
    if (index.peer !== undefined) services.add(index.peer);
    if (index.requestId !== undefined) writeIdEntry(ids, nIds++, 'correlation', index.requestId, start, batch, i);
    if (index.traceId !== undefined) writeIdEntry(ids, nIds++, 'trace', index.traceId, start, batch, i);
    if (index.error) entry(DB.errors, [start, id, batch, i]);
    if (index.call !== null) calls.push({ ...index.call, seq: firstSeq + i });
    const e = index.exchange;
    if (e !== null) {
      const key = `${e.peer}\u0000${e.direction}\u0000${e.method}\u0000${e.failed}`;
      let g = groups.get(key);
      if (g === undefined) groups.set(key, (g = { group: { peer: e.peer, direction: e.direction, method: e.method, failed: e.failed }, ends: [] }));
      g.ends.push(e.endUnixMs);
    }
  }
  if (services.size > 0) {
    entry(DB.byTime, [max, id, batch]);
    for (const service of services) entry(DB.byService, [service, max, id, batch]);
  }
  // Buffers of their own (not the pool's), so a worker can transfer them.
  const packed = Buffer.allocUnsafeSlow(at);
  keys.copy(packed, 0, 0, at);
  return {
    batch,
    firstSeq,
    count: records.length,
    blob,
    keys: packed,
    keyEnds: Uint32Array.from(keyEnds),
    keyDbs: Uint8Array.from(dbs),
    ids: ids.subarray(0, nIds * ENTRY_BYTES),
    span: services.size > 0 ? max - min : 0,
    newest: services.size > 0 ? max : 0,
    exchanges: Array.from(groups.values(), ({ group, ends }) => ({ ...group, ends: Float64Array.from(ends) })),
    calls,
  };
}

/** Entry j of a batch: its database and key (a view into `keys`). */
export function batchEntries(b: EncodedBatch): Array<{ db: IndexDb; key: Buffer }> {
  return Array.from(b.keyEnds, (end, j) => ({ db: INDEX_DBS[b.keyDbs[j]], key: b.keys.subarray(j === 0 ? 0 : b.keyEnds[j - 1], end) }));
}

/** The buffers of a batch a worker hands over without copying. */
export function transferables(b: EncodedBatch): ArrayBuffer[] {
  return [b.blob.buffer, b.keys.buffer, b.keyEnds.buffer, b.keyDbs.buffer, b.ids.buffer, ...b.exchanges.map((g) => g.ends.buffer)] as ArrayBuffer[];
}

/** A batch as it arrives from a worker: postMessage delivers Buffers as plain Uint8Arrays. */
export function received(b: EncodedBatch): EncodedBatch {
  const buf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
  return { ...b, blob: buf(b.blob), keys: buf(b.keys), ids: buf(b.ids) };
}

/** Each records link's batch of `records` (the links' records, in order), for a run built by hand (tests, benchmarks). */
export function encodeLinks(id: string, links: ReadonlyArray<{ kind: string; batch: number; first_seq: number; count: number }>, records: readonly IndexedRecord[]): EncodedBatch[] {
  let at = 0;
  return links.flatMap((l) => (l.kind === 'records' ? [encodeBatch(id, l.batch, l.first_seq, records.slice(at, (at += l.count)))] : []));
}
