import http from 'node:http';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { ProxyError, classify, rescue } from '../errors.js';
import { forwardableResponseHeaders } from './hop-headers.js';
import type { ForwardOutcome, ForwarderTimeouts, HttpForwarder, UpgradeOutcome, UpstreamTarget } from './forwarder.js';

/** State of one forwarded request, shared between http-proxy's server-level events and web()'s callback. */
interface Exchange {
  res: ServerResponse;
  startedAt: number;
  outcome: ForwardOutcome;
  finished: boolean;
  retried: boolean;
  proxyReq?: ClientRequest;
  timers: NodeJS.Timeout[];
  responseHeaders: OutgoingHttpHeaders;
  done: (outcome: ForwardOutcome) => void;
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/**
 * HTTP/1.1 forwarding on http-proxy 1.18.1, without its known defects (see REFERENCES.md):
 * the response side is handled here (selfHandleResponse) so headers are validated, hop-by-hop
 * fields stripped, trailers forwarded and an upstream failure after the headers becomes an
 * abort; timeouts and client aborts are owned here, not by http-proxy.
 */
export function createHttpProxyForwarder(timeouts: ForwarderTimeouts): HttpForwarder {
  const agent = new http.Agent({
    keepAlive: true,
    maxSockets: timeouts.maxSocketsPerUpstream,
    // A free pooled socket closes before the app's own keep-alive timeout would (nodejs/node#39810).
    timeout: timeouts.upstreamKeepAliveMs,
    scheduling: 'lifo',
  });
  const proxy = httpProxy.createProxyServer({ agent, selfHandleResponse: true, xfwd: false, ws: true });
  // http-proxy's deleteLength pass sets content-length: 0 on a chunked DELETE/OPTIONS and still
  // pipes the body: request smuggling (#1720). Framing is forwarded intact instead.
  const passes = proxy as unknown as { webPasses: Array<{ name: string }> };
  passes.webPasses = passes.webPasses.filter((p) => p.name !== 'deleteLength');
  const exchanges = new WeakMap<IncomingMessage, Exchange>();

  // http-proxy emits 'error' on the server when a call has no callback; every call has one, but
  // an 'error' listener keeps a stray one from throwing (its onError rethrows without listeners).
  proxy.on('error', () => {});
  proxy.on('proxyReq', (proxyReq, req) => {
    const ex = exchanges.get(req);
    if (ex === undefined) return;
    // http-proxy announces the upstream request only once it has a socket: an exchange that
    // ended before (client gone, body over the limit) must not reach the upstream after all.
    if (ex.finished) return void proxyReq.destroy();
    watchUpstreamRequest(ex, proxyReq, timeouts);
  });
  proxy.on('proxyRes', (proxyRes, req) => {
    const ex = exchanges.get(req);
    if (ex !== undefined) relayResponse(ex, proxyRes, req);
  });

  function forward(req: IncomingMessage, ex: Exchange, target: UpstreamTarget): void {
    proxy.web(req, ex.res, { target: { host: target.host, port: target.port, protocol: 'http:' } }, (err) => {
      const reused = ex.proxyReq?.reusedSocket === true;
      if (!ex.finished && !ex.outcome.upstreamResponded && reused && canRetry(req, err) && !ex.retried) {
        // The keep-alive race: a pooled socket closed as it was reused. Safe to replay once.
        ex.retried = true;
        clearTimers(ex);
        forward(req, ex, target);
        return;
      }
      fail(ex, err);
    });
  }

  return {
    web(req, res, target, responseHeaders, done) {
      const ex: Exchange = {
        res,
        startedAt: performance.now(),
        outcome: { upstreamResponded: false, requestBytes: 0, responseBytes: 0 },
        finished: false,
        retried: false,
        timers: [],
        responseHeaders,
        done,
      };
      exchanges.set(req, ex);
      const limit = timeouts.maxRequestBodyBytes;
      req.on('data', (chunk: Buffer) => {
        ex.outcome.requestBytes += chunk.length;
        if (limit > 0 && ex.outcome.requestBytes > limit && !ex.finished) {
          // A chunked body declares no length: it is cut off once it passes the limit.
          ex.proxyReq?.destroy();
          fail(ex, new ProxyError('AUDITMESH_REQUEST_TOO_LARGE', `request body larger than ${limit} bytes`), 'rejected');
        }
      });
      // http-proxy no longer cancels the upstream request when the client goes away (#1586).
      res.on('close', () => {
        if (res.writableFinished) return;
        ex.proxyReq?.destroy();
        fail(ex, new ProxyError('AUDITMESH_CLIENT_ABORTED', 'client closed the connection'), 'aborted');
      });

      forward(req, ex, target);
    },

    upgrade(req, socket, head, target, done) {
      forwardUpgrade(proxy, req, socket, head, target, done);
    },

    close() {
      proxy.close();
      agent.destroy();
    },
  };
}

function canRetry(req: IncomingMessage, err: unknown): boolean {
  const code = (err as { code?: string }).code;
  const hasBody = req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0';
  return code === 'ECONNRESET' && IDEMPOTENT.has(req.method ?? '') && !hasBody && req.headers['transfer-encoding'] === undefined;
}

/** Connect, response and idle timers for one upstream request, each cleared when it is done. */
function watchUpstreamRequest(ex: Exchange, proxyReq: ClientRequest, timeouts: ForwarderTimeouts): void {
  ex.proxyReq = proxyReq;
  const socket = proxyReq.socket;
  if (socket?.connecting) {
    const t = setTimeout(() => proxyReq.destroy(new ProxyError('AUDITMESH_UPSTREAM_CONNECT_TIMEOUT', 'upstream connect timed out')), timeouts.connectTimeoutMs);
    ex.timers.push(t);
    socket.once('connect', () => clearTimeout(t));
  }
  // The response timer starts once the request is fully sent: a slow upload is not a slow upstream.
  proxyReq.once('finish', () => {
    if (ex.finished || ex.outcome.upstreamResponded) return;
    ex.timers.push(setTimeout(() => proxyReq.destroy(new ProxyError('AUDITMESH_UPSTREAM_TIMEOUT', 'upstream response timed out')), timeouts.responseTimeoutMs));
  });
  proxyReq.setTimeout(timeouts.idleTimeoutMs, () => {
    // Failed here, not from the destroy's deferred error: the client socket's own idle timer
    // fires in the same tick and must not make an upstream stall look like a client abort.
    const err = new ProxyError('AUDITMESH_UPSTREAM_TIMEOUT', 'upstream idle timed out');
    fail(ex, err);
    proxyReq.destroy(err);
  });
}

function relayResponse(ex: Exchange, proxyRes: IncomingMessage, req: IncomingMessage): void {
  clearTimers(ex);
  const { res, outcome } = ex;
  outcome.ttfbMs = performance.now() - ex.startedAt;
  const headers = forwardableResponseHeaders(proxyRes.rawHeaders, proxyRes.headers.connection);
  if (headers === null || res.headersSent || res.destroyed) {
    proxyRes.destroy();
    fail(ex, new ProxyError('AUDITMESH_UPSTREAM_PROTOCOL', 'upstream sent invalid response headers'));
    return;
  }
  Object.assign(headers, ex.responseHeaders);
  outcome.upstreamResponded = true;
  outcome.status = proxyRes.statusCode ?? 502;
  outcome.responseHeaders = proxyRes.headers;
  res.writeHead(outcome.status, proxyRes.statusMessage, headers);
  proxyRes.on('data', (chunk: Buffer) => {
    outcome.responseBytes += chunk.length;
  });
  // Registered before pipe()'s own 'end' handler, so trailers are set before res.end().
  proxyRes.once('end', () => {
    if (Object.keys(proxyRes.trailers).length > 0) res.addTrailers(proxyRes.rawTrailers.length > 0 ? pairs(proxyRes.rawTrailers) : proxyRes.trailers);
  });
  // pipe() with both failure paths wired by hand rather than stream.pipeline(), which costs an
  // AbortController and a DOMException per response. An upstream that fails mid-body destroys
  // res: the client sees an abort, never a truncated body that looks complete (http-proxy's own
  // pipe() has no error path).
  proxyRes.pipe(res);
  const cutShort = (err?: Error): void => {
    if (ex.finished || proxyRes.complete) return;
    fail(ex, err ?? new ProxyError('AUDITMESH_UPSTREAM_RESET', 'upstream closed mid-response'), 'incomplete');
  };
  proxyRes.once('error', cutShort);
  proxyRes.once('close', () => cutShort());
  res.once('finish', () => {
    finish(ex);
    if (!req.complete) abandonWithClient(req, ex.proxyReq);
  });
}

/**
 * The upstream answered before the whole request body arrived. Node's server stops watching a
 * request once its response is done, so a client leaving now would leave the upstream request
 * waiting for the rest of the body, and its socket open, for good.
 */
function abandonWithClient(req: IncomingMessage, proxyReq: ClientRequest | undefined): void {
  const socket = req.socket;
  const onClose = (): void => void proxyReq?.destroy();
  socket.once('close', onClose);
  req.once('end', () => socket.off('close', onClose));
}

function pairs(raw: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

function clearTimers(ex: Exchange): void {
  for (const t of ex.timers) clearTimeout(t);
  ex.timers.length = 0;
}

function finish(ex: Exchange): void {
  if (ex.finished) return;
  ex.finished = true;
  clearTimers(ex);
  ex.done(ex.outcome);
}

/** Records a failure; before headers the client gets the rescue table's answer, after them an abort. */
function fail(ex: Exchange, err: unknown, kind?: ForwardOutcome['errorKind']): void {
  if (ex.finished) return;
  const error = classify(err);
  const r = rescue(error);
  ex.outcome.error = error;
  ex.outcome.errorKind = kind ?? (ex.outcome.upstreamResponded ? 'incomplete' : r.kind);
  const { res } = ex;
  if (kind === 'aborted') {
    // Nobody to answer.
  } else if (!res.headersSent && !res.destroyed) {
    ex.outcome.status = r.status;
    res.writeHead(r.status, { ...ex.responseHeaders, 'content-type': 'text/plain; charset=utf-8', 'x-auditmesh-error': error.code, connection: 'close' });
    res.end(`auditmesh: ${r.message}\n`);
  } else {
    res.destroy();
  }
  finish(ex);
}

function forwardUpgrade(
  proxy: httpProxy,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: UpstreamTarget,
  done: (outcome: UpgradeOutcome) => void,
): void {
  const startedAt = performance.now();
  const outcome: UpgradeOutcome = { bytesIn: 0, bytesOut: 0 };
  let reported = false;
  const report = (): void => {
    if (reported) return;
    reported = true;
    done(outcome);
  };
  socket.on('data', (chunk: Buffer) => {
    outcome.bytesIn += chunk.length;
  });
  const write = socket.write.bind(socket) as (chunk: unknown, ...rest: unknown[]) => boolean;
  socket.write = ((chunk: unknown, ...rest: unknown[]) => {
    outcome.bytesOut += typeof chunk === 'string' ? Buffer.byteLength(chunk) : (chunk as Buffer).length;
    return write(chunk, ...rest);
  }) as typeof socket.write;
  socket.on('error', () => {});
  socket.once('close', report);
  const onProxyReq = (proxyReq: ClientRequest, r: IncomingMessage): void => {
    if (r !== req) return;
    proxy.off('proxyReqWs', onProxyReq);
    proxyReq.once('upgrade', (proxyRes: IncomingMessage) => {
      outcome.status = proxyRes.statusCode;
      outcome.ttfbMs = performance.now() - startedAt;
    });
    // The upstream declined the upgrade: http-proxy relays that response itself.
    proxyReq.once('response', (proxyRes: IncomingMessage) => {
      outcome.status = proxyRes.statusCode;
    });
  };
  proxy.on('proxyReqWs', onProxyReq);
  proxy.ws(req, socket, head, { target: { host: target.host, port: target.port, protocol: 'http:' } }, (err) => {

    proxy.off('proxyReqWs', onProxyReq);
    if (outcome.status === undefined) {
      const error = classify(err);
      const r = rescue(error);
      outcome.error = error;
      outcome.errorKind = r.kind;
      outcome.status = r.status;
      if (socket.writable) socket.end(`HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      else socket.destroy();
    } else {
      outcome.error ??= classify(err);
      outcome.errorKind ??= 'reset';
      socket.destroy();
    }
  });
}
