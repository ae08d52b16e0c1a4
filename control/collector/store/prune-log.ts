import type { Database, RootDatabase, Transaction } from 'lmdb';
import type { ChainPosition } from '../../../ledger/link-verifier.js';

/**
 * What the store's retention removed, kept beside the store (additions to store-layout.ts's
 * layout; a store without them has pruned nothing):
 *
 *   pruned   sidecar id -> PrunedThrough      where the held part of its chain now starts
 *   prunes   [unix_ms, n] -> PruneEntry       every pruning, oldest first, never removed
 *
 * Only whole prefixes of a sidecar's chain are pruned, always through a signed link, so the held
 * links still verify from the head recorded here (verify-store.ts starts there).
 */

/** Why batches were pruned: older than --retention, or the store at --store-limit-bytes. */
export type PruneReason = 'retention' | 'limit';

/** One pruning: a contiguous range of one sidecar's chain, removed in one transaction. */
export interface PruneEntry {
  sidecar: string;
  from_batch: number;
  to_batch: number;
  /** Records the range held (its records links' counts). */
  records: number;
  /** Sequence numbers of those records; absent when the range held none. */
  first_seq?: number;
  last_seq?: number;
  /** The chain head after `to_batch`: the held chain goes on from it. */
  head: string;
  /** sealed_unix_ms of the newest link removed. */
  newest_sealed_unix_ms: number;
  reason: PruneReason;
  unix_ms: number;
}

/** Where the held part of a sidecar's chain starts after pruning: the last link removed, which was signed. */
export interface PrunedThrough {
  batch: number;
  last_seq: number;
  head: string;
  epoch: number;
  /** The key that signed the last link removed: the epoch's key, which the next links go on with. */
  epoch_key: string;
  sealed_unix_ms: number;
}

export interface PruneDbs {
  readonly pruned: Database<PrunedThrough, string>;
  readonly prunes: Database<PruneEntry, [number, number]>;
}

export const PRUNE_DB_NAMES = ['pruned', 'prunes'] as const;

export function openPruneDbs(env: RootDatabase): PruneDbs {
  return {
    pruned: env.openDB<PrunedThrough, string>('pruned', { encoding: 'msgpack' }),
    prunes: env.openDB<PruneEntry, [number, number]>('prunes', { encoding: 'msgpack' }),
  };
}

/** The prune databases of a store opened read-only, or null when it never pruned (a read-only environment cannot create them). */
export function openPruneDbsIfAny(env: RootDatabase, names: readonly string[]): PruneDbs | null {
  return names.includes('pruned') ? openPruneDbs(env) : null;
}

/** Where the verifier starts a sidecar's chain that was pruned, or undefined when it was not. */
export function prunedStart(dbs: PruneDbs | null, sidecar: string, transaction?: Transaction): ChainPosition | undefined {
  const p = dbs?.pruned.get(sidecar, { transaction });
  if (p === undefined) return undefined;
  return { last_batch: p.batch, last_seq: p.last_seq, head: p.head, last_signed: p.batch, epoch: p.epoch, epoch_key: p.epoch_key };
}

/** Every pruning recorded, oldest first. */
export function pruneEntries(dbs: PruneDbs): PruneEntry[] {
  return Array.from(dbs.prunes.getRange(), ({ value }) => value);
}
