import { TraceFlags, type HrTime } from '@opentelemetry/api';
import { SeverityNumber, type LogAttributes } from '@opentelemetry/api-logs';
import { resourceFromAttributes, type Resource } from '@opentelemetry/resources';
import type { ReadableLogRecord } from '@opentelemetry/sdk-logs';
import { VERSION } from '../../../command/version.js';
import type { CollectedRecord } from '../api/record-query.js';
import { isErrorRecord } from '../store/record-index.js';

/**
 * A stored record as an OpenTelemetry log record (logs data model). The record's fields already
 * carry semantic-convention names (ledger/record.ts) and become its attributes as they are; the
 * header maps become `http.request.header.<name>` and `http.response.header.<name>` (string
 * arrays, as the conventions define them); `trace.id` and `span.id` become the log record's trace
 * context. `log.record.uid` is `SIDECAR:SEQ`, the same on every export of a record, so a receiver
 * can drop what at-least-once delivery sends twice. The resource names the sidecar that wrote it
 * (one resource per sidecar and identity). Records were redacted at the sidecar: nothing here
 * sees a secret in clear.
 */

export const INSTRUMENTATION_SCOPE = Object.freeze({ name: 'auditmesh', version: VERSION });

const HEX32 = /^[0-9a-f]{32}$/;
const HEX16 = /^[0-9a-f]{16}$/;
/** Fields that become something other than an attribute. */
const NOT_ATTRIBUTES = new Set(['http.request.header', 'http.response.header']);

/** The resource of a sidecar's records: service, instance, Kubernetes namespace and pod, identity, key. */
export function sidecarResource(sidecar: { id: string; service: string; key_id: string }, identity: string | undefined): Resource {
  const [namespace, pod] = sidecar.id.includes('/') ? sidecar.id.split('/', 2) : [undefined, undefined];
  return resourceFromAttributes({
    'service.name': sidecar.service || 'unknown_service',
    'service.instance.id': sidecar.id,
    'auditmesh.sidecar.id': sidecar.id,
    'auditmesh.sidecar.key_id': sidecar.key_id,
    ...(namespace === undefined ? {} : { 'k8s.namespace.name': namespace, 'k8s.pod.name': pod }),
    ...(identity === undefined ? {} : { 'auditmesh.identity': identity }),
  });
}

/** Milliseconds since the epoch (fractional) as [seconds, nanoseconds]. */
export function hrTimeOf(unixMs: number): HrTime {
  const seconds = Math.floor(unixMs / 1000);
  return [seconds, Math.min(999_999_999, Math.round((unixMs - seconds * 1000) * 1e6))];
}

/** ERROR for an error record (5xx, gRPC status not OK, error.type, gap), WARN for a 4xx, else INFO. */
function severityOf(rec: CollectedRecord): [SeverityNumber, string] {
  if (isErrorRecord(rec)) return [SeverityNumber.ERROR, 'ERROR'];
  const status = rec['http.response.status_code'];
  if (typeof status === 'number' && status >= 400) return [SeverityNumber.WARN, 'WARN'];
  return [SeverityNumber.INFO, 'INFO'];
}

/** One line a person reads in a log view: what was called and how it went. */
function bodyOf(rec: CollectedRecord): string {
  const kind = rec['audit.kind'];
  if (kind === 'gap') return `gap: ${rec['audit.gap.exchanges'] ?? '?'} exchanges unrecorded (${rec['audit.gap.reason'] ?? 'unknown'})`;
  if (kind === 'alert') return `alert ${rec['audit.alert.state'] ?? ''} ${rec['audit.alert.kind'] ?? ''}: ${rec['audit.alert.message'] ?? ''}`.trim();
  const who = `${rec['audit.direction']} ${rec['audit.service']}${rec['peer.service'] === undefined ? '' : rec['audit.direction'] === 'inbound' ? ` <- ${rec['peer.service']}` : ` -> ${rec['peer.service']}`}`;
  if (rec['rpc.system'] === 'grpc') return `${who} ${rec['rpc.service'] ?? ''}/${rec['rpc.method'] ?? ''} ${rec['rpc.grpc.status_code'] ?? rec['error.type'] ?? ''}`.trim();
  if (rec['http.request.method'] !== undefined) return `${who} ${rec['http.request.method']} ${rec['url.path'] ?? ''} ${rec['http.response.status_code'] ?? rec['error.type'] ?? ''}`.trim();
  return `${who} ${kind}${rec['error.type'] === undefined ? '' : ` ${rec['error.type']}`}`;
}

/** The record's fields as log attributes: scalars as they are, header maps flattened, anything else as JSON. */
export function attributesOf(rec: CollectedRecord, traced: boolean): LogAttributes {
  const out: LogAttributes = { 'log.record.uid': `${rec['audit.sidecar_id']}:${rec['audit.seq']}` };
  // for...in, not Object.entries: no pair arrays per field of every record exported (a record is a plain parsed object).
  for (const k in rec) {
    const v = (rec as unknown as Record<string, unknown>)[k];
    if (v === undefined || v === null || NOT_ATTRIBUTES.has(k)) continue;
    if (traced && (k === 'trace.id' || k === 'span.id')) continue;
    out[k] = typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : JSON.stringify(v);
  }
  for (const side of ['request', 'response'] as const) {
    const headers = rec[`http.${side}.header`];
    if (headers === undefined || headers === null || typeof headers !== 'object') continue;
    for (const [name, value] of Object.entries(headers)) out[`http.${side}.header.${name.toLowerCase()}`] = [String(value)];
  }
  return out;
}

/** A stored record as an OTLP log record, under `resource`; `observedUnixMs`: when its batch was sealed (the same on every export). */
export function toLogRecord(rec: CollectedRecord, resource: Resource, observedUnixMs: number): ReadableLogRecord {
  const traceId = rec['trace.id'];
  const spanId = rec['span.id'];
  const traced = typeof traceId === 'string' && HEX32.test(traceId) && typeof spanId === 'string' && HEX16.test(spanId);
  const [severityNumber, severityText] = severityOf(rec);
  const start = rec['audit.start_unix_ms'];
  return {
    hrTime: hrTimeOf(typeof start === 'number' && Number.isFinite(start) ? start : observedUnixMs),
    hrTimeObserved: hrTimeOf(observedUnixMs),
    ...(traced ? { spanContext: { traceId: traceId, spanId: spanId, traceFlags: TraceFlags.NONE } } : {}),
    severityNumber,
    severityText,
    body: bodyOf(rec),
    eventName: `auditmesh.${typeof rec['audit.kind'] === 'string' ? rec['audit.kind'] : 'record'}`,
    resource,
    instrumentationScope: INSTRUMENTATION_SCOPE,
    attributes: attributesOf(rec, traced),
    droppedAttributesCount: 0,
  };
}
