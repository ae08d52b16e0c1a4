import { mkdirSync, realpathSync } from 'node:fs';
import { open, type Database, type Key, type RootDatabase } from 'lmdb';
import { databaseBytes } from '../../proxy/journal/retention.js';
import type { CollectorStore, Evidence, RecordQuery, SidecarState, StoredLink, StoredRecord, VerifiedAppend } from './collector-store.js';

/**
 * The collector's embedded store: one LMDB environment (--store), so a collector runs with no
 * other server. The layout (every key an lmdb-js ordered-binary array, so ranges sort by
 * sidecar, then number or time):
 *
 *   sidecars        sidecar id -> SidecarState
 *   links           [sidecar, batch] -> StoredLink: the header exactly as verified, and its leaf hashes
 *   records         [sidecar, seq] -> canonical record bytes, exactly as hashed
 *   by_time         [start_ms, sidecar, seq]            every record
 *   by_service      [service, start_ms, sidecar, seq]   under its own service and under its peer
 *   by_correlation  [request id, start_ms, sidecar, seq]
 *   by_trace        [trace id, start_ms, sidecar, seq]
 *   errors          [start_ms, sidecar, seq]            isErrorRecord (record-index.ts)
 *   evidence        [received_ms, n] -> Evidence        refused segments, bounded
 *
 * Index values are empty: the key is the entry. A verified run is one transaction (links,
 * records, index entries and the sidecar's new position), so the store never holds a record
 * without its link or a position ahead of what it holds.
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
  readonly records: Database<Buffer, [string, number]>;
  readonly byTime: Database<Buffer, Key>;
  readonly byService: Database<Buffer, Key>;
  readonly byCorrelation: Database<Buffer, Key>;
  readonly byTrace: Database<Buffer, Key>;
  readonly errors: Database<Buffer, Key>;
  readonly evidence: Database<Evidence, [number, number]>;
}

/** The sub-databases of a collector store, with their encodings; shared with the offline verifier. */
export function openCollectorStores(env: RootDatabase): CollectorStores {
  const index = (name: string): Database<Buffer, Key> => env.openDB<Buffer, Key>(name, { encoding: 'binary', compression: false });
  return {
    env,
    sidecars: env.openDB<SidecarState, string>('sidecars', { encoding: 'msgpack' }),
    links: env.openDB<StoredLink, [string, number]>('links', { encoding: 'msgpack' }),
    records: env.openDB<Buffer, [string, number]>('records', { encoding: 'binary', compression: false }),
    byTime: index('by_time'),
    byService: index('by_service'),
    byCorrelation: index('by_correlation'),
    byTrace: index('by_trace'),
    errors: index('errors'),
    evidence: env.openDB<Evidence, [number, number]>('evidence', { encoding: 'msgpack' }),
  };
}

/** Opens (creating if absent) the store in `dir`. Never open one environment twice in a process (lmdb-js#164). */
export function openLmdbStore(dir: string): CollectorStore & { readonly stores: CollectorStores } {
  mkdirSync(dir, { recursive: true });
  // eventTurnBatching off and one explicit batch() per run, as the journal does (journal.ts);
  // separateFlushed so each write carries its own `flushed`: an ack means on disk, not committed.
  const stores = openCollectorStores(open({ path: realpathSync(dir), eventTurnBatching: false, separateFlushed: true }));
  /** Settles once the write is flushed to disk: with overlappingSync (Linux) a commit alone survives a crash of the process, not of the machine. */
  const durable = async (write: Promise<unknown> & { flushed?: PromiseLike<unknown> }): Promise<void> => {
    await write;
    await (write.flushed ?? stores.env.flushed);
  };
  let evidenceCount = stores.evidence.getCount();
  let evidenceSerial = 0;

  return {
    stores,
    async sidecars() {
      return Array.from(stores.sidecars.getRange(), ({ value }) => value);
    },
    async link(sidecarId, batch) {
      return stores.links.get([sidecarId, batch]);
    },
    append(run) {
      return durable(stores.env.batch(() => writeRun(stores, run)));
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
    query: (q) => candidates(stores, q),
    usedBytes() {
      const { env, ...dbs } = stores;
      return databaseBytes([env, ...Object.values(dbs)]);
    },
    close: () => stores.env.close(),
  };
}

function writeRun(stores: CollectorStores, run: VerifiedAppend): void {
  const id = run.sidecar.id;
  for (const link of run.links) void stores.links.put([id, link.batch], link);
  for (const { seq, bytes, index } of run.records) {
    void stores.records.put([id, seq], bytes);
    if (index === null) continue;
    const { start } = index;
    void stores.byTime.put([start, id, seq], EMPTY);
    void stores.byService.put([index.service, start, id, seq], EMPTY);
    if (index.peer !== undefined && index.peer !== index.service) void stores.byService.put([index.peer, start, id, seq], EMPTY);
    if (index.requestId !== undefined) void stores.byCorrelation.put([index.requestId, start, id, seq], EMPTY);
    if (index.traceId !== undefined) void stores.byTrace.put([index.traceId, start, id, seq], EMPTY);
    if (index.error) void stores.errors.put([start, id, seq], EMPTY);
  }
  void stores.sidecars.put(id, run.sidecar);
}

/**
 * Records that may match `q`, newest first, from the narrowest index that applies; the caller
 * (record-query.ts) applies the whole filter. Reads one snapshot per call.
 */
function* candidates(stores: CollectorStores, q: RecordQuery): Iterable<StoredRecord> {
  const since = q.sinceUnixMs ?? 0;
  const until = q.untilUnixMs ?? Number.MAX_SAFE_INTEGER;
  const [db, prefix] =
    q.correlationId !== undefined
      ? [stores.byCorrelation, [q.correlationId]]
      : q.traceId !== undefined
        ? [stores.byTrace, [q.traceId]]
        : (q.service ?? q.peer) !== undefined
          ? [stores.byService, [(q.service ?? q.peer)!]]
          : q.status !== undefined && 'error' in q.status && q.status.error
            ? [stores.errors, []]
            : [stores.byTime, []];
  // Reverse range: from the high end (inclusive of `until`) down to the low end.
  const range = db.getKeys({ start: [...prefix, until, HIGH], end: [...prefix, since], reverse: true });
  for (const key of range) {
    const k = key as (string | number)[];
    const sidecar = k[k.length - 2] as string;
    const seq = k[k.length - 1] as number;
    const bytes = stores.records.get([sidecar, seq]);
    if (bytes !== undefined) yield { sidecar, seq, bytes };
  }
}
