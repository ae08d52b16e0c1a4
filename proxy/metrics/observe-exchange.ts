import type { AuditRecord, Direction } from '../../ledger/record.js';
import { grpcStatusLabel, methodLabel, statusClass, type SidecarMetrics } from './metrics.js';

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
  if (!metrics.perRequest) return;
  const direction = record['audit.direction'];
  const peer = peerLabel(record['peer.service']);
  metrics.requests.inc({
    direction,
    protocol,
    method: methodLabel(record['http.request.method']),
    status_class: statusClass(record['http.response.status_code']),
    grpc_status: grpcStatusLabel(record['rpc.grpc.status_code']),
    peer,
  });
  metrics.requestDuration.observe({ direction, protocol, peer }, (record['audit.duration_ms'] ?? 0) / 1000);
  metrics.bytes.inc({ direction, way: 'request' }, bytesIn);
  metrics.bytes.inc({ direction, way: 'response' }, bytesOut);
}

/** The sidecar's own share of a request's latency: from its first byte (t0) to forwarding it. */
export function observeOverhead(metrics: SidecarMetrics, direction: Direction, protocol: ProtocolLabel, t0: number): void {
  if (metrics.perRequest) metrics.proxyOverhead.observe({ direction, protocol }, (performance.now() - t0) / 1000);
}
