import { exchangeOf, type ExchangeSummary } from '../../../anomalies/exchange-summary.js';
import type { AuditRecord } from '../../../ledger/record.js';
import { callEndOf, type CallEnd } from '../reconcile/call-end.js';

/**
 * What the collector indexes a record by, taken from its canonical bytes once, at ingest: the
 * auditors' questions (one correlation id or trace across services, one service in a time range,
 * errors only) are answered from these and nothing else.
 */
export interface RecordIndex {
  /** audit.start_unix_ms (0 when the record has none: it still sorts, first). */
  start: number;
  service: string;
  /** peer.service when known and not `unknown`. */
  peer?: string;
  requestId?: string;
  traceId?: string;
  error: boolean;
  /** What fleet anomaly detection reads of it (null: not a finished exchange). */
  exchange: ExchangeSummary | null;
  /** What reconciliation reads of it, its seq unset (null: not an end of a call). */
  call: CallEnd | null;
}

/** Index keys are bounded: an id longer than this is not indexed (it is still stored and verified). */
const MAX_INDEXED_CHARS = 256;

const indexable = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' && v.length <= MAX_INDEXED_CHARS ? v : undefined);

/**
 * An error is an exchange that failed: an `error.type`, an HTTP 5xx, a gRPC status other than OK,
 * or a gap (exchanges that went unrecorded). The one definition, for the index and the filters.
 */
export function isErrorRecord(rec: Partial<AuditRecord>): boolean {
  const status = rec['http.response.status_code'];
  const grpc = rec['rpc.grpc.status_code'];
  return rec['error.type'] !== undefined || rec['audit.kind'] === 'gap' || (typeof status === 'number' && status >= 500) || (typeof grpc === 'number' && grpc !== 0);
}

/** The index entry of a record's canonical bytes, or null when they are not a JSON object. */
export function indexRecord(bytes: Uint8Array): RecordIndex | null {
  let rec: Partial<AuditRecord>;
  try {
    rec = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8')) as Partial<AuditRecord>;
  } catch {
    return null;
  }
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) return null;
  const start = rec['audit.start_unix_ms'];
  const peer = indexable(rec['peer.service']);
  return {
    start: typeof start === 'number' && Number.isFinite(start) && start >= 0 ? start : 0,
    service: indexable(rec['audit.service']) ?? '',
    peer: peer === 'unknown' ? undefined : peer,
    requestId: indexable(rec['audit.request_id']),
    traceId: indexable(rec['trace.id']),
    error: isErrorRecord(rec),
    exchange: isExchangeShaped(rec) ? exchangeOf(rec) : null,
    call: callEndOf(rec, 0),
  };
}

/** Wire bytes may be anything: detection only reads records whose fields have the types it reads. */
function isExchangeShaped(rec: Partial<AuditRecord>): rec is AuditRecord {
  const d = rec['audit.direction'];
  return (d === 'inbound' || d === 'outbound') && typeof rec['audit.start_unix_ms'] === 'number' && (rec['audit.duration_ms'] === undefined || typeof rec['audit.duration_ms'] === 'number') && (rec['peer.service'] === undefined || typeof rec['peer.service'] === 'string');
}
