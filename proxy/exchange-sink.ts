import type { AuditRecord } from '../ledger/record.js';
import type { AuditPipeline } from './audit/pipeline.js';
import type { SidecarMetrics } from './metrics/metrics.js';
import { observeExchange, type ProtocolLabel } from './metrics/observe-exchange.js';
import type { Alerting } from './alerts/alerting.js';
import { settleMeshOutcome } from './mesh/mesh-outcome.js';

/**
 * Takes every finished exchange, whatever its protocol. `journal` false: counted and watched
 * but not written (a request refused because the journal cannot take it).
 */
export type ExchangeSink = (protocol: ProtocolLabel, record: AuditRecord, bytesIn: number, bytesOut: number, journal?: boolean) => void;

/**
 * What happens to a finished exchange, in order: its mesh fields settled from how it ended
 * (proxy/mesh/mesh-outcome.ts), counted in the metrics, seen by the anomaly
 * detector, handed to the journal. One place, so no protocol path forgets a step.
 */
export function createExchangeSink(deps: {
  metrics: SidecarMetrics;
  peerLabel: (peer: string | undefined) => string;
  alerting: Alerting | null;
  audit: AuditPipeline | null;
}): ExchangeSink {
  return (protocol, record, bytesIn, bytesOut, journal = true) => {
    const meshFailure = settleMeshOutcome(record);
    if (meshFailure !== undefined) deps.metrics.meshTlsFailures.inc({ direction: record['audit.direction'], reason: meshFailure });
    observeExchange(deps.metrics, deps.peerLabel, protocol, record, bytesIn, bytesOut);
    deps.alerting?.observe(record);
    if (journal) deps.audit?.record(record);
  };
}
