import type { Direction, GapReason } from '../../ledger/record.js';
import { labelValues } from '../../command/label-values.js';
import type { UnverifiedReason } from '../ship/collector-acks.js';
import type { MeshFailureReason } from '../mesh/mesh-outcome.js';

/*
 * The sidecar's own closed label sets (those the collector and injector share are in
 * command/label-values.ts): its counters start with every value at 0.
 */

export const GAP_REASONS: readonly GapReason[] = labelValues<GapReason>({ journal_full: true, journal_write: true, journal_behind: true });

/** Why an exchange has no record: shed at the journal's bound (the gap reasons), lost before or in the journal, refused in strict mode, or after close. */
export const UNRECORDED_REASONS: readonly string[] = [...GAP_REASONS, 'seal', 'encode', 'internal', 'strict_refused', 'closed'];

/** Why the shipper did not believe a Welcome or an Ack of the collector. */
export const UNVERIFIED_REASONS: readonly UnverifiedReason[] = labelValues<UnverifiedReason>({ unsigned: true, 'bad-signature': true, 'untrusted-certificate': true });

/** Why sidecar-to-sidecar mTLS failed or was not used (auditmesh_mesh_tls_failures_total). */
export const MESH_FAILURE_REASONS: readonly MeshFailureReason[] = labelValues<MeshFailureReason>({ peer_untrusted: true, peer_expired: true, peer_identity_mismatch: true, peer_handshake: true, peer_reset: true, unverified_peer: true, directory_stale: true });

export const DIRECTIONS: readonly Direction[] = labelValues<Direction>({ inbound: true, outbound: true });

/** What a long-lived session is: counted by kind in the connection metrics. */
export type SessionKind = 'websocket' | 'tunnel' | 'tcp';

export const SESSION_KINDS: readonly SessionKind[] = labelValues<SessionKind>({ websocket: true, tunnel: true, tcp: true });

/** Sets every direction × session kind to 0 on counters and gauges labelled by both. */
export function initialiseSessions(metrics: ReadonlyArray<{ inc(labels: { direction: string; kind: string }, value: number): void }>): void {
  for (const direction of DIRECTIONS) for (const kind of SESSION_KINDS) for (const m of metrics) m.inc({ direction, kind }, 0);
}
