import { mkdirSync, realpathSync } from 'node:fs';
import { open, type Database, type Key, type RootDatabase } from 'lmdb';
import { LMDB_WRITER_OPTIONS } from '../../../ledger/lmdb-writer.js';
import { databaseBytes } from '../../../proxy/journal/retention.js';
import { BatchBlob } from './batch-blob.js';
import { INDEX_DBS, type EncodedBatch } from './encoded-batch.js';
import { IdIndexWriter, lookupId, MAX_ID_MATCHES, openIdIndexDbs, TooManyIdMatches, type IdIndexDbs, type IdKind, type IdRef } from './id-index.js';
import { QueryError } from '../api/record-query.js';
import { migrateBatchCompression, migrateIdLayout, migrateRecordLayout, type LayoutMigration } from './store-migration.js';
import type { CollectorStore, Evidence, RecordQuery, SidecarState, StoredLink, StoredRecord, VerifiedAppend } from '../collector-store.js';

/**
 * The collector's embedded store: one LMDB environment (--store), so a collector runs with no
 * other server. The layout (every key an lmdb-js ordered-binary array, so ranges sort by
 * sidecar, then number or time):
 *
 *   sidecars        sidecar id -> SidecarState
 *   links           [sidecar, batch] -> StoredLink: the header exactly as verified, and its leaf hashes
 *   batches_lz4     [sidecar, batch] -> a records batch's records, bytes exactly as hashed (batch-blob.ts),
 *                   LZ4-compressed by lmdb-js on its write threads (BATCHES_DB says why)
 *   by_time         [max_start_ms, sidecar, batch]            every records batch
 *   by_service      [service, max_start_ms, sidecar, batch]   each service a batch's records name, own or peer
 *   errors          [start_ms, sidecar, batch, i]              isErrorRecord (record-index.ts; i: its place in the batch)
 *   meta            'max_span_ms' -> the widest start-time range of any batch (for time scans)
 *   evidence        [received_ms, n] -> Evidence               refused segments, bounded
 *   id_*            request ids and trace ids: a log-structured index (id-index.ts)
 *
 * A batch is one value and its time and service entries are per batch: a record costs its id
 * entries only (measured in bench/ingest.ts: one value per record and five entries each held
 * ingest under 100,000 records/s on the LMDB writes alone), and those are appended, not inserted
 * at random places (id-index.ts says why). Time and service scans read whole batches and merge
 * them newest first (candidates). Index values are empty: the key is the entry. A verified run is
 * one transaction (links, batches, index entries and the sidecar's new position), so the store
 * never holds a record without its link or a position ahead of what it holds.
 */

/** Refused segments kept, oldest dropped first. */
export const EVIDENCE_MAX_ENTRIES = 1000;
const EMPTY = Buffer.alloc(0);
/** Sorts after every sidecar id and every number in an index key. */
const HIGH = '\uffff';

export interface CollectorStores {
  readonly env: RootDatabase;
  readonly sidecars: Database<SidecarState, string>;
  readonly links: Database<StoredLink, [string, number]>;
  readonly batches: Database<Buffer, [string, number]>;
  readonly byTime: Database<Buffer, Key>;
  readonly byService: Database<Buffer, Key>;
  readonly errors: Database<Buffer, Key>;
  readonly meta: Database<number, string>;
  readonly evidence: Database<Evidence, [number, number]>;
}

/**
 * Batch values are LZ4-compressed, by lmdb-js on the threads that write them, never on the event
 * loop. Records are JSON with the same keys and many of the same values (bench/ingest.ts's,
 * random ids and all, compress 5.3x). Every value's bytes are copied twice on the way to disk
 * (into LMDB's dirty pages, then into the page cache), and on this project's reference VM each
 * fresh page costs a fault of ~15 µs (bench/README.md), so writing fewer bytes costs less CPU
 * than compressing them. Measured in bench/ingest.ts, alternating with the uncompressed store:
 * the store alone took 274,000-379,000 records/s against 200,000-234,000, and ingest spent 1.5-2.7
 * µs of CPU a record less. Stores written before kept them uncompressed under EARLIER_BATCHES_DB;
 * a collector migrates them when it opens one (store-migration.ts). A value whose LZ4 stream was
 * altered on disk does not throw: lmdb-js logs its bytes to stderr and yields what it decoded, or
 * its stale decompression buffer, and verify names the batch (its records no longer hash to
 * their leaves).
 */
export const BATCHES_DB = 'batches_lz4';
export const EARLIER_BATCHES_DB = 'batches';

/**
 * The sub-databases of a collector store, with their encodings, but for the id index's; shared
 * with the offline verifier, which reads an unmigrated store's uncompressed batches (`batches`:
 * EARLIER_BATCHES_DB) where they are.
 */
export function openCollectorStores(env: RootDatabase, { batches = BATCHES_DB }: { batches?: string } = {}): CollectorStores {
  const index = (name: string): Database<Buffer, Key> => env.openDB<Buffer, Key>(name, { encoding: 'binary', compression: false });
  return {
    env,
    sidecars: env.openDB<SidecarState, string>('sidecars', { encoding: 'msgpack' }),
    links: env.openDB<StoredLink, [string, number]>('links', { encoding: 'msgpack' }),
    batches: env.openDB<Buffer, [string, number]>(batches, { encoding: 'binary', compression: batches === BATCHES_DB }),
    byTime: index('by_time'),
    byService: index('by_service'),
    errors: index('errors'),
    meta: env.openDB<number, string>('meta', { encoding: 'msgpack' }),
    evidence: env.openDB<Evidence, [number, number]>('evidence', { encoding: 'msgpack' }),
  };
}

export interface LmdbStoreOptions {
  /** Hears of a migration before it starts, with the layout it migrates from. */
  onMigrating?: (from: string) => void;
  /** Id index entries sorted into one segment (id-index.ts; tests make it small). */
  sealEntries?: number;
  /** Hears of an id index merge that failed (its segments stay as they were; the next merge tries again). */
  onIndexError?: (err: Error) => void;
  /** The most records a correlation id or trace id query gathers before it sorts them; past it the query is refused (QueryError). */
  maxIdMatches?: number;
}

/**
 * Opens (creating if absent) the store in `dir`, migrating an earlier layout first
 * (store-migration.ts). Never open one environment twice in a process (lmdb-js#164).
 */
export function openLmdbStore(dir: string, { onMigrating, sealEntries, onIndexError, maxIdMatches = MAX_ID_MATCHES }: LmdbStoreOptions = {}): CollectorStore & { readonly stores: CollectorStores; readonly ids: IdIndexDbs; readonly migrated: LayoutMigration[]; indexMerged(): Promise<void> } {
  mkdirSync(dir, { recursive: true });
  // As the journal opens its own (lmdb-writer.ts): one explicit batch() per run, each with its own
  // `flushed`, and no overlapping sync: a commit is on disk when it resolves. Room for the
  // databases of this layout and of the ones it migrates from.
  const env = open({ path: realpathSync(dir), maxDbs: 32, ...LMDB_WRITER_OPTIONS });
  const stores = openCollectorStores(env);
  const ids = openIdIndexDbs(env);
  const migrated: LayoutMigration[] = [];
  let writer: IdIndexWriter;
  try {
    for (const step of [migrateRecordLayout, migrateBatchCompression, migrateIdLayout]) {
      const done = step(stores, ids, dir, onMigrating);
      if (done !== null) migrated.push(done);
    }
    writer = new IdIndexWriter(env, ids, sealEntries, onIndexError);
  } catch (err) {
    void env.close();
    throw err;
  }
  const span = { ms: stores.meta.get(MAX_SPAN) ?? 0 };
  /** Settles once the write is flushed to disk: an Ack means flushed. */
  const durable = async (write: Promise<unknown> & { flushed?: PromiseLike<unknown> }): Promise<void> => {
    await write;
    await (write.flushed ?? stores.env.flushed);
  };
  let evidenceCount = stores.evidence.getCount();
  let evidenceSerial = 0;

  return {
    stores,
    ids,
    migrated,
    async sidecars() {
      return Array.from(stores.sidecars.getRange(), ({ value }) => value);
    },
    async link(sidecarId, batch) {
      return stores.links.get([sidecarId, batch]);
    },
    append(run) {
      const ticket = writer.begin();
      let write: Promise<void>;
      try {
        write = durable(stores.env.batch(() => writeRun(stores, writer, run, span)));
      } catch (err) {
        // What the callback queued before it threw still commits: settle once it has.
        void stores.env.committed.then(() => writer.settle(ticket, false));
        return Promise.reject(err as Error);
      }
      return write.then(
        () => writer.settle(ticket, true),
        (err: unknown) => {
          writer.settle(ticket, false);
          throw err;
        },
      );
    },
    putSidecar(state) {
      return durable(stores.sidecars.put(state.id, state));
    },
    keepEvidence(evidence) {
      return stores.env
        .batch(() => {
          void stores.evidence.put([evidence.received_unix_ms, evidenceSerial++], evidence);
          evidenceCount++;
          for (const { key } of stores.evidence.getRange({ limit: Math.max(0, evidenceCount - EVIDENCE_MAX_ENTRIES) })) {
            void stores.evidence.remove(key);
            evidenceCount--;
          }
        })
        .then(() => undefined);
    },
    async evidence() {
      return Array.from(stores.evidence.getRange(), ({ value }) => value);
    },
    query: (q) => candidates(stores, ids, () => writer.logView(), q, span.ms, maxIdMatches),
    usedBytes() {
      const { env, ...dbs } = stores;
      return databaseBytes([env, ...Object.values(dbs), ...Object.values(ids)]);
    },
    /** Settles once no id index merge is running or due. */
    indexMerged: () => writer.merged(),
    async close() {
      await writer.stop();
      await stores.env.close();
    },
  };
}

export const MAX_SPAN = 'max_span_ms';

function writeRun(stores: CollectorStores, ids: IdIndexWriter, run: VerifiedAppend, span: { ms: number }): void {
  const id = run.sidecar.id;
  let k = 0;
  for (const link of run.links) {
    void stores.links.put([id, link.batch], link);
    if (link.kind !== 'records') continue;
    const batch = run.batches[k++];
    if (batch?.batch !== link.batch || batch.count !== link.count || batch.firstSeq !== link.first_seq) throw new Error(`batch ${link.batch} of sidecar ${id}: the run does not hold its ${link.count} records from seq ${link.first_seq}`);
    writeBatch(stores, ids, id, batch, span);
  }
  if (k !== run.batches.length) throw new Error(`a run of sidecar ${id} holds ${run.batches.length} batches for ${k} records links`);
  void stores.sidecars.put(id, run.sidecar);
}

/** A records link's batch value and index entries, as encoded (encoded-batch.ts); its link is written by the caller. In a write transaction. */
export function writeBatch(stores: CollectorStores, ids: IdIndexWriter, id: string, b: EncodedBatch, span: { ms: number }): void {
  void stores.batches.put([id, b.batch], b.blob);
  for (let j = 0, from = 0; j < b.keyEnds.length; from = b.keyEnds[j++]) {
    // Keys already encoded: lmdb-js writes a Uint8Array key as it is.
    void stores[INDEX_DBS[b.keyDbs[j]]].put(b.keys.subarray(from, b.keyEnds[j]) as unknown as Key, EMPTY);
  }
  if (b.span > span.ms) void stores.meta.put(MAX_SPAN, (span.ms = b.span));
  ids.add(id, b.ids);
}

interface Candidate extends StoredRecord {
  start: number;
}

/** Newest first; ties by sidecar, then sequence, both descending (the order of the per-record indexes). */
const newestFirst = (a: Candidate, b: Candidate): number => b.start - a.start || (a.sidecar < b.sidecar ? 1 : a.sidecar > b.sidecar ? -1 : b.seq - a.seq);

/**
 * Records that may match `q`, newest first, from the narrowest index that applies; the caller
 * (record-query.ts) applies the whole filter. A correlation id or trace id query reads the id
 * index, an errors-only query the per-record errors entries; a service or time query reads whole batches, newest batch first,
 * and holds a batch's records back until no batch still to read can hold a newer one.
 */
function* candidates(stores: CollectorStores, ids: IdIndexDbs, log: () => readonly Buffer[], q: RecordQuery, maxSpanMs: number, maxIdMatches: number): Iterable<StoredRecord> {
  const since = q.sinceUnixMs ?? 0;
  const until = q.untilUnixMs ?? Number.MAX_SAFE_INTEGER;
  let last: { sidecar: string; batch: number; blob: BatchBlob | null } | undefined;
  const blobOf = (sidecar: string, batch: number): BatchBlob | null => {
    if (last?.sidecar !== sidecar || last.batch !== batch) {
      const bytes = stores.batches.get([sidecar, batch]);
      last = { sidecar, batch, blob: bytes === undefined ? null : new BatchBlob(bytes) };
    }
    return last.blob;
  };
  const id: [IdKind, string] | undefined = q.correlationId !== undefined ? ['correlation', q.correlationId] : q.traceId !== undefined ? ['trace', q.traceId] : undefined;
  if (id !== undefined) {
    let refs: IdRef[];
    try {
      refs = lookupId(ids, ...id, { since, until, max: maxIdMatches, log: log() });
    } catch (err) {
      if (!(err instanceof TooManyIdMatches)) throw err;
      throw new QueryError(`${id[0] === 'correlation' ? 'correlation_id' : 'trace_id'} ${JSON.stringify(id[1])}: ${err.message}${q.sinceUnixMs === undefined && q.untilUnixMs === undefined ? '' : ' in that time range'}; narrow it with since and until`);
    }
    // Newest first, as the per-record indexes order: ties by sidecar, batch, place, descending.
    refs.sort((a, b) => b.start - a.start || (a.sidecar < b.sidecar ? 1 : a.sidecar > b.sidecar ? -1 : b.batch - a.batch || b.i - a.i));
    for (const { sidecar, batch, i } of refs) {
      const blob = blobOf(sidecar, batch);
      if (blob !== null && i < blob.count) yield { sidecar, seq: blob.firstSeq + i, bytes: blob.bytes(i) };
    }
    return;
  }
  if ((q.service ?? q.peer) === undefined && q.status !== undefined && 'error' in q.status && q.status.error) {
    // Reverse range: from the high end (inclusive of `until`) down to the low end.
    for (const key of stores.errors.getKeys({ start: [until, HIGH], end: [since], reverse: true })) {
      const k = key as (string | number)[];
      const [sidecar, batch, i] = k.slice(-3) as [string, number, number];
      const blob = blobOf(sidecar, batch);
      if (blob !== null && i < blob.count) yield { sidecar, seq: blob.firstSeq + i, bytes: blob.bytes(i) };
    }
    return;
  }
  const side = q.service ?? q.peer;
  const [db, prefix] = side !== undefined ? [stores.byService, [side]] : [stores.byTime, []];
  // A batch keyed by its newest record may hold records up to the widest span older than that.
  const top = Math.min(Number.MAX_SAFE_INTEGER, until + maxSpanMs);
  const held: Candidate[] = [];
  /** Yields the held records newer than `bound`: no batch still to read holds a record newer than it. */
  function* release(bound: number): Iterable<StoredRecord> {
    held.sort(newestFirst);
    let n = 0;
    while (n < held.length && held[n].start > bound) n++;
    for (const { sidecar, seq, bytes } of held.splice(0, n)) yield { sidecar, seq, bytes };
  }
  for (const key of db.getKeys({ start: [...prefix, top, HIGH], end: [...prefix, since], reverse: true })) {
    const k = key as (string | number)[];
    const [max, sidecar, batch] = k.slice(-3) as [number, string, number];
    yield* release(max);
    const blob = blobOf(sidecar, batch);
    if (blob === null) continue;
    for (let i = 0; i < blob.count; i++) {
      const start = blob.start(i);
      if (start >= since && start <= until) held.push({ start, sidecar, seq: blob.firstSeq + i, bytes: blob.bytes(i) });
    }
  }
  yield* release(Number.NEGATIVE_INFINITY);
}
