import type { Database, Key, RootDatabase } from 'lmdb';
import type { Evidence, SidecarState, StoredLink } from '../collector-store.js';

/**
 * The collector's embedded store: one LMDB environment (--store), so a collector runs with no
 * other server. Everything is kept per chain: a sidecar has one chain per incarnation, stored
 * under its chain key (chain-key.ts): `SIDECAR_ID@POD_UID` when a ServiceAccount token named the
 * pod's uid, the sidecar id alone otherwise. The layout (every key an lmdb-js ordered-binary
 * array, so ranges sort by chain, then number or time):
 *
 *   sidecars        chain -> SidecarState (its sidecar id and incarnation inside)
 *   links           [chain, batch] -> StoredLink: the header exactly as verified, and its leaf hashes
 *   batches_lz4     [chain, batch] -> a records batch's records, bytes exactly as hashed (batch-blob.ts),
 *                   LZ4-compressed by lmdb-js on its write threads (BATCHES_DB says why)
 *   identities      [chain, batch] -> the SPIFFE ID the writer's stream proved when the batch was
 *                   stored (the collector's stamp, `audit.identity` when read); none: no entry
 *   by_time         [max_start_ms, chain, batch]            every records batch
 *   by_service      [service, max_start_ms, chain, batch]   each service a batch's records name, own or peer
 *   by_identity     [spiffe_id, max_start_ms, chain, batch] every stamped records batch
 *   errors          [start_ms, chain, batch, i]              isErrorRecord (record-index.ts; i: its place in the batch)
 *   meta            'max_span_ms' -> the widest start-time range of any batch (for time scans)
 *   evidence        [received_ms, n] -> Evidence               refused segments, bounded
 *   id_*            request ids and trace ids: a log-structured index (id-index.ts), chains by number
 *   witness_*       the collector's witness log of what this store holds, its signed tree heads and
 *                   the heads it witnessed (../witness/witness-dbs.ts; a pruning of whole batches is
 *                   to be appended there as a signed `prune` entry, docs/BUNDLE.md)
 *   pruned, prunes  where each pruned chain now starts, and every pruning (prune-log.ts, store-pruner.ts)
 *   export_cursor   chain -> the last batch the OTLP receiver accepted (export/otlp-export.ts)
 *   reconciled      [call start_ms, chain, seq of its first end] -> a decided call (../reconcile/reconciled-call.ts)
 *   reconcile_open  request id, trace id, span id -> a call still open when the collector closed,
 *                   taken up and cleared at the next start (../reconcile/call-reconciler.ts)
 *
 * A batch is one value and its time, service and identity entries are per batch: a record costs its id
 * entries only (one value and five entries per record held ingest below its target on the LMDB
 * writes alone: bench/README.md, "Figures behind the code"), and those are appended, not inserted at random places (id-index.ts). Time, service and identity scans read whole batches and merge
 * them newest first (candidates). Index values are empty: the key is the entry. A verified run is
 * one transaction (links, batches, stamps, index entries and the chain's new position), so the store
 * never holds a record without its link or a position ahead of what it holds. The identity stamp
 * is the collector's word on who wrote a batch, not the sidecar's: the chain's hashes and
 * signatures do not cover it.
 */

export interface CollectorStores {
  readonly env: RootDatabase;
  readonly sidecars: Database<SidecarState, string>;
  readonly links: Database<StoredLink, [string, number]>;
  readonly batches: Database<Buffer, [string, number]>;
  readonly identities: Database<string, [string, number]>;
  readonly byTime: Database<Buffer, Key>;
  readonly byService: Database<Buffer, Key>;
  readonly byIdentity: Database<Buffer, Key>;
  readonly errors: Database<Buffer, Key>;
  readonly meta: Database<number, string>;
  readonly evidence: Database<Evidence, [number, number]>;
}

/**
 * Batch values are LZ4-compressed, by lmdb-js on the threads that write them, never on the event
 * loop: records compress well, and a fresh page costs more CPU than compressing it
 * (bench/README.md, "Figures behind the code").
 * A value whose LZ4 stream was altered on disk does not throw: lmdb-js logs it and yields what it
 * decoded, and verify names the batch (its records no longer hash to their leaves).
 */
export const BATCHES_DB = 'batches_lz4';

/** The sub-databases of a collector store, with their encodings, but for the id index's; shared with the offline verifier. */
export function openCollectorStores(env: RootDatabase): CollectorStores {
  const index = (name: string): Database<Buffer, Key> => env.openDB<Buffer, Key>(name, { encoding: 'binary', compression: false });
  return {
    env,
    sidecars: env.openDB<SidecarState, string>('sidecars', { encoding: 'msgpack' }),
    links: env.openDB<StoredLink, [string, number]>('links', { encoding: 'msgpack' }),
    batches: env.openDB<Buffer, [string, number]>(BATCHES_DB, { encoding: 'binary', compression: true }),
    identities: env.openDB<string, [string, number]>('identities', { encoding: 'string' }),
    byTime: index('by_time'),
    byService: index('by_service'),
    byIdentity: index('by_identity'),
    errors: index('errors'),
    meta: env.openDB<number, string>('meta', { encoding: 'msgpack' }),
    evidence: env.openDB<Evidence, [number, number]>('evidence', { encoding: 'msgpack' }),
  };
}

/**
 * Databases only the development layouts before 0.1.0 had; no release wrote them, and no
 * release reads them: a store that has one is refused, named, and left as it is.
 */
const EARLIER_LAYOUTS: ReadonlyArray<{ db: string; layout: string }> = [
  { db: 'records', layout: 'one value per record' },
  { db: 'batches', layout: 'uncompressed batch values' },
  { db: 'by_correlation', layout: 'per-record id B-trees' },
  { db: 'by_trace', layout: 'per-record id B-trees' },
];

/** Throws, naming the layout, when the store in `dir` (whose databases are `names`) is of a layout from before 0.1.0. */
export function refuseEarlierLayout(dir: string, names: readonly string[]): void {
  const earlier = EARLIER_LAYOUTS.find(({ db }) => names.includes(db));
  if (earlier === undefined) return;
  throw new Error(`${dir} is a collector store in a layout from before auditmesh 0.1.0 (${earlier.layout}, database ${JSON.stringify(earlier.db)}), which no release reads: it is left as it is; start the collector on an empty --store directory`);
}
