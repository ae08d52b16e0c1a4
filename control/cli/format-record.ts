import { GRPC_STATUS, type AuditRecord, type JournalRecord } from '../../ledger/record.js';

const PATH_COLUMN_CHARS = 28;

/**
 * One line per record for people, led by the sidecar that wrote it and the direction it saw:
 * `20:15:02.114 inventory  in  #42   frontend → inventory  GET /items/7  200  3.1ms  trace 4bf92f35…`.
 * Arrows read from the caller to the callee whichever sidecar wrote it.
 */
export function formatRecordLine(rec: AuditRecord | JournalRecord): string {
  const time = new Date(rec['audit.start_unix_ms']).toISOString().slice(11, 23);
  const seq = 'audit.seq' in rec ? `#${rec['audit.seq']}` : '';
  const self = rec['audit.service'];
  const peer = rec['peer.service'] ?? 'unknown';
  const edge = rec['audit.direction'] === 'inbound' ? `${peer} → ${self}` : `${self} → ${peer}`;
  const grpcStatus = rec['rpc.grpc.status_code'];
  const what =
    rec['audit.kind'] === 'gap'
      ? `GAP ${rec['audit.gap.exchanges'] ?? 0} unrecorded (${rec['audit.gap.reason'] ?? '?'})`
      : rec['audit.kind'] === 'tunnel' || rec['audit.kind'] === 'tcp'
        ? `${rec['audit.kind'].toUpperCase()} ${rec['server.address'] ?? ''}:${rec['server.port'] ?? ''} ${rec['audit.bytes_in'] ?? 0}B↑ ${rec['audit.bytes_out'] ?? 0}B↓`
        : rec['audit.kind'] === 'grpc'
          ? `gRPC ${truncate(`${rec['rpc.service'] ?? ''}/${rec['rpc.method'] ?? ''}`, PATH_COLUMN_CHARS)}`
          : `${rec['http.request.method'] ?? ''} ${truncate(rec['url.path'] ?? '', PATH_COLUMN_CHARS)}`;
  const status = grpcStatus !== undefined ? (GRPC_STATUS[grpcStatus] ?? String(grpcStatus)) : (rec['http.response.status_code'] ?? '-');
  const duration = rec['audit.duration_ms'] === undefined ? '' : `${rec['audit.duration_ms'].toFixed(1)}ms`;
  const error = rec['error.type'] === undefined ? '' : `  ${rec['error.type']}`;
  const phase = rec['audit.phase'] === 'request' ? ' (request)' : '';
  const trace = rec['trace.id'] === undefined ? '' : `  trace ${rec['trace.id'].slice(0, 8)}…`;
  // The collector's verdict that the claimed service is not the writer's proven service account.
  const proven = rec as { 'audit.identity'?: unknown; 'audit.identity_mismatch'?: unknown };
  const mismatch = proven['audit.identity_mismatch'] === true ? `  IDENTITY MISMATCH: written by ${String(proven['audit.identity'])}` : '';
  const by = `${self.slice(0, 12).padEnd(12)} ${rec['audit.direction'] === 'inbound' ? 'in ' : 'out'}`;
  return `${time} ${by} ${seq.padEnd(6)} ${edge.padEnd(26)} ${what.padEnd(PATH_COLUMN_CHARS + 8)} ${String(status).padStart(3)} ${duration.padStart(8)}${error}${phase}${trace}${mismatch}`;
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : text.slice(0, max - 1) + '…';
}
