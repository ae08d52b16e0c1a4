import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http2';

/** Connection-specific fields are illegal in HTTP/2 (RFC 9113 §8.2.2); `te` only as `trailers`. */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);

/**
 * Copies an HTTP/2 header block for the other side: connection-specific fields dropped, `te`
 * kept only as `trailers`, pseudo-headers kept unless `pseudo` is false (responses and trailers
 * carry only `:status`).
 */
export function forwardableH2Headers(headers: IncomingHttpHeaders, keepPseudo: (name: string) => boolean): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = Object.create(null) as OutgoingHttpHeaders;
  for (const name of Object.keys(headers)) {
    if (CONNECTION_SPECIFIC.has(name)) continue;
    if (name.startsWith(':') && !keepPseudo(name)) continue;
    if (name === 'te' && headers.te !== 'trailers') continue;
    out[name] = headers[name];
  }
  return out;
}

export const REQUEST_PSEUDO = (name: string): boolean => name === ':method' || name === ':path' || name === ':scheme' || name === ':authority';
export const RESPONSE_PSEUDO = (name: string): boolean => name === ':status';
export const NO_PSEUDO = (): boolean => false;
