import type { AuditRecord } from '../audit/record.js';
import { methodLabel, statusClass, type SidecarMetrics } from './metrics.js';

export type ProtocolLabel = 'http1' | 'h2' | 'grpc' | 'websocket' | 'tunnel' | 'tcp';

/** Counts one finished exchange in the request metrics, from its record. Labels stay bounded. */
export function observeExchange(
  metrics: SidecarMetrics,
  peerLabel: (peer: string | undefined) => string,
  protocol: ProtocolLabel,
  record: AuditRecord,
  bytesIn: number,
  bytesOut: number,
): void {
  const direction = record['audit.direction'];
  const grpcStatus = record['rpc.grpc.status_code'];
  metrics.requests.inc({
    direction,
    protocol,
    method: methodLabel(record['http.request.method']),
    status_class: statusClass(record['http.response.status_code']),
    grpc_status: grpcStatus === undefined ? '' : String(grpcStatus),
    peer: peerLabel(record['peer.service']),
  });
  metrics.requestDuration.observe({ direction, protocol }, (record['audit.duration_ms'] ?? 0) / 1000);
  metrics.bytes.inc({ direction, way: 'request' }, bytesIn);
  metrics.bytes.inc({ direction, way: 'response' }, bytesOut);
}
