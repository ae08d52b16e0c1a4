import type { IncomingHttpHeaders } from 'node:http';

/** The header a sidecar stamps on outbound requests with its own service; read by the peer's inbound sidecar. */
export const CLIENT_SERVICE_HEADER = 'x-auditmesh-client';
/** Headers of this prefix are auditmesh's own: set only by a sidecar, never taken from a caller. */
const MESH_HEADER_PREFIX = 'x-auditmesh-';
const MAX_CLAIM_CHARS = 256;

/** Removes every auditmesh header a caller sent (HTTP/1.1 and HTTP/2 alike): only a sidecar sets them. */
export function stripMeshHeaders(headers: Record<string, unknown>): void {
  // for-in, not Object.keys(): this runs on every request, and needs no array of the names.
  for (const name in headers) if (name.startsWith(MESH_HEADER_PREFIX)) delete headers[name];
}

/** The calling service an inbound request claims, bounded and printable, as the record keeps it; undefined when none. */
export function claimedClient(headers: IncomingHttpHeaders): string | undefined {
  const value = headers[CLIENT_SERVICE_HEADER];
  if (value === undefined) return undefined;
  return (Array.isArray(value) ? value.join(',') : value).slice(0, MAX_CLAIM_CHARS).replace(/[^\x20-\x7e]/g, '?');
}
