import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createRegistry } from '../../command/metrics-registry.js';
import { ANOMALY_KINDS, initialiseLabels, REFUSAL_CODES } from '../../command/label-values.js';
import { TOKEN_REFUSALS } from './ingest/service-account-tokens.js';
import { READ_REFUSALS } from './api/read-access.js';
import { CERTIFY_REFUSALS } from './ingest/certify.js';

/**
 * Every metric the collector exposes, defined once. The Prometheus rules and dashboards
 * (deploy/) are written against these names. Labels are bounded: `reason` is a Refusal code of
 * sync.proto, `state` is current or stale; never a sidecar id or pod name.
 */
export interface CollectorMetrics {
  readonly registry: Registry;
  readonly batchesReceived: Counter;
  readonly recordsStored: Counter;
  readonly duplicateBatches: Counter;
  readonly verificationFailures: Counter<'reason'>;
  /** Sidecar credentials refused, by why (service-account-tokens.ts TokenRefusal). */
  readonly tokenRefusals: Counter<'reason'>;
  /** Reads of /v1/ refused, by why (read-access.ts ReadRefusal). */
  readonly readRefusals: Counter<'reason'>;
  /** Workload certificates the mesh CA issued, and those it refused by why (certify.ts CertifyRefusal). */
  readonly certificatesIssued: Counter;
  readonly identityRefusals: Counter<'reason'>;
  readonly lostBatches: Counter;
  readonly ingestDuration: Histogram;
  readonly storeBytes: Gauge;
  readonly sidecars: Gauge<'state'>;
  readonly streamsActive: Gauge;
  /** Fleet-wide anomalies (api/fleet-alerts.ts): the sidecar's names, with the edge's service and direction. */
  readonly anomalyActive: Gauge<'kind' | 'service' | 'peer' | 'direction'>;
  readonly anomalies: Counter<'kind'>;
  /** Sidecars found with a chain that no longer holds a head the collector witnessed (witness/head-witness.ts). */
  readonly forksAfterWitness: Counter;
  /** Leaves in the collector's witness log, and its signed tree heads. */
  readonly witnessTreeSize: Gauge;
  readonly treeHeadsSigned: Counter;
  /** Calls whose two ends were reconciled, by state; one-sided and mismatched ones per edge (reconcile/call-reconciler.ts). */
  readonly reconciled: Counter<'state'>;
  readonly disagreements: Counter<'state' | 'caller' | 'callee'>;
  readonly reconcilePending: Gauge;
}

/** A segment is verified and committed in well under a millisecond to a few hundred. */
const INGEST_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export function createCollectorMetrics(sample: { storeBytes(): number; sidecars(): { current: number; stale: number }; witnessTreeSize?(): number }): CollectorMetrics {
  const registry = createRegistry();
  const verificationFailures = new Counter({
    name: 'auditmesh_collector_verification_failures_total',
    help: 'Streams refused, by Refusal code (unauthenticated, key-mismatch, bad-root, bad-chain, bad-signature, gap, fork, malformed)',
    labelNames: ['reason'],
    registers: [registry],
  });
  initialiseLabels(verificationFailures, 'reason', REFUSAL_CODES);
  const anomalies = new Counter({ name: 'auditmesh_anomalies_total', help: 'Fleet-wide anomalies raised (rate_spike, error_spike, first_seen_peer, first_seen_method)', labelNames: ['kind'], registers: [registry] });
  initialiseLabels(anomalies, 'kind', ANOMALY_KINDS);
  const tokenRefusals = new Counter({
    name: 'auditmesh_collector_token_refusals_total',
    help: 'Sidecar credentials refused, by reason (missing, malformed, wrong-audience, expired, not-yet-valid, other-issuer, unknown-key, bad-signature, not-pod-bound, wrong-sidecar-id, keys-unavailable)',
    labelNames: ['reason'],
    registers: [registry],
  });
  initialiseLabels(tokenRefusals, 'reason', TOKEN_REFUSALS);
  const readRefusals = new Counter({
    name: 'auditmesh_collector_read_refusals_total',
    help: 'Reads of the HTTP API refused, by reason (missing, unknown-token, wrong-audience, expired, not-yet-valid, other-issuer, unknown-key, bad-signature, malformed, keys-unavailable: 401; not-granted, out-of-scope: 403)',
    labelNames: ['reason'],
    registers: [registry],
  });
  initialiseLabels(readRefusals, 'reason', READ_REFUSALS);
  const identityRefusals = new Counter({
    name: 'auditmesh_collector_identity_refusals_total',
    help: `Workload certificates the mesh CA refused, by reason (${CERTIFY_REFUSALS.join(', ')})`,
    labelNames: ['reason'],
    registers: [registry],
  });
  initialiseLabels(identityRefusals, 'reason', CERTIFY_REFUSALS);
  return {
    readRefusals,
    registry,
    identityRefusals,
    certificatesIssued: new Counter({ name: 'auditmesh_collector_certificates_issued_total', help: 'Workload certificates the mesh CA issued (Certify)', registers: [registry] }),
    verificationFailures,
    anomalies,
    tokenRefusals,
    batchesReceived: new Counter({ name: 'auditmesh_collector_batches_received_total', help: 'Chain links (batches) received from sidecars, before verification', registers: [registry] }),
    recordsStored: new Counter({ name: 'auditmesh_collector_records_stored_total', help: 'Records verified and durably stored', registers: [registry] }),
    lostBatches: new Counter({
      name: 'auditmesh_collector_lost_batches_total',
      help: 'Batches of sidecar chains that can never arrive: the collector lacked them (lost data it had acknowledged) when the sidecar had already pruned them. Recorded per sidecar; auditmesh verify fails the store on them',
      registers: [registry],
    }),
    duplicateBatches: new Counter({ name: 'auditmesh_collector_duplicate_batches_total', help: 'Batches received again that matched what was stored: acked again, stored once', registers: [registry] }),
    ingestDuration: new Histogram({ name: 'auditmesh_collector_ingest_duration_seconds', help: 'Per segment: from receipt to verified and durably stored', buckets: INGEST_BUCKETS_S, registers: [registry] }),
    storeBytes: new Gauge({
      name: 'auditmesh_collector_store_bytes',
      help: 'Bytes of LMDB pages the store has in use',
      registers: [registry],
      collect() {
        this.set(sample.storeBytes());
      },
    }),
    sidecars: new Gauge({
      name: 'auditmesh_collector_sidecars',
      help: 'Sidecars seen alive by this collector, by whether their signed heartbeats are current or have stopped (stale)',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const { current, stale } = sample.sidecars();
        this.set({ state: 'current' }, current);
        this.set({ state: 'stale' }, stale);
      },
    }),
    forksAfterWitness: new Counter({
      name: 'auditmesh_collector_forks_after_witness_total',
      help: 'Sidecar chains found not to hold a head the collector witnessed earlier (a heartbeat head or a stored link): their tail was rewritten or cut back after the collector saw it. Refused as fork, kept as evidence; /v1/sidecars names them',
      registers: [registry],
    }),
    witnessTreeSize: new Gauge({
      name: 'auditmesh_collector_witness_tree_size',
      help: "Entries in the collector's witness log (links stored and heads witnessed)",
      registers: [registry],
      collect() {
        this.set(sample.witnessTreeSize?.() ?? 0);
      },
    }),
    treeHeadsSigned: new Counter({ name: 'auditmesh_collector_tree_heads_signed_total', help: "Tree heads of the witness log the collector signed (every --checkpoint-interval-ms, and on a proof's demand)", registers: [registry] }),
    streamsActive: new Gauge({ name: 'auditmesh_collector_streams_active', help: 'Open Sync streams from sidecars', registers: [registry] }),
    reconciled: reconciled(registry),
    disagreements: new Counter({
      name: 'auditmesh_collector_reconcile_disagreements_total',
      help: 'Calls whose two ends disagree (caller-only, callee-only, mismatched) per edge: the calling and the called service (bounded labels)',
      labelNames: ['state', 'caller', 'callee'],
      registers: [registry],
    }),
    reconcilePending: new Gauge({ name: 'auditmesh_collector_reconcile_pending', help: 'Calls with one end seen, inside --reconcile-grace', registers: [registry] }),
    anomalyActive: new Gauge({
      name: 'auditmesh_anomaly_active',
      help: '1 while a fleet-wide spike is active on an edge (service, peer, direction), summed over every replica',
      labelNames: ['kind', 'service', 'peer', 'direction'],
      registers: [registry],
    }),
  };
}

/** auditmesh_collector_reconciled_total, every state at 0 from the start. */
function reconciled(registry: Registry): Counter<'state'> {
  const c = new Counter({ name: 'auditmesh_collector_reconciled_total', help: 'Calls reconciled, by state of their two ends (matched, caller-only, callee-only, mismatched, unpaired-external)', labelNames: ['state'], registers: [registry] });
  for (const state of ['matched', 'caller-only', 'callee-only', 'mismatched', 'unpaired-external']) c.inc({ state }, 0);
  return c;
}
