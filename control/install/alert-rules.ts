import { exchangeRate, failedExchangeRate } from './exchange-queries.js';

/**
 * The alerting rules auditmesh ships (a PrometheusRule, `auditmesh install --monitoring`), as
 * data: rendered into the manifest, and read by the test that checks every metric they use is
 * one a component exposes.
 *
 * Sidecar series carry `service` (the sidecar's identity) besides the target's namespace and pod;
 * an edge is service → peer in one direction.
 */
export interface AlertRule {
  alert: string;
  expr: string;
  /** How long the condition must hold before the alert fires. */
  for: string;
  severity: 'critical' | 'warning' | 'info';
  description: string;
}

export interface RuleGroup {
  name: string;
  rules: AlertRule[];
}

const EDGE = 'namespace, service, direction, peer';
const EDGE_RATE = exchangeRate(EDGE, '5m');
const EDGE_ERRORS = failedExchangeRate(EDGE, '5m');

/** Error ratio above which an edge alerts, and the request rate below which it is too quiet to judge. */
export const EDGE_ERROR_RATIO = 0.05;
export const EDGE_MIN_RATE = 0.1;
export const SHIPPING_LAG_WARNING_S = 300;
export const SHIPPING_LAG_CRITICAL_S = 1800;
export const JOURNAL_NEAR_BOUND_RATIO = 0.8;
export const EVENT_LOOP_LAG_P99_S = 0.1;
export const EXPORT_LAG_WARNING_S = 900;

const sidecarRules = (): AlertRule[] => [
  {
    alert: 'AuditmeshEdgeHighErrorRatio',
    expr: `(${EDGE_ERRORS} / ${EDGE_RATE}) > ${EDGE_ERROR_RATIO} and ${EDGE_RATE} > ${EDGE_MIN_RATE}`,
    for: '10m',
    severity: 'warning',
    description: `{{ $labels.service }} → {{ $labels.peer }} ({{ $labels.direction }}): {{ $value | humanizePercentage }} of exchanges fail (5xx, no response, or a gRPC server error); threshold ${EDGE_ERROR_RATIO * 100}%.`,
  },
  {
    alert: 'AuditmeshAnomalyActive',
    // The sidecars' series have no direction; the collector's fleet-wide ones do.
    expr: 'max by (namespace, service, kind, peer) (auditmesh_anomaly_active{direction=""}) == 1',
    for: '0m',
    severity: 'warning',
    description: 'The sidecar of {{ $labels.service }} sees a {{ $labels.kind }} on its edge with {{ $labels.peer }} against its baseline; the alert record is in the journal.',
  },
  {
    alert: 'AuditmeshFleetAnomalyActive',
    expr: 'max by (namespace, service, kind, peer, direction) (auditmesh_anomaly_active{direction!=""}) == 1',
    for: '0m',
    severity: 'warning',
    description: 'Across all replicas of {{ $labels.service }}, the collector sees a {{ $labels.kind }} on the {{ $labels.direction }} edge with {{ $labels.peer }}; GET /v1/anomalies on the collector lists it.',
  },
  {
    alert: 'AuditmeshFirstSeenEdge',
    expr: 'sum by (namespace, service, kind) (increase(auditmesh_anomalies_total{kind=~"first_seen_peer|first_seen_method"}[15m])) > 0',
    for: '0m',
    severity: 'info',
    description: '{{ $labels.service }} talked to a peer or called a method it had never used before ({{ $labels.kind }}); `auditmesh tail` shows the alert record.',
  },
  {
    alert: 'AuditmeshEventLoopLag',
    expr: `max by (namespace, pod, job, instance) (nodejs_eventloop_lag_p99_seconds) > ${EVENT_LOOP_LAG_P99_S} and on (job, instance) auditmesh_build_info`,
    for: '10m',
    severity: 'warning',
    description: `auditmesh in {{ $labels.pod }} has a p99 event-loop lag of {{ $value | humanizeDuration }} (above ${EVENT_LOOP_LAG_P99_S * 1000} ms): every exchange through it waits that long. Give it CPU or look at its profile.`,
  },
];

const auditTrailRules = (lagWarningS: number, lagCriticalS: number): AlertRule[] => [
  {
    alert: 'AuditmeshExchangesNotRecorded',
    expr: 'sum by (namespace, pod, reason) (increase(auditmesh_journal_unrecorded_total[5m])) > 0',
    for: '0m',
    severity: 'critical',
    description: 'Sidecar {{ $labels.pod }} could not record exchanges ({{ $labels.reason }}): the audit trail has gaps.',
  },
  {
    alert: 'AuditmeshExchangesPassedUnrecorded',
    expr: 'sum by (namespace, pod, reason) (increase(auditmesh_journal_gap_exchanges_total[5m])) > 0',
    for: '0m',
    severity: 'critical',
    description: 'Sidecar {{ $labels.pod }} let exchanges through without their own record ({{ $labels.reason }}, --on-journal-full pass); signed gap records count them.',
  },
  {
    alert: 'AuditmeshJournalWriteFailures',
    expr: 'sum by (namespace, pod) (increase(auditmesh_journal_records_total{result="failed"}[5m])) > 0',
    for: '0m',
    severity: 'critical',
    description: 'Sidecar {{ $labels.pod }} failed to write audit records to its journal.',
  },
  {
    alert: 'AuditmeshJournalNearBound',
    expr: `max by (namespace, pod) (auditmesh_journal_bytes / (auditmesh_journal_limit_bytes > 0)) > ${JOURNAL_NEAR_BOUND_RATIO}`,
    for: '5m',
    severity: 'warning',
    description: `The journal of {{ $labels.pod }} is {{ $value | humanizePercentage }} of its bound; at the bound --on-journal-full applies (reject: 503s; pass: unrecorded exchanges). Is shipping keeping up?`,
  },
  {
    alert: 'AuditmeshJournalFull',
    expr: 'max by (namespace, pod) (auditmesh_journal_full) == 1',
    for: '0m',
    severity: 'critical',
    description: 'The journal of {{ $labels.pod }} is at its bound: requests are refused (reject) or pass unrecorded (pass).',
  },
  {
    alert: 'AuditmeshRequestsRejected',
    expr: 'sum by (namespace, pod) (increase(auditmesh_journal_rejected_total[5m])) > 0',
    for: '0m',
    severity: 'critical',
    description: 'Sidecar {{ $labels.pod }} answered requests 503 because its journal could not take them (--on-journal-full reject).',
  },
  {
    alert: 'AuditmeshShippingLag',
    expr: `max by (namespace, pod) (auditmesh_shipper_lag_seconds) > ${lagWarningS}`,
    for: '5m',
    severity: 'warning',
    description: 'The oldest record {{ $labels.pod }} has not shipped to the collector is {{ $value | humanizeDuration }} old; the audit pipeline dashboard shows how many wait.',
  },
  {
    alert: 'AuditmeshShippingLagCritical',
    expr: `max by (namespace, pod) (auditmesh_shipper_lag_seconds) > ${lagCriticalS}`,
    for: '5m',
    severity: 'critical',
    description: 'Records of {{ $labels.pod }} have waited {{ $value | humanizeDuration }} for the collector; the journal fills meanwhile.',
  },
  {
    alert: 'AuditmeshBatchesRefused',
    expr: 'sum by (namespace, pod, code) (increase(auditmesh_shipper_batches_refused_total[10m])) > 0',
    for: '0m',
    severity: 'critical',
    description: 'The collector refused batches from {{ $labels.pod }} ({{ $labels.code }}): they stay in its journal, unshipped.',
  },
  {
    alert: 'AuditmeshVerificationFailures',
    expr: 'sum by (namespace, reason) (increase(auditmesh_collector_verification_failures_total[5m])) > 0',
    for: '0m',
    severity: 'critical',
    description: 'The collector received batches that do not verify ({{ $labels.reason }}): records altered, reordered, cut or signed by an unknown key. `auditmesh verify` names the first one.',
  },
  {
    alert: 'AuditmeshCollectorBatchesLost',
    expr: 'sum by (namespace) (increase(auditmesh_collector_lost_batches_total[15m])) > 0',
    for: '0m',
    severity: 'critical',
    description: '{{ $value }} batches of sidecar chains can never reach the collector: it lacked them (lost acknowledged data, or was restored from an older copy) after the sidecars pruned them. /v1/sidecars lists the ranges; `auditmesh verify` fails the store on them.',
  },
  {
    alert: 'AuditmeshCollectorForkAfterWitness',
    expr: 'sum by (namespace) (increase(auditmesh_collector_forks_after_witness_total[15m])) > 0',
    for: '0m',
    severity: 'critical',
    description: '{{ $value }} times a sidecar chain no longer held a head the collector had witnessed (a signed heartbeat, a stored link): its journal tail was rewritten or cut back after the collector saw it. /v1/sidecars names the sidecar (fork_after_witness); what it sent is kept as evidence.',
  },
  {
    alert: 'AuditmeshCallsUnreconciled',
    expr: 'sum by (namespace, caller, callee, state) (increase(auditmesh_collector_reconcile_disagreements_total[15m])) > 0',
    for: '0m',
    severity: 'warning',
    description: '{{ $value }} calls {{ $labels.caller }} → {{ $labels.callee }} were {{ $labels.state }} after the grace period: one end has no record of a call the other recorded (caller-only, callee-only), or the two records disagree (mismatched). `auditmesh reconcile --service {{ $labels.callee }} --state {{ $labels.state }}` lists them, with each end and what differs.',
  },
  {
    alert: 'AuditmeshCollectorStoreFull',
    expr: 'max by (namespace, pod) (auditmesh_collector_store_full) > 0',
    for: '0m',
    severity: 'critical',
    description: 'The collector store of {{ $labels.pod }} is at --store-limit-bytes with nothing it may prune (what is left is not exported yet): it refuses new segments, retryable, and sidecars buffer in their journals until room returns. Check the OTLP export (auditmesh_collector_export_lag_seconds) or raise the limit.',
  },
  {
    alert: 'AuditmeshCollectorStoreWriteFailures',
    expr: 'sum by (namespace, pod, reason) (increase(auditmesh_collector_store_write_failures_total[5m])) > 0',
    for: '0m',
    severity: 'critical',
    description: 'The collector {{ $labels.pod }} cannot commit to its store ({{ $labels.reason }}): segments are not acked and sidecars buffer. Free or grow its volume; it recovers by itself once commits go through.',
  },
  {
    alert: 'AuditmeshOtlpExportLag',
    expr: `max by (namespace, pod) (auditmesh_collector_export_lag_seconds) > ${EXPORT_LAG_WARNING_S}`,
    for: '10m',
    severity: 'warning',
    description: 'The oldest record the collector {{ $labels.pod }} has not exported over OTLP is {{ $value | humanizeDuration }} old: the receiver is away or refusing (auditmesh_collector_export_failures_total). Nothing is lost: the store keeps it, and retention prunes nothing unexported.',
  },
  {
    alert: 'AuditmeshStaleSidecars',
    expr: 'max by (namespace) (auditmesh_collector_sidecars{state="stale"}) > 0',
    for: '15m',
    severity: 'warning',
    description: '{{ $value }} sidecars have not reached the collector lately: their records are not arriving.',
  },
];

const injectorRules = (): AlertRule[] => [
  {
    alert: 'AuditmeshInjectorErrors',
    expr: 'sum(increase(auditmesh_injector_admissions_total{result="error"}[15m])) > 0',
    for: '0m',
    severity: 'warning',
    description: 'The injector failed on some pods; they were admitted without the audit sidecar.',
  },
  {
    alert: 'AuditmeshInjectorCertReloadFailing',
    expr: 'sum(increase(auditmesh_injector_cert_reloads_total{result="failed"}[30m])) > 0',
    for: '30m',
    severity: 'warning',
    description: 'The injector cannot load its renewed serving certificate; it keeps serving the old one until it expires.',
  },
];

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
/** A threshold in seconds, scaled, to the millisecond (300 × 0.01 is 3, not 3.0000000000000004). */
const scaleSeconds = (s: number, scale: number): number => Math.round(s * scale * 1000) / 1000;

/**
 * Every duration the rules wait on, times `scale` (`auditmesh install --alert-duration-scale`):
 * `for:` and the shipping-lag thresholds. 1 renders the defaults; a test renders 0.01 so an alert
 * that waits 15 minutes in a cluster fires within seconds.
 */
export function ruleGroups(scale = 1): RuleGroup[] {
  const scaled = (r: AlertRule): AlertRule => ({ ...r, for: scaleDuration(r.for, scale) });
  return [
    { name: 'auditmesh-traffic', rules: sidecarRules().map(scaled) },
    { name: 'auditmesh-audit-trail', rules: auditTrailRules(scaleSeconds(SHIPPING_LAG_WARNING_S, scale), scaleSeconds(SHIPPING_LAG_CRITICAL_S, scale)).map(scaled) },
    { name: 'auditmesh-injector', rules: injectorRules().map(scaled) },
  ];
}

/** The rules as rendered by default. */
export const RULE_GROUPS: readonly RuleGroup[] = ruleGroups();

/** `10m` × 0.01 = `6s`; 1 keeps the text as written. */
export function scaleDuration(duration: string, scale: number): string {
  if (scale === 1) return duration;
  const m = /^(\d+)(ms|s|m|h)$/.exec(duration);
  if (m === null) throw new Error(`not a duration this file writes: ${duration}`);
  return `${Math.round(Number(m[1]) * UNIT_MS[m[2]!]! * scale)}ms`;
}

/** One rule as the PrometheusRule CRD spells it. */
export function promRule(r: AlertRule): Record<string, unknown> {
  return { alert: r.alert, expr: r.expr, for: r.for, labels: { severity: r.severity }, annotations: { summary: r.alert.replace(/([a-z])([A-Z])/g, '$1 $2'), description: r.description } };
}
