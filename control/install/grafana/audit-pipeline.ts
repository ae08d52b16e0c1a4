import { dashboard, NAMESPACE, RATE, SIDECAR, type Json } from './dashboard.js';

const POD = '{{service}} {{pod}}';

/** Where audit records are: journalled, shipped, verified and stored; and the anomalies raised. */
export function auditPipeline(): Json {
  return dashboard({
    uid: 'auditmesh-audit-pipeline',
    title: 'auditmesh / Audit pipeline',
    description: 'The audit trail end to end: sidecar journals, shipping to the collector, verification and storage, anomalies.',
    serviceVariable: true,
    rows: [
      {
        row: 'Journal (sidecars)',
        panels: [
          { title: 'Records journalled/s', description: 'Audit records committed to the journals, and records that failed to commit.', unit: 'short', targets: [{ expr: `sum by (result) (rate(auditmesh_journal_records_total{${SIDECAR}}[${RATE}]))`, legend: '{{result}}' }] },
          { title: 'Exchanges without a record', description: 'Unrecorded exchanges by reason, and exchanges let through under --on-journal-full pass (counted in signed gap records). Anything here is a gap in the trail.', unit: 'short', targets: [
            { expr: `sum by (reason) (increase(auditmesh_journal_unrecorded_total{${SIDECAR}}[${RATE}]))`, legend: 'unrecorded: {{reason}}' },
            { expr: `sum by (reason) (increase(auditmesh_journal_gap_exchanges_total{${SIDECAR}}[${RATE}]))`, legend: 'passed in a gap: {{reason}}' },
            { expr: `sum (increase(auditmesh_journal_rejected_total{${SIDECAR}}[${RATE}]))`, legend: 'rejected with 503' },
          ] },
          { title: 'Journal use of its bound', description: 'LMDB pages in use over --journal-limit-bytes; at 1, --on-journal-full applies.', unit: 'percentunit', targets: [{ expr: `max by (service, pod) (auditmesh_journal_bytes{${SIDECAR}} / (auditmesh_journal_limit_bytes{${SIDECAR}} > 0))`, legend: POD }] },
          { title: 'Journal commit p99', description: 'From a batch being sealed to its journal commit.', unit: 's', targets: [{ expr: `histogram_quantile(0.99, sum by (le, service) (rate(auditmesh_journal_commit_duration_seconds_bucket{${SIDECAR}}[${RATE}])))`, legend: '{{service}}' }] },
        ],
      },
      {
        row: 'Shipping (sidecars → collector)',
        panels: [
          { title: 'Shipping lag', description: 'Age of the oldest record not yet acknowledged by the collector.', unit: 's', targets: [{ expr: `max by (service, pod) (auditmesh_shipper_lag_seconds{${SIDECAR}})`, legend: POD }] },
          { title: 'Unshipped records', description: 'Records journalled but not yet acknowledged by the collector.', unit: 'short', targets: [{ expr: `sum by (service, pod) (auditmesh_shipper_unshipped_records{${SIDECAR}})`, legend: POD }] },
          { title: 'Batches shipped and refused', description: 'Batches the collector acknowledged, and batches it refused, by code.', unit: 'short', targets: [
            { expr: `sum (rate(auditmesh_shipper_batches_shipped_total{${SIDECAR}}[${RATE}]))`, legend: 'batches shipped/s' },
            { expr: `sum (rate(auditmesh_shipper_records_shipped_total{${SIDECAR}}[${RATE}]))`, legend: 'records shipped/s' },
            { expr: `sum by (code) (rate(auditmesh_shipper_batches_refused_total{${SIDECAR}}[${RATE}]))`, legend: 'refused/s: {{code}}' },
          ] },
          { title: 'Shipper connections', description: 'Sidecars connected to the collector now, and reconnects.', unit: 'short', targets: [
            { expr: `sum (auditmesh_shipper_connected{${SIDECAR}})`, legend: 'connected' },
            { expr: `sum (1 - auditmesh_shipper_connected{${SIDECAR}})`, legend: 'not connected' },
            { expr: `sum (increase(auditmesh_shipper_reconnects_total{${SIDECAR}}[${RATE}]))`, legend: 'reconnects' },
          ] },
        ],
      },
      {
        row: 'Collector',
        panels: [
          { title: 'Ingest', description: 'Batches received, records stored and duplicate batches (a retry of a batch already stored; acknowledged again, stored once).', unit: 'short', targets: [
            { expr: `sum (rate(auditmesh_collector_batches_received_total{${NAMESPACE}}[${RATE}]))`, legend: 'batches received/s' },
            { expr: `sum (rate(auditmesh_collector_records_stored_total{${NAMESPACE}}[${RATE}]))`, legend: 'records stored/s' },
            { expr: `sum (rate(auditmesh_collector_duplicate_batches_total{${NAMESPACE}}[${RATE}]))`, legend: 'duplicate batches/s' },
          ] },
          { title: 'Verification failures', description: 'Batches that did not verify (root, chain, signature, sequence), by reason. Anything here means records were altered, cut or forged on the way.', unit: 'short', targets: [{ expr: `sum by (reason) (increase(auditmesh_collector_verification_failures_total{${NAMESPACE}}[${RATE}]))`, legend: '{{reason}}' }] },
          { title: 'Ingest duration p99', description: 'Time to verify and durably store one batch.', unit: 's', width: 8, targets: [{ expr: `histogram_quantile(0.99, sum by (le) (rate(auditmesh_collector_ingest_duration_seconds_bucket{${NAMESPACE}}[${RATE}])))`, legend: 'p99' }] },
          { title: 'Sidecars known to the collector', description: 'Current sidecars, stale ones (not heard from lately), and open ingest streams.', unit: 'short', width: 8, targets: [
            { expr: `sum by (state) (auditmesh_collector_sidecars{${NAMESPACE}})`, legend: '{{state}}' },
            { expr: `sum (auditmesh_collector_streams_active{${NAMESPACE}})`, legend: 'streams' },
          ] },
          { title: 'Store size', description: 'Bytes of the collector store.', unit: 'bytes', width: 8, targets: [{ expr: `sum (auditmesh_collector_store_bytes{${NAMESPACE}})`, legend: 'store' }] },
        ],
      },
      {
        row: 'Anomalies',
        panels: [
          // An edge's gauge exists only once it had a spike (peers are not a closed set): `or` a 0, so the panel reads 0, not "no data".
          { title: 'Active anomalies', description: 'Rate and error spikes active now per edge: as one sidecar sees it against its own baseline, and fleet-wide (the collector, all replicas summed); 0 when none.', unit: 'short', targets: [
            { expr: `(max by (service, kind, peer) (auditmesh_anomaly_active{${SIDECAR}, direction=""}) > 0) or on () vector(0)`, legend: 'sidecar: {{service}} ↔ {{peer}} {{kind}}' },
            { expr: `(max by (service, kind, peer, direction) (auditmesh_anomaly_active{${SIDECAR}, direction!=""}) > 0) or on () vector(0)`, legend: 'fleet: {{service}} ↔ {{peer}} {{direction}} {{kind}}' },
          ] },
          { title: 'Anomalies raised', description: 'Spikes and first-seen peers and methods, by kind; each is an alert record in the journal.', unit: 'short', targets: [{ expr: `sum by (kind) (increase(auditmesh_anomalies_total{${SIDECAR}}[${RATE}]))`, legend: '{{kind}}' }] },
        ],
      },
    ],
  });
}
