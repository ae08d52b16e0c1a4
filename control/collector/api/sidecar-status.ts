import type { SidecarChain } from '../ingest/sidecar-chain.js';

/**
 * What /v1/sidecars says of each sidecar, and the current/stale tally of the
 * auditmesh_collector_sidecars gauge. A sidecar's heartbeats are current when the last signed one
 * arrived within HEARTBEAT_GRACE_INTERVALS intervals; a sidecar this collector has seen alive
 * (a heartbeat since it started) whose heartbeats stopped is stale: silenced, cut off or dead.
 */

export const HEARTBEAT_GRACE_INTERVALS = 3;

/** One chain of a sidecar: with ServiceAccount tokens, one per incarnation (pod uid) of its id. */
export interface SidecarStatus {
  id: string;
  /** The pod uid of this chain's incarnation; null: none (a shared token, --insecure). */
  incarnation: string | null;
  /** This is the newest incarnation of its sidecar id (the one first seen last); earlier ones may still drain. */
  current: boolean;
  service: string;
  key_id: string;
  first_batch: number;
  last_batch: number;
  last_seq: number | null;
  chain_head: string;
  /** ISO 8601: the last message from it. */
  last_seen: string;
  last_heartbeat: string | null;
  heartbeat_current: boolean;
  /** Everything stored from it verified, and nothing was refused since the last stored segment. */
  verified: boolean;
  last_refusal: { code: string; reason: string; at: string } | null;
  /** Batches of its chain that can never arrive (../collector-store.ts LostRange), recorded when it reconnected. */
  lost: { from_batch: number; to_batch: number; recorded: string }[];
  /** Heads the collector witnessed (a signed heartbeat, a stored link) that its chain no longer holds: its tail was rewritten or cut back (witness/head-witness.ts). */
  fork_after_witness?: { batch: number; witnessed_head: string; witnessed_by: string; presented_head: string; presented_by: string; presented_batch: number; detected: string }[];
}

const iso = (ms: number): string => new Date(ms).toISOString();

export function heartbeatCurrent(chain: SidecarChain, intervalMs: number, nowUnixMs: number): boolean {
  return chain.heartbeat !== undefined && nowUnixMs - chain.heartbeat.received_unix_ms <= HEARTBEAT_GRACE_INTERVALS * intervalMs;
}

export function sidecarStatus(chain: SidecarChain, intervalMs: number, nowUnixMs: number): SidecarStatus {
  const { state, heartbeat, refusal } = chain;
  const { position } = state;
  return {
    id: state.id,
    incarnation: state.incarnation ?? null,
    current: true,
    service: state.service,
    key_id: state.key_id,
    first_batch: state.first_batch,
    last_batch: position.last_batch,
    last_seq: position.last_seq ?? null,
    chain_head: position.head,
    last_seen: iso(Math.max(chain.lastSeenUnixMs, state.last_seen_unix_ms)),
    last_heartbeat: heartbeat === undefined ? null : iso(heartbeat.received_unix_ms),
    heartbeat_current: heartbeatCurrent(chain, intervalMs, nowUnixMs),
    verified: refusal === undefined || refusal.unix_ms < state.last_seen_unix_ms,
    last_refusal: refusal === undefined ? null : { code: refusal.code, reason: refusal.reason, at: iso(refusal.unix_ms) },
    lost: (state.lost ?? []).map((l) => ({ from_batch: l.from_batch, to_batch: l.to_batch, recorded: iso(l.recorded_unix_ms) })),
  };
}

/** Per sidecar id, its newest incarnation's chain: the one first seen last (ties by chain key). */
function newestOfEachId(chains: readonly SidecarChain[]): Set<SidecarChain> {
  const newest = new Map<string, SidecarChain>();
  for (const c of chains) {
    const n = newest.get(c.state.id);
    if (n === undefined || c.state.first_seen_unix_ms > n.state.first_seen_unix_ms || (c.state.first_seen_unix_ms === n.state.first_seen_unix_ms && c.chainKey > n.chainKey)) newest.set(c.state.id, c);
  }
  return new Set(newest.values());
}

/**
 * Every chain's status, each chain's `current` set: false for an incarnation of a sidecar id
 * that a later-seen incarnation of the same id followed.
 */
export function sidecarStatuses(chains: Iterable<SidecarChain>, intervalMs: number, nowUnixMs: number): SidecarStatus[] {
  const all = Array.from(chains);
  const current = newestOfEachId(all);
  return all.map((c) => ({ ...sidecarStatus(c, intervalMs, nowUnixMs), current: current.has(c) }));
}

/**
 * Sidecars with current heartbeats, and those seen alive since this collector started whose
 * heartbeats stopped. An incarnation a newer one of the same id replaced is neither: its pod is
 * gone, and its silence is expected.
 */
export function heartbeatTally(chains: Iterable<SidecarChain>, intervalMs: number, nowUnixMs: number): { current: number; stale: number } {
  let current = 0;
  let stale = 0;
  const all = Array.from(chains);
  const newest = newestOfEachId(all);
  for (const chain of all) {
    if (chain.heartbeat === undefined || !newest.has(chain)) continue;
    if (heartbeatCurrent(chain, intervalMs, nowUnixMs)) current++;
    else stale++;
  }
  return { current, stale };
}
