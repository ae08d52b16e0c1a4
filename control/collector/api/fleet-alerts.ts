import type { Counter, Gauge } from 'prom-client';
import type { AuditRecord, Direction } from '../../../ledger/record.js';
import { createAnomalyDetector, type Anomaly, type AnomalyKind } from '../../../anomalies/anomaly-detector.js';
import { exchangeOf, type AlertOptions } from '../../../anomalies/exchange-summary.js';
import type { ExchangeGroup } from '../store/encoded-batch.js';
import { createPeerLabels } from '../../../anomalies/peer-label.js';
import type { Logger } from '../../../command/log.js';

/** One anomaly on one edge of the fleet: `service` talking to `peer` in `direction`, summed over every replica. */
export interface FleetAnomaly {
  kind: AnomalyKind;
  service: string;
  peer: string;
  direction: Direction;
  observed?: number;
  baseline?: number;
  method?: string;
  message: string;
  raised_unix_ms: number;
}

export interface FleetAlertMetrics {
  anomalyActive: Gauge<'kind' | 'service' | 'peer' | 'direction'>;
  anomalies: Counter<'kind'>;
}

/** Watches the records every sidecar ships, per edge across all replicas, with the sidecar's own detector. */
export interface FleetAlerts {
  /** One stored record of `service` (the sidecar's identity, as its Hello named it). */
  observe(service: string, record: AuditRecord): void;
  /** A batch's exchanges of one edge, method and outcome, as ingest's workers grouped them (store/encoded-batch.ts), so the event loop parses nothing. */
  observeGroup(service: string, group: ExchangeGroup): void;
  /** Closes the current window; the detector's own timer does this every intervalMs. */
  tick(): void;
  /** Spikes active now. */
  active(): FleetAnomaly[];
  /** The latest anomalies raised (spikes and first-seen edges and methods), newest first. */
  recent(): FleetAnomaly[];
  close(): void;
}

/** How many raised anomalies `recent()` remembers. */
const RECENT_ANOMALIES = 100;
/** Default for maxRecordAgeMs: three detection windows, and never under this (shipping takes a moment). */
const MAX_RECORD_AGE_WINDOWS = 3;
const MIN_MAX_RECORD_AGE_MS = 30_000;
// The detector keys edges by peer and direction; the fleet's edges also have a service, folded
// into the peer key with a byte neither a service nor a peer label can contain.
const SEP = '\u0000';

/**
 * Fleet-wide spike and first-seen detection in the collector. Windows run on the collector's
 * clock, so a record counts when it arrives: records older than `maxRecordAgeMs` (a sidecar
 * catching up after an outage) are skipped, or a backlog would read as a spike. Services and
 * peers in labels are bounded as in the sidecar (DNS-label-shaped, at most 200, else
 * `unknown`/`other`): an inbound peer is a client's claim.
 */
export function createFleetAlerts(deps: { options: AlertOptions; metrics: FleetAlertMetrics; log: Logger; maxRecordAgeMs?: number; now?: () => number }): FleetAlerts {
  // One clock for record ages and the detector's warm-up: wall time, as records carry it.
  const now = deps.now ?? Date.now;
  const maxAgeMs = deps.maxRecordAgeMs ?? Math.max(MAX_RECORD_AGE_WINDOWS * deps.options.intervalMs, MIN_MAX_RECORD_AGE_MS);
  const serviceLabel = createPeerLabels();
  const peerLabel = createPeerLabels();
  const active = new Map<string, FleetAnomaly>();
  const recent: FleetAnomaly[] = [];
  const edgeOf = (a: Pick<Anomaly, 'kind' | 'peer' | 'direction'>) => {
    const [service, peer] = a.peer.split(SEP) as [string, string];
    return { kind: a.kind, service, peer, direction: a.direction };
  };
  const keyOf = (e: ReturnType<typeof edgeOf>): string => [e.kind, e.service, e.peer, e.direction].join(SEP);

  const detector = createAnomalyDetector({
    ...deps.options,
    onAnomaly(a) {
      const edge = edgeOf(a);
      const between = edge.direction === 'outbound' ? `${edge.service} → ${edge.peer}` : `${edge.peer} → ${edge.service}`;
      const anomaly: FleetAnomaly = { ...edge, message: `fleet-wide ${a.message.replace(a.peer, between)}`, raised_unix_ms: now() };
      if (a.observed !== undefined) anomaly.observed = a.observed;
      if (a.baseline !== undefined) anomaly.baseline = a.baseline;
      if (a.method !== undefined) anomaly.method = a.method;
      deps.metrics.anomalies.inc({ kind: a.kind });
      // First-seen events are moments, not states, as in the sidecar: counted and listed, never active.
      if (a.kind === 'rate_spike' || a.kind === 'error_spike') {
        active.set(keyOf(edge), anomaly);
        deps.metrics.anomalyActive.set(edge, 1);
      }
      recent.unshift(anomaly);
      recent.length = Math.min(recent.length, RECENT_ANOMALIES);
      deps.log('warn', 'fleet anomaly', { ...anomaly });
    },
    onClear(a) {
      const edge = edgeOf(a);
      active.delete(keyOf(edge));
      deps.metrics.anomalyActive.set(edge, 0);
      deps.log('info', 'fleet anomaly cleared', edge);
    },
  }, now);

  const observeGroup = (service: string, g: ExchangeGroup): void => {
    // Age from the end: a long stream that just finished is news.
    const oldest = now() - maxAgeMs;
    let count = 0;
    for (const end of g.ends) if (end >= oldest) count++;
    if (count > 0) detector.observe(`${serviceLabel(service)}${SEP}${peerLabel(g.peer)}`, g.direction, g.method, g.failed, count);
  };

  return {
    observe(service, record) {
      const e = exchangeOf(record);
      if (e !== null) observeGroup(service, { ...e, ends: Float64Array.of(e.endUnixMs) });
    },
    observeGroup,
    tick: () => detector.tick(),
    active: () => [...active.values()],
    recent: () => [...recent],
    close: () => detector.close(),
  };
}
