import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import httpProxy from 'http-proxy';
import { Pool, type Dispatcher } from 'undici';

/** Same pool shape as the sidecar's defaults (maxSocketsPerUpstream, upstreamKeepAliveMs). */
const MAX_SOCKETS_PER_UPSTREAM = 256;
const UPSTREAM_IDLE_MS = 4_000;

// RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies still see.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade']);

/** Before headers: a bare 502. After: abort, so the client never takes a cut body for a success. */
function fail(res: ServerResponse): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(502, { 'content-length': '0' });
  res.end();
}

/**
 * The reference forwarder: http-proxy 1.18.1 with a keep-alive agent, as most Node proxies
 * use it. No header hygiene or timeouts beyond http-proxy's own.
 */
export function createHttpProxyBaseline(upstreamPort: number): http.Server {
  const agent = new http.Agent({ keepAlive: true, maxSockets: MAX_SOCKETS_PER_UPSTREAM, timeout: UPSTREAM_IDLE_MS });
  const proxy = httpProxy.createProxyServer({ target: `http://127.0.0.1:${upstreamPort}`, agent });
  // http-proxy rethrows 'error' when no listener is attached; every web() call also has a callback.
  proxy.on('error', () => {});
  const server = http.createServer((req, res) => proxy.web(req, res, {}, () => fail(res)));
  server.on('close', () => {
    proxy.close();
    agent.destroy();
  });
  return server;
}

function requestHeaders(req: IncomingMessage): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    if (!HOP_BY_HOP.has(raw[i]!.toLowerCase())) out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

function responseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const name in headers) {
    if (!HOP_BY_HOP.has(name)) out[name] = headers[name];
  }
  return out;
}

/**
 * An undici Pool forwarder: pool.stream() writes the upstream body straight into the server
 * response, with no intermediate Readable. What a lean Node forwarder can do.
 */
export function createUndiciBaseline(upstreamPort: number): http.Server {
  const pool = new Pool(`http://127.0.0.1:${upstreamPort}`, {
    connections: MAX_SOCKETS_PER_UPSTREAM,
    keepAliveTimeout: UPSTREAM_IDLE_MS,
    keepAliveMaxTimeout: UPSTREAM_IDLE_MS,
  });
  const server = http.createServer((req, res) => {
    const bodyless = req.method === 'GET' || req.method === 'HEAD';
    const options: Dispatcher.RequestOptions = {
      path: req.url ?? '/',
      method: req.method as Dispatcher.HttpMethod,
      headers: requestHeaders(req),
      body: bodyless ? null : req,
    };
    pool
      .stream(options, ({ statusCode, headers }) => {
        res.writeHead(statusCode, responseHeaders(headers));
        return res;
      })
      .catch(() => fail(res));
  });
  server.on('close', () => void pool.close());
  return server;
}
