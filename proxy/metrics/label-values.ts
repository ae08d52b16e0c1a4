import type { AnomalyKind } from '../../anomalies/anomaly-detector.js';
import type { Direction, GapReason } from '../../ledger/record.js';
import type { FailureCode } from '../../ledger/link-verifier.js';
import type { SessionKind } from './observe-connections.js';

/*
 * The closed sets of label values some counters take. Counters labelled by them are created with
 * every value at 0 (Prometheus' naming guide: initialise labelled metrics you know), so an alert or
 * a panel over them reads 0, not "no data", until the first event. A Record over the union type
 * makes the compiler name a value added to the type and missing here.
 */

const keys = <K extends string>(set: Record<K, true>): K[] => Object.keys(set) as K[];

/** Refusal codes of sync.proto: the collector's verification failures, the shipper's refused segments. */
export const REFUSAL_CODES: readonly FailureCode[] = keys<FailureCode>({ unauthenticated: true, 'key-mismatch': true, 'bad-root': true, 'bad-chain': true, 'bad-signature': true, gap: true, fork: true, malformed: true });

export const ANOMALY_KINDS: readonly AnomalyKind[] = keys<AnomalyKind>({ rate_spike: true, error_spike: true, first_seen_peer: true, first_seen_method: true });

export const GAP_REASONS: readonly GapReason[] = keys<GapReason>({ journal_full: true, journal_write: true, journal_behind: true });

/** Why an exchange has no record: shed at the journal's bound (the gap reasons), lost before or in the journal, refused in strict mode, or after close. */
export const UNRECORDED_REASONS: readonly string[] = [...GAP_REASONS, 'seal', 'encode', 'internal', 'strict_refused', 'closed'];

export const DIRECTIONS: readonly Direction[] = keys<Direction>({ inbound: true, outbound: true });

export const SESSION_KINDS: readonly SessionKind[] = keys<SessionKind>({ websocket: true, tunnel: true, tcp: true });

/** Sets every listed value of `label` to 0 on a counter. */
export function initialiseLabels<L extends string>(counter: { inc(labels: Partial<Record<L, string>>, value: number): void }, label: L, values: readonly string[]): void {
  for (const value of values) counter.inc({ [label]: value } as Partial<Record<L, string>>, 0);
}

/** Sets every direction × session kind to 0 on counters and gauges labelled by both. */
export function initialiseSessions(metrics: ReadonlyArray<{ inc(labels: { direction: string; kind: string }, value: number): void }>): void {
  for (const direction of DIRECTIONS) for (const kind of SESSION_KINDS) for (const m of metrics) m.inc({ direction, kind }, 0);
}
