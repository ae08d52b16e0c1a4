import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { validateHeaderName, validateHeaderValue } from 'node:http';

/** RFC 9110 §7.6.1 connection-specific fields, plus the proxy-only ones of RFC 9110 §11.7. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'proxy-authorization',
  'proxy-authenticate',
]);

/** The field names a `Connection` header lists: they are hop-by-hop too. */
function connectionListed(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  return (Array.isArray(value) ? value.join(',') : value)
    .split(',')
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== '');
}

/**
 * Request headers as they go upstream: hop-by-hop and Connection-listed fields removed. A
 * chunked request keeps `transfer-encoding: chunked` so the upstream request is framed the same
 * way (dropping it is http-proxy's DELETE/OPTIONS smuggling bug, #1720).
 */
export function stripRequestHopHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const listed = connectionListed(headers.connection);
  const out: IncomingHttpHeaders = {};
  for (const name of Object.keys(headers)) {
    if (HOP_BY_HOP.has(name) || listed.includes(name)) continue;
    out[name] = headers[name];
  }
  if (headers['transfer-encoding'] !== undefined) out['transfer-encoding'] = 'chunked';
  return out;
}

/**
 * Response headers as they go to the client, from the upstream's raw header list (so repeated
 * fields such as set-cookie survive): hop-by-hop and Connection-listed fields removed, each
 * name and value validated. Returns null when the upstream sent bytes Node refuses to write
 * (`ERR_INVALID_CHAR`, http-proxy #964): the caller answers 502 instead of crashing.
 */
export function forwardableResponseHeaders(rawHeaders: readonly string[], connection: string | string[] | undefined): OutgoingHttpHeaders | null {
  const listed = connectionListed(connection);
  const out: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const name = rawHeaders[i]!.toLowerCase();
    const value = rawHeaders[i + 1]!;
    if (HOP_BY_HOP.has(name) || listed.includes(name)) continue;
    try {
      validateHeaderName(name);
      validateHeaderValue(name, value);
    } catch {
      return null;
    }
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (Array.isArray(prev)) prev.push(value);
    else out[name] = [String(prev), value];
  }
  return out;
}
