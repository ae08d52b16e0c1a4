import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createRegistry } from '../../command/metrics-registry.js';
import { ANOMALY_KINDS, initialiseLabels, REFUSAL_CODES } from '../../command/label-values.js';
import { DIRECTIONS, GAP_REASONS, initialiseSessions, MESH_FAILURE_REASONS, UNRECORDED_REASONS, UNVERIFIED_REASONS } from './label-values.js';

/**
 * Every metric the sidecar exposes, defined once. Labels are bounded by construction: the
 * callers pass a method from a fixed set, a status class, a peer service name (never a raw
 * path, id or address).
 */
export interface SidecarMetrics {
  readonly registry: Registry;
  /** False with --request-metrics off: exchanges are not counted or timed (to measure what that costs). */
  readonly perRequest: boolean;
  readonly requests: Counter<'direction' | 'protocol' | 'method' | 'status_class' | 'grpc_status' | 'peer'>;
  readonly requestDuration: Histogram<'direction' | 'protocol' | 'peer'>;
  readonly bytes: Counter<'direction' | 'way'>;
  readonly connections: Gauge<'direction' | 'kind'>;
  readonly journalRecords: Counter<'result'>;
  readonly journalCommitDuration: Histogram;
  readonly journalUnrecorded: Counter<'reason'>;
  readonly poolQueue: Gauge;
  readonly batcherPending: Gauge;
  readonly anomalies: Counter<'kind'>;
  readonly anomalyActive: Gauge<'kind' | 'peer'>;
  readonly proxyOverhead: Histogram<'direction' | 'protocol'>;
  readonly connectionsOpened: Counter<'direction' | 'kind'>;
  readonly connectionsClosed: Counter<'direction' | 'kind'>;
  readonly tcpOpened: Counter<'direction'>;
  readonly tcpClosed: Counter<'direction'>;
  readonly tcpActive: Gauge<'direction'>;
  readonly journalBytes: Gauge;
  readonly journalLimitBytes: Gauge;
  readonly journalFull: Gauge;
  readonly journalPrunedRecords: Counter;
  readonly journalRejected: Counter;
  readonly journalGapRecords: Counter<'reason'>;
  readonly journalGapExchanges: Counter<'reason'>;
  /** Sidecar-to-sidecar mTLS failures and policy refusals, by direction and reason (mesh-outcome.ts). */
  readonly meshTlsFailures: Counter<'direction' | 'reason'>;
  readonly shipper: ShipperMetrics;
}

/** What the shipper reports about the journal's backlog, read at scrape time. */
export interface ShipperBacklog {
  records: number;
  lagSeconds: number;
}

/** Shipping to the collector (proxy/ship/); names fixed: alert rules and dashboards use them. */
export interface ShipperMetrics {
  readonly batchesShipped: Counter;
  readonly recordsShipped: Counter;
  readonly batchesRefused: Counter<'code'>;
  readonly batchesLost: Counter;
  /** Welcomes and Acks not believed (unsigned, bad signature, certificate not from the mesh CA): the stream ended, nothing marked shipped. */
  readonly unverifiedAcks: Counter<'reason'>;
  readonly connected: Gauge;
  readonly reconnects: Counter;
  /** The running shipper's backlog, read at scrape time; unset without a collector. */
  setBacklogProbe(probe: (() => ShipperBacklog) | null): void;
}

/** OpenTelemetry's advisory buckets for http.server.request.duration, in seconds. */
const DURATION_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10];
/** The sidecar's own share of a request's latency is microseconds to milliseconds. */
const OVERHEAD_BUCKETS_S = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];
const COMMIT_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];

/**
 * `service`, the sidecar's own identity, is a label on every series it exposes: an edge on a
 * dashboard is service → peer, and the scrape target's labels (pod, namespace) do not name it.
 */
export function createSidecarMetrics(opts: { perRequest?: boolean; service?: string } = {}): SidecarMetrics {
  const registry = createRegistry(opts.service === undefined ? {} : { service: opts.service });
  const journalRecords = new Counter({
    name: 'auditmesh_journal_records_total',
    help: 'Audit records by journal outcome (written, failed)',
    labelNames: ['result'],
    registers: [registry],
  });
  // Both outcomes exist from the start, so rate() and alerts see a 0 rather than no series.
  initialiseLabels(journalRecords, 'result', ['written', 'failed']);
  const journalUnrecorded = new Counter({
    name: 'auditmesh_journal_unrecorded_total',
    help: 'Exchanges whose audit record could not be written, by reason',
    labelNames: ['reason'],
    registers: [registry],
  });
  initialiseLabels(journalUnrecorded, 'reason', UNRECORDED_REASONS);
  const anomalies = new Counter({
    name: 'auditmesh_anomalies_total',
    help: 'Anomalies raised (rate_spike, error_spike, first_seen_peer, first_seen_method)',
    labelNames: ['kind'],
    registers: [registry],
  });
  initialiseLabels(anomalies, 'kind', ANOMALY_KINDS);
  const sessions = createSessionMetrics(registry);
  initialiseSessions([sessions.connections, sessions.connectionsOpened, sessions.connectionsClosed]);
  const tcp = createTcpMetrics(registry);
  for (const m of [tcp.tcpOpened, tcp.tcpClosed, tcp.tcpActive]) initialiseLabels(m, 'direction', DIRECTIONS);
  const meshTlsFailures = new Counter({
    name: 'auditmesh_mesh_tls_failures_total',
    help: 'Sidecar-to-sidecar mTLS: handshakes that failed (peer_untrusted, peer_expired, peer_identity_mismatch, peer_handshake), mTLS connections reset (peer_reset), callers refused by --inbound-policy (unverified_peer), plaintext calls while the mesh directory was stale (directory_stale)',
    labelNames: ['direction', 'reason'],
    registers: [registry],
  });
  for (const direction of DIRECTIONS) for (const reason of MESH_FAILURE_REASONS) meshTlsFailures.inc({ direction, reason }, 0);
  return {
    registry,
    perRequest: opts.perRequest ?? true,
    meshTlsFailures,
    journalRecords,
    journalUnrecorded,
    anomalies,
    requests: new Counter({
      name: 'auditmesh_requests_total',
      help: 'Exchanges proxied, by direction, protocol, method, status class, gRPC status and peer service',
      labelNames: ['direction', 'protocol', 'method', 'status_class', 'grpc_status', 'peer'],
      registers: [registry],
    }),
    requestDuration: new Histogram({
      name: 'auditmesh_request_duration_seconds',
      help: 'Duration of proxied exchanges, first request byte to last response byte, by direction, protocol and peer service',
      labelNames: ['direction', 'protocol', 'peer'],
      buckets: DURATION_BUCKETS_S,
      registers: [registry],
    }),
    bytes: new Counter({
      name: 'auditmesh_bytes_total',
      help: 'Body bytes proxied, by direction and way (request or response)',
      labelNames: ['direction', 'way'],
      registers: [registry],
    }),
    journalCommitDuration: new Histogram({
      name: 'auditmesh_journal_commit_duration_seconds',
      help: 'Time from a batch being sealed to its journal commit',
      buckets: COMMIT_BUCKETS_S,
      registers: [registry],
    }),
    poolQueue: new Gauge({
      name: 'auditmesh_pool_queue_length',
      help: 'Batches waiting for a worker of the hashing pool',
      registers: [registry],
    }),
    anomalyActive: new Gauge({
      name: 'auditmesh_anomaly_active',
      help: '1 while a spike anomaly is active on an edge',
      labelNames: ['kind', 'peer'],
      registers: [registry],
    }),
    proxyOverhead: new Histogram({
      name: 'auditmesh_proxy_overhead_seconds',
      help: 'Latency the sidecar itself adds before forwarding a request (correlation, routing, strict-mode durability)',
      labelNames: ['direction', 'protocol'],
      buckets: OVERHEAD_BUCKETS_S,
      registers: [registry],
    }),
    ...sessions,
    ...tcp,
    batcherPending: new Gauge({
      name: 'auditmesh_batcher_pending_records',
      help: 'Records handed over but not yet committed to the journal',
      registers: [registry],
    }),
    ...createJournalBoundMetrics(registry),
    shipper: createShipperMetrics(registry),
  };
}

function createShipperMetrics(registry: Registry): ShipperMetrics {
  let probe: (() => ShipperBacklog) | null = null;
  const none: ShipperBacklog = { records: 0, lagSeconds: 0 };
  // Both gauges are read at scrape time from the running shipper: no timer keeps them fresh.
  new Gauge({
    name: 'auditmesh_shipper_unshipped_records',
    help: 'Records in the journal the collector has not acknowledged',
    registers: [registry],
    collect() {
      this.set((probe?.() ?? none).records);
    },
  });
  new Gauge({
    name: 'auditmesh_shipper_lag_seconds',
    help: 'Age of the oldest record the collector has not acknowledged; 0 when none',
    registers: [registry],
    collect() {
      this.set((probe?.() ?? none).lagSeconds);
    },
  });
  const batchesRefused = new Counter({
    name: 'auditmesh_shipper_batches_refused_total',
    help: 'Segments the collector refused, by refusal code (gap, fork, bad-signature, unauthenticated, ...; other for a code this build does not know)',
    labelNames: ['code'],
    registers: [registry],
  });
  initialiseLabels(batchesRefused, 'code', [...REFUSAL_CODES, 'other']);
  const unverifiedAcks = new Counter({
    name: 'auditmesh_shipper_unverified_acks_total',
    help: "Welcomes and Acks of the collector the shipper did not believe, by reason (unsigned, bad-signature, untrusted-certificate): the stream was ended and nothing was marked shipped or pruned",
    labelNames: ['reason'],
    registers: [registry],
  });
  initialiseLabels(unverifiedAcks, 'reason', UNVERIFIED_REASONS);
  return {
    batchesRefused,
    unverifiedAcks,
    batchesShipped: new Counter({ name: 'auditmesh_shipper_batches_shipped_total', help: 'Journal links (batches) the collector acknowledged', registers: [registry] }),
    recordsShipped: new Counter({ name: 'auditmesh_shipper_records_shipped_total', help: 'Audit records the collector acknowledged', registers: [registry] }),
    batchesLost: new Counter({
      name: 'auditmesh_shipper_batches_lost_total',
      help: 'Links the collector no longer holds and the journal no longer retains: they will never reach it',
      registers: [registry],
    }),
    connected: new Gauge({ name: 'auditmesh_shipper_connected', help: '1 while a sync stream to the collector is open and welcomed', registers: [registry] }),
    reconnects: new Counter({ name: 'auditmesh_shipper_reconnects_total', help: 'Sync streams opened again after the previous one ended or failed', registers: [registry] }),
    setBacklogProbe: (next) => void (probe = next),
  };
}

/** Relayed sessions: WebSocket, CONNECT tunnels, opaque TCP. */
function createSessionMetrics(registry: Registry) {
  const labelNames = ['direction', 'kind'] as const;
  return {
    connections: new Gauge({ name: 'auditmesh_connections_active', help: 'Open tunnels, WebSocket sessions and opaque TCP connections', labelNames, registers: [registry] }),
    connectionsOpened: new Counter({ name: 'auditmesh_connections_opened_total', help: 'Tunnels, WebSocket sessions and opaque TCP connections opened', labelNames, registers: [registry] }),
    connectionsClosed: new Counter({ name: 'auditmesh_connections_closed_total', help: 'Tunnels, WebSocket sessions and opaque TCP connections closed', labelNames, registers: [registry] }),
  };
}

/** Every client connection the capture listeners accept, whatever protocol it turns out to speak. */
function createTcpMetrics(registry: Registry) {
  const labelNames = ['direction'] as const;
  return {
    tcpOpened: new Counter({ name: 'auditmesh_tcp_connections_opened_total', help: 'Client TCP connections accepted by the inbound and outbound listeners', labelNames, registers: [registry] }),
    tcpClosed: new Counter({ name: 'auditmesh_tcp_connections_closed_total', help: 'Client TCP connections closed', labelNames, registers: [registry] }),
    tcpActive: new Gauge({ name: 'auditmesh_tcp_connections_active', help: 'Client TCP connections open now', labelNames, registers: [registry] }),
  };
}

/** The journal's bound and what happens at it (--journal-limit-bytes, --on-journal-full). */
function createJournalBoundMetrics(registry: Registry) {
  const gapCounter = (name: string, help: string): Counter<'reason'> => {
    const counter = new Counter({ name, help, labelNames: ['reason'], registers: [registry] });
    initialiseLabels(counter, 'reason', GAP_REASONS);
    return counter;
  };
  return {
    journalBytes: new Gauge({ name: 'auditmesh_journal_bytes', help: 'Bytes of LMDB pages the journal has in use', registers: [registry] }),
    journalLimitBytes: new Gauge({ name: 'auditmesh_journal_limit_bytes', help: 'The journal bound (--journal-limit-bytes); 0 for none', registers: [registry] }),
    journalFull: new Gauge({ name: 'auditmesh_journal_full', help: '1 while the journal is at its bound', registers: [registry] }),
    journalPrunedRecords: new Counter({ name: 'auditmesh_journal_pruned_records_total', help: 'Records pruned from the journal by retention', registers: [registry] }),
    journalRejected: new Counter({
      name: 'auditmesh_journal_rejected_total',
      help: 'Requests answered 503 because the journal was full or unwritable (--on-journal-full reject)',
      registers: [registry],
    }),
    journalGapRecords: gapCounter('auditmesh_journal_gap_records_total', 'Signed gap records written, by reason'),
    journalGapExchanges: gapCounter('auditmesh_journal_gap_exchanges_total', 'Exchanges that went through without a record of their own, covered by a gap record, by reason'),
  };
}

/** `2xx`, `4xx`, ... for a status code; `error` when the exchange had no response. */
export function statusClass(status: number | undefined): string {
  if (status === undefined || status < 100 || status > 599) return 'error';
  return `${Math.floor(status / 100)}xx`;
}

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);

/** Methods outside RFC 9110's set become `_OTHER`, as OpenTelemetry prescribes. */
export function methodLabel(method: string | undefined): string {
  return method !== undefined && KNOWN_METHODS.has(method) ? method : '_OTHER';
}

/** gRPC's status codes are 0..16; anything else an upstream sends becomes `_OTHER`; '' for no gRPC status. */
export function grpcStatusLabel(code: number | undefined): string {
  if (code === undefined) return '';
  return Number.isInteger(code) && code >= 0 && code <= 16 ? String(code) : '_OTHER';
}
