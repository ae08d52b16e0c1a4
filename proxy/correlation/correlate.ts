import type { IncomingHttpHeaders } from 'node:http';
import { randomUUID } from 'node:crypto';
import { formatTraceparent, newSpanId, newTraceId, parseTraceparent } from './traceparent.js';

/** The correlation ids of one exchange, as decided by the sidecar. */
export interface Correlation {
  traceId: string;
  /** The parent span id the upstream sees: the caller's when it sent a valid traceparent, new otherwise. */
  spanId: string;
  /** The value forwarded upstream: unchanged when the caller's was valid, generated otherwise. */
  traceparent: string;
  requestId: string;
  /** A malformed traceparent the caller sent, kept as claimed. */
  claimedTraceparent?: string;
}

const MAX_REQUEST_ID_LENGTH = 200;
// Visible ASCII only: a request id is echoed into responses and records.
const REQUEST_ID_RE = /^[\x21-\x7e]+$/;

/**
 * Decides the correlation of an exchange from its request headers. A valid `traceparent` is
 * forwarded unchanged (the sidecar is not a tracer and does not re-parent spans); an absent or
 * invalid one is replaced by a new trace. `x-request-id` is kept when it is sane, generated
 * otherwise.
 */
export function correlate(headers: IncomingHttpHeaders): Correlation {
  const raw = headers.traceparent;
  const parsed = parseTraceparent(raw);
  const incomingId = headers['x-request-id'];
  const requestId =
    typeof incomingId === 'string' && incomingId.length <= MAX_REQUEST_ID_LENGTH && REQUEST_ID_RE.test(incomingId)
      ? incomingId
      : randomUUID();
  if (parsed !== null) {
    return {
      traceId: parsed.traceId,
      spanId: parsed.parentId,
      traceparent: raw as string,
      requestId,
    };
  }
  const traceId = newTraceId();
  const spanId = newSpanId();
  const correlation: Correlation = { traceId, spanId, traceparent: formatTraceparent(traceId, spanId), requestId };
  if (raw !== undefined) correlation.claimedTraceparent = String(raw).slice(0, 512);
  return correlation;
}
