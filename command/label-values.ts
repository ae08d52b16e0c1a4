import type { AnomalyKind } from '../anomalies/anomaly-detector.js';
import type { FailureCode } from '../ledger/link-verifier.js';

/*
 * The closed sets of label values some counters take. Counters labelled by them are created with
 * every value at 0 (Prometheus' naming guide: initialise labelled metrics you know), so an alert or
 * a panel over them reads 0, not "no data", until the first event. A Record over the union type
 * makes the compiler name a value added to the type and missing here.
 */

/** The keys of a Record over a union: every value of the union, checked by the compiler. */
export const labelValues = <K extends string>(set: Record<K, true>): K[] => Object.keys(set) as K[];

/** Refusal codes of sync.proto: the collector's verification failures, the shipper's refused segments. */
export const REFUSAL_CODES: readonly FailureCode[] = labelValues<FailureCode>({ unauthenticated: true, 'key-mismatch': true, 'bad-root': true, 'bad-chain': true, 'bad-signature': true, gap: true, fork: true, malformed: true });

export const ANOMALY_KINDS: readonly AnomalyKind[] = labelValues<AnomalyKind>({ rate_spike: true, error_spike: true, first_seen_peer: true, first_seen_method: true });

/** Sets every listed value of `label` to 0 on a counter. */
export function initialiseLabels<L extends string>(counter: { inc(labels: Partial<Record<L, string>>, value: number): void }, label: L, values: readonly string[]): void {
  for (const value of values) counter.inc({ [label]: value } as Partial<Record<L, string>>, 0);
}
