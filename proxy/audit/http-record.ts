import type { IncomingHttpHeaders } from 'node:http';
import type { AuditRecord, Direction, RecordKind } from '../../ledger/record.js';
import type { Redactor } from './redact.js';
import type { Correlation } from '../correlation/correlate.js';
import type { Route } from '../routing/route.js';
import { claimedClient } from '../correlation/mesh-headers.js';

const MAX_RECORDED_PATH_CHARS = 2048;
/** Anything but visible ASCII: control bytes, spaces, non-ASCII (a path's raw bytes arrive as latin1). */
const UNSAFE_PATH_CHAR = /[^\x21-\x7e]/;
const UNSAFE_PATH_CHARS = /[^\x21-\x7e]/g;

/**
 * A path or query as the record keeps it: bytes outside visible ASCII percent-escaped, so that a
 * non-UTF-8 or control-laden path is recorded as the bytes it was, in plain text.
 */
function escapeUnsafe(text: string): string {
  if (!UNSAFE_PATH_CHAR.test(text)) return text;
  return text.replace(UNSAFE_PATH_CHARS, (c) => {
    const bytes = c.charCodeAt(0) <= 0xff ? [c.charCodeAt(0)] : [...Buffer.from(c, 'utf8')];
    return bytes.map((b) => '%' + b.toString(16).toUpperCase().padStart(2, '0')).join('');
  });
}

/** A path or query as recorded: escaped, then bounded. */
function bounded(text: string): string {
  return escapeUnsafe(text.slice(0, MAX_RECORDED_PATH_CHARS)).slice(0, MAX_RECORDED_PATH_CHARS);
}

/** Milliseconds rounded to the microsecond, as records carry durations. */
export function roundMs(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** What an HTTP request (HTTP/1.1 or HTTP/2) says about itself before it is forwarded. */
export interface HttpRequestFacts {
  kind: RecordKind;
  direction: Direction;
  service: string;
  peer: string | undefined;
  protocolVersion: string;
  clientAddress: string | undefined;
  clientPort: number | undefined;
  method: string;
  scheme: string;
  /** Origin-form path with its query. */
  path: string;
  headers: IncomingHttpHeaders;
  route: Route | null;
  correlation: Correlation;
}

/**
 * The record of an HTTP exchange as far as its request knows it, the same for both HTTP
 * versions: path and query split (the query redacted), selected headers redacted, bounded sizes.
 */
export function httpRequestRecord(facts: HttpRequestFacts, redactor: Redactor): AuditRecord {
  const { route, correlation: c } = facts;
  // Redacted before it is bounded, so a cut cannot leave part of a secret unrecognised.
  const target = redactor.target(facts.path);
  const record: AuditRecord = {
    'audit.kind': facts.kind,
    'audit.phase': 'final',
    'audit.direction': facts.direction,
    'audit.service': facts.service,
    'peer.service': facts.peer ?? 'unknown',
    'audit.start_unix_ms': Date.now(),
    'network.protocol.name': 'http',
    'network.protocol.version': facts.protocolVersion,
    'client.address': facts.clientAddress ?? '',
    'client.port': facts.clientPort ?? 0,
    'http.request.method': facts.method.slice(0, 32),
    'url.scheme': facts.scheme.slice(0, 16),
    'url.path': bounded(target.path),
    'http.request.header': redactor.headers(facts.headers),
    'trace.id': c.traceId,
    'span.id': c.spanId,
    'audit.request_id': c.requestId,
  };
  if (target.query !== undefined) record['url.query'] = bounded(target.query);
  if (route !== null) {
    record['server.address'] = route.host;
    record['server.port'] = route.port;
    if (route.claimed !== undefined) record['audit.claimed.server'] = route.claimed.authority;
  }
  // Claims are whatever the caller sent: a token pasted into one is fingerprinted like any other.
  if (c.claimedTraceparent !== undefined) record['audit.claimed.traceparent'] = redactor.text(c.claimedTraceparent);
  const client = facts.direction === 'inbound' ? claimedClient(facts.headers) : undefined;
  if (client !== undefined) record['audit.claimed.client'] = redactor.text(client);
  return record;
}
