import type { Database, RootDatabase } from 'lmdb';
import type { TreeHead } from '../../../ledger/witness-log.js';

/**
 * The witness log's sub-databases in the collector's store (beside store-layout.ts's; only
 * added, never changing those):
 *
 *   witness_entries   index -> entry bytes (ledger/witness-log.ts), the log's leaves in order
 *   witness_nodes     [level, i] -> 32-byte hash of the perfect subtree over leaves
 *                     [i * 2^level, (i + 1) * 2^level): level 0 are the leaf hashes. Any
 *                     subtree a proof needs is a fold of at most log2(n) of these.
 *   witness_links     [sidecar, batch] -> the index of that link's entry
 *   witness_heads     tree_size -> the first signed tree head of that size
 *   witness_keys      key id -> the collector's public key and its CA chain, for every key that signed a head
 *   witness_sidecars  sidecar -> WitnessedSidecar: how far its links are logged, its last heartbeat, forks found
 *   witness_pending   [sidecar, batch] -> a head a heartbeat named beyond the stored chain, until a link confirms it
 *   witness_certs     [sidecar, key id] -> the mesh CA certificate (DER base64) its mTLS stream presented for that key
 *
 * A later pruning of whole batches appends a `prune` entry (sidecar, batch range, reason) in the
 * same transaction that removes them; their entries here stay, so earlier tree heads remain
 * provable and a proof of a later link still verifies.
 */

export interface CollectorKeyEntry {
  /** DER SPKI, base64. */
  public_key: string;
  /** The mesh CA chain (PEM) when certified. */
  chain_pem?: string;
}

/** A heartbeat that verified, as witnessed: enough to show the sidecar signed `head`. */
export interface WitnessedHead {
  unix_ms: number;
  received_unix_ms: number;
  last_batch: number;
  head: string;
  sig: string;
}

/** A sidecar whose chain no longer holds a head the collector witnessed. */
export interface ForkAfterWitness {
  batch: number;
  /** What the collector witnessed at `batch`: a heartbeat (signed by the sidecar) or a stored link. */
  witnessed: { head: string; by: 'heartbeat' | 'link'; unix_ms: number; sig?: string };
  /** What contradicts it: a segment's link, or a heartbeat naming another head or an earlier batch. */
  presented: { head: string; by: 'segment' | 'heartbeat'; batch: number; unix_ms?: number; sig?: string };
  detected_unix_ms: number;
}

export interface WitnessedSidecar {
  /** The last batch whose link entry is in the log (0: none). */
  logged_through: number;
  /** The newest heartbeat that verified: where staleness is measured from, across restarts. */
  heartbeat?: WitnessedHead;
  /** last_batch of the newest heartbeat entry in the log. */
  logged_heartbeat_batch?: number;
  /** Forks found, newest last (bounded). */
  forks?: ForkAfterWitness[];
}

export interface WitnessDbs {
  readonly env: RootDatabase;
  readonly entries: Database<Buffer, number>;
  readonly nodes: Database<Buffer, [number, number]>;
  readonly links: Database<number, [string, number]>;
  readonly heads: Database<TreeHead, number>;
  readonly keys: Database<CollectorKeyEntry, string>;
  readonly sidecars: Database<WitnessedSidecar, string>;
  readonly pending: Database<WitnessedHead, [string, number]>;
  readonly certs: Database<string, [string, string]>;
}

export const WITNESS_DB_NAMES = ['witness_entries', 'witness_nodes', 'witness_links', 'witness_heads', 'witness_keys', 'witness_sidecars', 'witness_pending', 'witness_certs'] as const;

export function openWitnessDbs(env: RootDatabase): WitnessDbs {
  const binary = { encoding: 'binary', compression: false } as const;
  return {
    env,
    entries: env.openDB<Buffer, number>('witness_entries', binary),
    nodes: env.openDB<Buffer, [number, number]>('witness_nodes', binary),
    links: env.openDB<number, [string, number]>('witness_links', { encoding: 'msgpack' }),
    heads: env.openDB<TreeHead, number>('witness_heads', { encoding: 'msgpack' }),
    keys: env.openDB<CollectorKeyEntry, string>('witness_keys', { encoding: 'msgpack' }),
    sidecars: env.openDB<WitnessedSidecar, string>('witness_sidecars', { encoding: 'msgpack' }),
    pending: env.openDB<WitnessedHead, [string, number]>('witness_pending', { encoding: 'msgpack' }),
    certs: env.openDB<string, [string, string]>('witness_certs', { encoding: 'msgpack' }),
  };
}

/** The number of leaves in the log, as committed. */
export function committedSize(dbs: WitnessDbs): number {
  const last = Array.from(dbs.entries.getKeys({ reverse: true, limit: 1 }))[0];
  return last === undefined ? 0 : Number(last) + 1;
}
