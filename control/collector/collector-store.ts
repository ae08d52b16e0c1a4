import type { BatchHeader } from '../../ledger/journal-layout.js';
import type { ChainPosition } from '../../ledger/link-verifier.js';
import type { RefusalCode } from '../../wire/sync-wire.js';
import type { EncodedBatch } from './store/encoded-batch.js';

/**
 * The seam between the collector's ingest and where it keeps things. Ingest verifies, dedupes
 * and acks against this interface only, and every write is a promise that settles once durable,
 * so an implementation on a replicated log (NATS JetStream, consumers building the indexes) fits
 * behind it as well as the embedded LMDB one (store/lmdb-store.ts).
 */

/**
 * A link as stored: the header exactly as verified, plus its records' leaf hashes (32 bytes each,
 * in order), which the root was verified against. With them, an offline check can name the one
 * record whose bytes changed, not only its batch.
 */
export type StoredLink = BatchHeader & { leaves?: Buffer };

/**
 * What the collector knows of one chain of a sidecar: its pinned key and how far it is stored.
 * A sidecar has one chain per incarnation (store/chain-key.ts); it is stored under
 * chainKeyOf(state).
 */
export interface SidecarState {
  /** The sidecar id (`NS/POD` with a ServiceAccount token), not the chain key. */
  id: string;
  /** The pod uid of the token that opened this chain: its incarnation. Absent: none (a shared token, --insecure). */
  incarnation?: string;
  service: string;
  /** Pinned on first contact; another key is taken only through an endorsed epoch link (previous_keys). */
  key_id: string;
  /** DER SubjectPublicKeyInfo, base64. */
  public_key: string;
  /** The mesh CA certificate (DER, base64) of `key_id` a stream presented over mTLS: the chain's certified identity, which a CA-endorsed key change must continue. */
  certificate?: string;
  /** Keys the chain was signed with before `key_id`, oldest first: each change verified as endorsed (an epoch link signed by the key before, or the new key's mesh CA certificate naming the same identity). Absent: none. */
  previous_keys?: { key_id: string; public_key: string; certificate?: string }[];
  /** The first batch stored (its chain starts after `base_head`). */
  first_batch: number;
  base_head: string;
  /** Where the stored chain ends. */
  position: ChainPosition;
  first_seen_unix_ms: number;
  last_seen_unix_ms: number;
  /** Ranges of its chain that can never arrive (see LostRange); absent when none. */
  lost?: LostRange[];
}

/**
 * Batches of a sidecar's chain this collector lacks and the sidecar no longer retains: the
 * collector lost data it had acknowledged (a store restored from an older backup) after the
 * sidecar's retention pruned it. The chain goes on from `base_head`, the head after `to_batch` as
 * the sidecar presented it, which its next signed link commits to; the range stays recorded, and
 * `auditmesh verify` fails the store on it, since nothing shows what those batches held.
 */
export interface LostRange {
  from_batch: number;
  to_batch: number;
  base_head: string;
  recorded_unix_ms: number;
}

/** One verified run of links of one sidecar, stored all or nothing. */
export interface VerifiedAppend {
  /** The sidecar's state once this append is stored. */
  sidecar: SidecarState;
  links: StoredLink[];
  /** Each records link's batch, in the order of `links`, encoded for the store (store/encoded-batch.ts). */
  batches: EncodedBatch[];
}

/** A refused segment, kept as evidence (never as valid records). */
export interface Evidence {
  received_unix_ms: number;
  sidecar_id: string;
  /** Its chain's incarnation, when it has one. */
  incarnation?: string;
  code: RefusalCode;
  reason: string;
  batch: number;
  /** The links as received, records included (base64), up to a bound. */
  links: unknown[];
  truncated: boolean;
}

/** A stored record, addressed by its chain and sequence number. */
export interface StoredRecord {
  /** The sidecar id of its chain. */
  sidecar: string;
  /** Its chain's incarnation ('' for none). */
  incarnation: string;
  seq: number;
  bytes: Buffer;
  /** The SPIFFE ID the writer's stream proved when its batch was stored (the collector's stamp), if any. */
  identity?: string;
}

/** `5xx`, `4xx`, ...: a status class; `error`: isErrorRecord; `ok`: not an error; a number: that HTTP or gRPC status. */
export type StatusFilter = { class: number } | { error: boolean } | { code: number };

export interface RecordQuery {
  correlationId?: string;
  traceId?: string;
  /** Either side: the record's own service or its peer. */
  service?: string;
  /** The other side, with `service`; alone, either side too. */
  peer?: string;
  sinceUnixMs?: number;
  untilUnixMs?: number;
  status?: StatusFilter;
  /** Only records stamped with this writer identity (a SPIFFE ID). */
  identity?: string;
  /** Only records of these namespaces (record-namespace.ts); records without one never match. */
  namespaces?: ReadonlySet<string>;
  limit: number;
}

export interface CollectorStore {
  /** Every sidecar known, as stored. */
  sidecars(): Promise<SidecarState[]>;
  /** The stored link `batch` of a chain (by its chain key, store/chain-key.ts; for dedupe), or undefined. */
  link(chainKey: string, batch: number): Promise<StoredLink | undefined>;
  /** Stores a verified run durably; resolves once it is. */
  append(run: VerifiedAppend): Promise<void>;
  /** Stores a chain's state alone (first contact, last seen), under its chain key. */
  putSidecar(state: SidecarState): Promise<void>;
  /**
   * A store that several collectors write (the JetStream tier): the sidecar's state as stored now,
   * which another collector may have moved since this one read it; undefined when unknown. Absent
   * on a store this collector alone writes.
   */
  current?(sidecarId: string): Promise<SidecarState | undefined>;
  keepEvidence(evidence: Evidence): Promise<void>;
  /** The evidence kept, oldest first. */
  evidence(): Promise<Evidence[]>;
  /** Matching records, newest first. */
  query(q: RecordQuery): AsyncIterable<StoredRecord> | Iterable<StoredRecord>;
  /** Bytes the store has in use. */
  usedBytes(): number;
  close(): Promise<void>;
}
