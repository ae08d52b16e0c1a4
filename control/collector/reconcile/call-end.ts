import type { AuditRecord } from '../../../ledger/record.js';

/**
 * One end of a call as reconciliation reads it: what the caller's outbound record or the callee's
 * inbound record says about the call. Ingest's hashing workers take it from the record they parse
 * anyway (record-index.ts), so the collector's event loop parses nothing to reconcile.
 */
export interface CallEnd {
  /** audit.seq of the record in its sidecar's journal. */
  seq: number;
  direction: 'inbound' | 'outbound';
  kind: 'http' | 'grpc';
  service: string;
  /** peer.service when known. */
  peer?: string;
  /** Inbound: the calling service the caller's sidecar stamped (x-auditmesh-client). */
  claimedClient?: string;
  requestId: string;
  traceId: string;
  spanId: string;
  /** HTTP method, or the gRPC service. */
  method: string;
  /** URL path, or the gRPC method. */
  path: string;
  status?: number;
  grpcStatus?: number;
  errorType?: string;
  requestBytes?: number;
  responseBytes?: number;
  start: number;
  duration?: number;
  /** Outbound: where the bytes went, `host:port`. */
  server?: string;
  /** Inbound: the address the call came from (a meshed caller's pod IP, which the mesh directory may list). */
  client?: string;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' && v.length <= 256 ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** The end of a call a record is, or null: only final HTTP and gRPC exchanges with a request id and a trace are ends. */
export function callEndOf(rec: Partial<AuditRecord>, seq: number): CallEnd | null {
  const kind = rec['audit.kind'];
  const direction = rec['audit.direction'];
  if ((kind !== 'http' && kind !== 'grpc') || rec['audit.phase'] !== 'final' || (direction !== 'inbound' && direction !== 'outbound')) return null;
  const requestId = str(rec['audit.request_id']);
  const traceId = str(rec['trace.id']);
  const start = num(rec['audit.start_unix_ms']);
  if (requestId === undefined || traceId === undefined || start === undefined) return null;
  const grpc = kind === 'grpc';
  const end: CallEnd = {
    seq,
    direction,
    kind,
    service: str(rec['audit.service']) ?? '',
    requestId,
    traceId,
    spanId: str(rec['span.id']) ?? '',
    method: (grpc ? str(rec['rpc.service']) : str(rec['http.request.method'])) ?? '',
    path: (grpc ? str(rec['rpc.method']) : str(rec['url.path'])) ?? '',
    start,
  };
  const set = <K extends keyof CallEnd>(k: K, v: CallEnd[K] | undefined): void => {
    if (v !== undefined) end[k] = v;
  };
  const peer = str(rec['peer.service']);
  set('peer', peer === 'unknown' ? undefined : peer);
  set('claimedClient', str(rec['audit.claimed.client']));
  set('status', num(rec['http.response.status_code']));
  set('grpcStatus', num(rec['rpc.grpc.status_code']));
  set('errorType', str(rec['error.type']));
  set('requestBytes', num(rec['http.request.body.size']));
  set('responseBytes', num(rec['http.response.body.size']));
  set('duration', num(rec['audit.duration_ms']));
  const host = str(rec['server.address']);
  if (direction === 'outbound' && host !== undefined) end.server = `${host}:${num(rec['server.port']) ?? ''}`;
  if (direction === 'inbound') set('client', str(rec['client.address']));
  return end;
}
