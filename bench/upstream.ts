import http from 'node:http';

/**
 * Longer than every proxy's pooled-socket idle timeout (the sidecar's upstreamKeepAliveMs is
 * 4000, the baselines use the same), so the upstream never closes a socket a proxy is reusing.
 */
export const UPSTREAM_KEEP_ALIVE_MS = 65_000;

// About 100 bytes, serialized once: the upstream's cost per request should be only HTTP.
const BODY = Buffer.from(
  JSON.stringify({ id: 42, name: 'widget', price: { amount: 1999, currency: 'EUR' }, tags: ['bench', 'auditmesh'], ok: true }),
);

/** The app behind every path: answers any request with the same small JSON body, keep-alive on. */
export function createUpstream(): http.Server {
  const server = http.createServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': BODY.length });
    res.end(BODY);
  });
  server.keepAliveTimeout = UPSTREAM_KEEP_ALIVE_MS;
  // headersTimeout must exceed keepAliveTimeout or Node closes idle keep-alive sockets early.
  server.headersTimeout = UPSTREAM_KEEP_ALIVE_MS + 1_000;
  return server;
}

export const UPSTREAM_BODY_BYTES = BODY.length;
