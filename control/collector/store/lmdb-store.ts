import { mkdirSync, realpathSync } from 'node:fs';
import { open, type Key } from 'lmdb';
import { LMDB_WRITER_OPTIONS } from '../../../ledger/lmdb-writer.js';
import { databaseBytes } from '../../../ledger/database-bytes.js';
import { BatchBlob } from './batch-blob.js';
import { INDEX_DBS, type EncodedBatch } from './encoded-batch.js';
import { IdIndexWriter, lookupId, MAX_ID_MATCHES, openIdIndexDbs, TooManyIdMatches, type IdIndexDbs, type IdKind, type IdRef } from './id-index.js';
import { QueryError } from '../api/record-query.js';
import { openCollectorStores, refuseEarlierLayout, type CollectorStores } from './store-layout.js';
import { chainKeyOf } from './chain-key.js';
import type { CollectorStore, RecordQuery, SidecarState, StoredRecord, VerifiedAppend } from '../collector-store.js';

/** Refused segments kept, oldest dropped first. */
export const EVIDENCE_MAX_ENTRIES = 1000;
const EMPTY = Buffer.alloc(0);
/** Sorts after every chain key and every number in an index key. */
const HIGH = '\uffff';

export interface LmdbStoreOptions {
  /** Id index entries sorted into one segment (id-index.ts; tests make it small). */
  sealEntries?: number;
  /** Hears of an id index merge that failed (its segments stay as they were; the next merge tries again). */
  onIndexError?: (err: Error) => void;
  /** The most records a correlation id or trace id query gathers before it sorts them; past it the query is refused (QueryError). */
  maxIdMatches?: number;
}

/**
 * Opens (creating if absent) the store in `dir`; refuses one of a layout from before 0.1.0
 * (store-layout.ts). Never open one environment twice in a process (lmdb-js#164).
 */
export function openLmdbStore(dir: string, { sealEntries, onIndexError, maxIdMatches = MAX_ID_MATCHES }: LmdbStoreOptions = {}): CollectorStore & { readonly stores: CollectorStores; readonly ids: IdIndexDbs; indexMerged(): Promise<void> } {
  mkdirSync(dir, { recursive: true });
  // As the journal opens its own (ledger/lmdb-writer.ts): one explicit batch() per run, each with its own
  // `flushed`, and no overlapping sync: a commit is on disk when it resolves.
  const env = open({ path: realpathSync(dir), maxDbs: 64, ...LMDB_WRITER_OPTIONS });
  let stores: CollectorStores;
  let ids: IdIndexDbs;
  let writer: IdIndexWriter;
  try {
    refuseEarlierLayout(dir, Array.from(env.getKeys(), String));
    stores = openCollectorStores(env);
    ids = openIdIndexDbs(env);
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
    async sidecars() {
      return Array.from(stores.sidecars.getRange(), ({ value }) => value);
    },
    async link(chain, batch) {
      return stores.links.get([chain, batch]);
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
      return durable(stores.sidecars.put(chainKeyOf(state), state));
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
  const id = chainKeyOf(run.sidecar);
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

/** A records link's batch value, identity stamp and index entries, as encoded (encoded-batch.ts); its link is written by the caller. In a write transaction. */
function writeBatch(stores: CollectorStores, ids: IdIndexWriter, id: string, b: EncodedBatch, span: { ms: number }): void {
  void stores.batches.put([id, b.batch], b.blob);
  if (b.identity !== undefined) {
    void stores.identities.put([id, b.batch], b.identity);
    // As by_time's entry: only a batch with an indexed record (b.keys then holds its by_time key).
    if (b.keyDbs.includes(INDEX_DBS.indexOf('byTime'))) void stores.byIdentity.put([b.identity, b.newest, id, b.batch], EMPTY);
  }
  for (let j = 0, from = 0; j < b.keyEnds.length; from = b.keyEnds[j++]) {
    // Keys already encoded: lmdb-js writes a Uint8Array key as it is.
    void stores[INDEX_DBS[b.keyDbs[j]]].put(b.keys.subarray(from, b.keyEnds[j]) as unknown as Key, EMPTY);
  }
  if (b.span > span.ms) void stores.meta.put(MAX_SPAN, (span.ms = b.span));
  ids.add(id, b.ids);
}

interface Candidate extends StoredRecord {
  start: number;
  chain: string;
}

/** Newest first; ties by chain, then sequence, both descending (the order of the per-record indexes). */
const newestFirst = (a: Candidate, b: Candidate): number => b.start - a.start || (a.chain < b.chain ? 1 : a.chain > b.chain ? -1 : b.seq - a.seq);

/** One stored batch as a query reads it: its records, its chain's sidecar id and incarnation, its identity stamp. */
interface ReadBatch {
  blob: BatchBlob;
  sidecar: string;
  incarnation: string;
  identity: string | undefined;
}

/** Record i of a batch as the store answers it. */
function storedRecord(b: ReadBatch, i: number): StoredRecord {
  const rec: StoredRecord = { sidecar: b.sidecar, incarnation: b.incarnation, seq: b.blob.firstSeq + i, bytes: b.blob.bytes(i) };
  if (b.identity !== undefined) rec.identity = b.identity;
  return rec;
}

/**
 * Records that may match `q`, newest first, from the narrowest index that applies; the caller
 * (api/record-query.ts) applies the whole filter. A correlation id or trace id query reads the id
 * index, an identity query the per-batch identity entries, an errors-only query the per-record
 * errors entries; a service or time query reads whole batches, newest batch first, and an identity,
 * service or time scan holds a batch's records back until no batch still to read can hold a newer one.
 */
export function* candidates(stores: CollectorStores, ids: IdIndexDbs, log: () => readonly Buffer[] | undefined, q: RecordQuery, maxSpanMs: number, maxIdMatches: number): Iterable<StoredRecord> {
  const since = q.sinceUnixMs ?? 0;
  const until = q.untilUnixMs ?? Number.MAX_SAFE_INTEGER;
  const chains = new Map<string, SidecarState | undefined>();
  let last: { chain: string; batch: number; read: ReadBatch | null } | undefined;
  const batchOf = (chain: string, batch: number): ReadBatch | null => {
    if (last?.chain !== chain || last.batch !== batch) {
      const bytes = stores.batches.get([chain, batch]);
      if (!chains.has(chain)) chains.set(chain, stores.sidecars.get(chain));
      const state = chains.get(chain);
      const read = bytes === undefined || state === undefined ? null : { blob: new BatchBlob(bytes), sidecar: state.id, incarnation: state.incarnation ?? '', identity: stores.identities.get([chain, batch]) };
      last = { chain, batch, read };
    }
    return last.read;
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
    // Newest first, as the per-record indexes order: ties by chain, batch, place, descending.
    refs.sort((a, b) => b.start - a.start || (a.sidecar < b.sidecar ? 1 : a.sidecar > b.sidecar ? -1 : b.batch - a.batch || b.i - a.i));
    for (const { sidecar: chain, batch, i } of refs) {
      const b = batchOf(chain, batch);
      if (b !== null && i < b.blob.count) yield storedRecord(b, i);
    }
    return;
  }
  if (q.identity === undefined && (q.service ?? q.peer) === undefined && q.status !== undefined && 'error' in q.status && q.status.error) {
    // Reverse range: from the high end (inclusive of `until`) down to the low end.
    for (const key of stores.errors.getKeys({ start: [until, HIGH], end: [since], reverse: true })) {
      const k = key as (string | number)[];
      const [chain, batch, i] = k.slice(-3) as [string, number, number];
      const b = batchOf(chain, batch);
      if (b !== null && i < b.blob.count) yield storedRecord(b, i);
    }
    return;
  }
  const side = q.service ?? q.peer;
  const [db, prefix] = q.identity !== undefined ? [stores.byIdentity, [q.identity]] : side !== undefined ? [stores.byService, [side]] : [stores.byTime, []];
  // A batch keyed by its newest record may hold records up to the widest span older than that.
  const top = Math.min(Number.MAX_SAFE_INTEGER, until + maxSpanMs);
  const held: Candidate[] = [];
  /** Yields the held records newer than `bound`: no batch still to read holds a record newer than it. */
  function* release(bound: number): Iterable<StoredRecord> {
    held.sort(newestFirst);
    let n = 0;
    while (n < held.length && held[n].start > bound) n++;
    for (const { start: _, chain: __, ...rec } of held.splice(0, n)) yield rec;
  }
  for (const key of db.getKeys({ start: [...prefix, top, HIGH], end: [...prefix, since], reverse: true })) {
    const k = key as (string | number)[];
    const [max, chain, batch] = k.slice(-3) as [number, string, number];
    yield* release(max);
    const b = batchOf(chain, batch);
    if (b === null) continue;
    for (let i = 0; i < b.blob.count; i++) {
      const start = b.blob.start(i);
      if (start >= since && start <= until) held.push({ ...storedRecord(b, i), start, chain });
    }
  }
  yield* release(Number.NEGATIVE_INFINITY);
}
