import type { AuditRecord } from '../../ledger/record.js';
import type { AuditPipeline } from '../audit/pipeline.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { Logger } from '../../command/log.js';
import { createAnomalyDetector, type Anomaly } from '../../anomalies/anomaly-detector.js';
import { exchangeOf, type AlertOptions } from '../../anomalies/exchange-summary.js';

/** Watches finished exchanges and raises anomalies as a metric, a log line and an alert record. */
export interface Alerting {
  observe(record: AuditRecord): void;
  close(): void;
}

/**
 * Anomalies are part of the tamper-evident trail: each is written to the journal as an `alert`
 * record, besides `auditmesh_anomaly_active{kind,peer}`, `auditmesh_anomalies_total{kind}` and
 * one structured log line.
 */
export function createAlerting(deps: {
  service: string;
  options: AlertOptions;
  metrics: SidecarMetrics;
  peerLabel: (peer: string | undefined) => string;
  audit: AuditPipeline | null;
  log: Logger;
}): Alerting {
  const { metrics, log } = deps;
  const alertRecord = (a: Pick<Anomaly, 'kind' | 'peer' | 'direction'> & Partial<Anomaly>, state: 'raised' | 'cleared'): AuditRecord => {
    const record: AuditRecord = {
      'audit.kind': 'alert',
      'audit.phase': 'final',
      'audit.direction': a.direction,
      'audit.service': deps.service,
      'peer.service': a.peer,
      'audit.start_unix_ms': Date.now(),
      'audit.alert.kind': a.kind,
      'audit.alert.state': state,
    };
    if (a.message !== undefined) record['audit.alert.message'] = a.message;
    if (a.observed !== undefined) record['audit.alert.observed'] = Math.round(a.observed * 1000) / 1000;
    if (a.baseline !== undefined) record['audit.alert.baseline'] = Math.round(a.baseline * 1000) / 1000;
    if (a.method !== undefined) record['rpc.method'] = a.method.slice(0, 256);
    return record;
  };
  const detector = createAnomalyDetector({
    ...deps.options,
    onAnomaly(a) {
      const labels = { kind: a.kind, peer: deps.peerLabel(a.peer) };
      metrics.anomalies.inc({ kind: a.kind });
      // First-seen events are moments, not states: they count but do not stay active.
      if (a.kind === 'rate_spike' || a.kind === 'error_spike') metrics.anomalyActive.set(labels, 1);
      log('warn', 'anomaly', { kind: a.kind, peer: a.peer, direction: a.direction, observed: a.observed, baseline: a.baseline, method: a.method, detail: a.message });
      deps.audit?.record(alertRecord(a, 'raised'));
    },
    onClear(a) {
      metrics.anomalyActive.set({ kind: a.kind, peer: deps.peerLabel(a.peer) }, 0);
      log('info', 'anomaly cleared', { kind: a.kind, peer: a.peer, direction: a.direction });
      deps.audit?.record(alertRecord(a, 'cleared'));
    },
  });
  return {
    observe(record) {
      const e = exchangeOf(record);
      if (e !== null) detector.observe(e.peer ?? 'unknown', e.direction, e.method, e.failed);
    },
    close: () => detector.close(),
  };
}
