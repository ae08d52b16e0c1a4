import type { AuditRecord, Direction } from '../ledger/record.js';
import type { AnomalyOptions } from './anomaly-detector.js';

/** The anomaly detector's settings, as the sidecar and the collector pass them. */
export type AlertOptions = Omit<AnomalyOptions, 'onAnomaly' | 'onClear'>;

/** gRPC statuses that mean the server failed, not that the caller asked wrongly (UNKNOWN, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE, DATA_LOSS). */
export const GRPC_SERVER_ERROR_CODES: readonly number[] = [2, 4, 8, 13, 14, 15];
const GRPC_SERVER_ERRORS = new Set(GRPC_SERVER_ERROR_CODES);

/** A failed exchange for error ratios: a 5xx, a gRPC server error, or no response (a client aborting is not one). */
export function isFailedExchange(record: AuditRecord): boolean {
  const grpc = record['rpc.grpc.status_code'];
  if (grpc !== undefined) return GRPC_SERVER_ERRORS.has(grpc);
  const status = record['http.response.status_code'];
  return (status !== undefined && status >= 500) || (record['error.type'] !== undefined && record['error.type'] !== 'aborted');
}

/** What first-seen-method tracks: gRPC `service/method`, else the HTTP method, else the kind. */
export function methodOf(record: AuditRecord): string {
  if (record['rpc.service'] !== undefined) return `${record['rpc.service']}/${record['rpc.method'] ?? ''}`;
  return record['http.request.method'] ?? record['audit.kind'];
}

/** What anomaly detection reads of one finished exchange (the sidecar's and the collector's). */
export interface ExchangeSummary {
  /** peer.service as recorded; undefined when unknown. */
  peer: string | undefined;
  direction: Direction;
  method: string;
  failed: boolean;
  /** When the exchange ended: its start plus its duration. */
  endUnixMs: number;
}

/** The summary of a finished exchange, or null for what detection does not count: a record that is not final, or an alert. */
export function exchangeOf(record: AuditRecord): ExchangeSummary | null {
  if (record['audit.phase'] !== 'final' || record['audit.kind'] === 'alert') return null;
  return {
    peer: record['peer.service'],
    direction: record['audit.direction'],
    method: methodOf(record),
    failed: isFailedExchange(record),
    endUnixMs: record['audit.start_unix_ms'] + (record['audit.duration_ms'] ?? 0),
  };
}
