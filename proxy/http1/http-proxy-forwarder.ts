import http from 'node:http';
import type { ClientRequest, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { PassThrough, type Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { ProxyError, classify, rawAnswer, rescue } from '../errors.js';
import { ForwardedRequest, hasBody, headerPairs } from './forwarded-request.js';
import { forwardableResponseHeaders } from './hop-headers.js';
import type { ForwardOutcome, ForwarderTimeouts, HttpForwarder, UpgradeOutcome } from './forwarder.js';
import type { UpstreamTarget } from '../routing/route.js';
import { createDeadlineSweep, sweepTickMs, type DeadlineSweep, type Swept } from './deadline-sweep.js';
import type { MeshConnector } from '../mesh/mesh-connect.js';

/** Set on the request, the response and both upstream messages: shared listeners find their exchange here. */
const EXCHANGE = Symbol('auditmesh.exchange');
type Carrier = { [EXCHANGE]?: Exchange };
const exchangeOf = (emitter: unknown): Exchange => (emitter as Carrier)[EXCHANGE]!;

/**
 * State of one forwarded request. Its listeners are module-level functions that find it through
 * EXCHANGE, and its response and idle deadlines are checked by the forwarder's one sweep: no
 * closure, once() wrapper or timer is allocated per request for them.
 */
class Exchange extends ForwardedRequest implements Swept {
  proxyReq: ClientRequest | null = null;
  /** When the request was fully sent upstream: the response deadline runs from here; 0 before. */
  sentAtMs = 0;
  /** Upstream socket bytes both ways at the last sweep, and when they last changed (idle deadline). */
  lastBytes = -1;
  lastActiveMs = 0;
  sweepPrev: Swept | null = null;
  sweepNext: Swept | null = null;

  constructor(
    req: IncomingMessage,
    res: ServerResponse,
    target: UpstreamTarget,
    responseHeaders: OutgoingHttpHeaders,
    done: (outcome: ForwardOutcome) => void,
    readonly timeouts: ForwarderTimeouts,
    private readonly sweep: DeadlineSweep,
  ) {
    super(req, res, target, responseHeaders, done);
  }

  /**
   * Leaves the sweep at once: left to the next tick (up to a second away), every finished
   * exchange, with its request, response and upstream request, outlived a young-generation GC
   * and was copied into the old one (bench/README.md, "Figures behind the code").
   */
  override finish(): void {
    if (this.finished) return;
    this.sweep.delete(this);
    super.finish();
  }

  check(nowMs: number): boolean {
    const proxyReq = this.proxyReq;
    if (this.finished || proxyReq === null) return false;
    if (this.sentAtMs > 0 && !this.outcome.upstreamResponded && nowMs - this.sentAtMs >= this.timeouts.responseTimeoutMs) {
      proxyReq.destroy(new ProxyError('AUDITMESH_UPSTREAM_TIMEOUT', 'upstream response timed out'));
      return false;
    }
    const socket = proxyReq.socket;
    const bytes = socket === null ? 0 : socket.bytesRead + socket.bytesWritten;
    if (bytes !== this.lastBytes) {
      this.lastBytes = bytes;
      this.lastActiveMs = nowMs;
    } else if (nowMs - this.lastActiveMs >= this.timeouts.idleTimeoutMs) {
      // Failed here, not from the destroy's deferred error: the client socket's own idle timer
      // can fire in the same tick and must not make an upstream stall look like a client abort.
      const err = new ProxyError('AUDITMESH_UPSTREAM_TIMEOUT', 'upstream idle timed out');
      this.fail(err);
      proxyReq.destroy(err);
      return false;
    }
    return true;
  }
}

/**
 * HTTP/1.1 forwarding on http-proxy 1.18.1, without its known defects (see REFERENCES.md):
 * the response side is handled here (selfHandleResponse) so headers are validated, hop-by-hop
 * fields stripped, trailers forwarded and an upstream failure after the headers becomes an
 * abort; timeouts and client aborts are owned here, not by http-proxy.
 */
export function createHttpProxyForwarder(
  timeouts: ForwarderTimeouts,
  /** The deadlines' sweep; a test passes its own to watch what it holds. */
  sweep: DeadlineSweep = createDeadlineSweep(sweepTickMs(timeouts.responseTimeoutMs, timeouts.idleTimeoutMs)),
  /** Connects to upstreams the mesh directory lists (mesh mTLS); without it they fail, never plaintext. */
  mesh?: MeshConnector,
): HttpForwarder {
  const agentOptions: http.AgentOptions = {
    keepAlive: true,
    maxSockets: timeouts.maxSocketsPerUpstream,
    // A free pooled socket closes before the app's own keep-alive timeout would (nodejs/node#39810).
    timeout: timeouts.upstreamKeepAliveMs,
    scheduling: 'lifo',
  };
  const agent = new http.Agent(agentOptions);
  const meshAgent = createMeshAgent(agentOptions, mesh);
  const proxy = httpProxy.createProxyServer({ agent, selfHandleResponse: true, xfwd: false, ws: true });
  // http-proxy's deleteLength pass sets content-length: 0 on a chunked DELETE/OPTIONS and still
  // pipes the body: request smuggling (#1720). Framing is forwarded intact instead.
  const passes = proxy as unknown as { webPasses: Array<{ name: string }> };
  passes.webPasses = passes.webPasses.filter((p) => p.name !== 'deleteLength');

  // http-proxy emits 'error' on the server when a call has no callback; every call has one, but
  // an 'error' listener keeps a stray one from throwing (its onError rethrows without listeners).
  proxy.on('error', () => {});
  // Emitted once the upstream request has its socket.
  proxy.on('proxyReq', (proxyReq: ClientRequest, req: IncomingMessage) => {
    const ex = (req as Carrier)[EXCHANGE];
    if (ex === undefined) return;
    // http-proxy announces the upstream request only once it has a socket: an exchange that
    // ended before (client gone, body over the limit) must not reach the upstream after all.
    if (ex.finished) return void proxyReq.destroy();
    watchUpstreamRequest(ex, proxyReq, timeouts);
    sweep.add(ex);
  });
  proxy.on('proxyRes', (proxyRes: IncomingMessage, req: IncomingMessage) => {
    const ex = (req as Carrier)[EXCHANGE];
    if (ex !== undefined) relayResponse(ex, proxyRes);
  });

  /** http-proxy calls back with (err, req) when forwarding failed. */
  function onForwardError(err: Error, req: IncomingMessage): void {
    const ex = exchangeOf(req);
    if (ex.proxyReq?.reusedSocket === true && (err as { code?: string }).code === 'ECONNRESET' && ex.replayable()) {
      // The keep-alive race: a pooled socket closed as it was reused. Safe to replay once.
      ex.retried = true;
      ex.proxyReq = null;
      ex.sentAtMs = 0;
      ex.lastBytes = -1;
      forward(ex);
      return;
    }
    ex.fail(err);
  }

  function forward(ex: Exchange): void {
    proxy.web(ex.req, ex.res, { target: { host: ex.target.host, port: ex.target.port, protocol: 'http:' }, agent: ex.target.mesh === undefined ? agent : meshAgent }, onForwardError);
  }

  return {
    web(req, res, target, responseHeaders, done) {
      const ex = new Exchange(req, res, target, responseHeaders, done, timeouts, sweep);
      (req as Carrier)[EXCHANGE] = ex;
      (res as Carrier)[EXCHANGE] = ex;
      // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112 §6.3).
      if (hasBody(req)) req.on('data', onRequestData);
      // http-proxy no longer cancels the upstream request when the client goes away (#1586).
      res.on('close', onClientClose);
      res.on('finish', onClientFinish);
      forward(ex);
    },

    upgrade(req, socket, head, target, done) {
      forwardUpgrade(proxy, req, socket, head, target, target.mesh === undefined ? agent : meshAgent, done);
    },

    close() {
      sweep.close();
      proxy.close();
      agent.destroy();
      meshAgent.destroy();
    },
  };
}

function onRequestData(this: IncomingMessage, chunk: Buffer): void {
  const ex = exchangeOf(this);
  const proxyReq = ex.proxyReq;
  if (!ex.countBody(chunk.length, ex.timeouts.maxRequestBodyBytes)) proxyReq?.destroy();
}

function onClientClose(this: ServerResponse): void {
  if (this.writableFinished) return;
  const ex = exchangeOf(this);
  ex.proxyReq?.destroy();
  ex.fail(new ProxyError('AUDITMESH_CLIENT_ABORTED', 'client closed the connection'), 'aborted');
}

/** The client has the whole response; only a relayed upstream response counts (a rescue answer finishes in fail()). */
function onClientFinish(this: ServerResponse): void {
  const ex = exchangeOf(this);
  if (!ex.outcome.upstreamResponded) return;
  ex.finish();
  if (!ex.req.complete) abandonWithClient(ex.req, ex.proxyReq);
}

/**
 * The upstream answered before the whole request body arrived. Node's server stops watching a
 * request once its response is done, so a client leaving now would leave the upstream request
 * waiting for the rest of the body, and its socket open, for good.
 */
function abandonWithClient(req: IncomingMessage, proxyReq: ClientRequest | null): void {
  const socket = req.socket;
  const onClose = (): void => void proxyReq?.destroy();
  socket.once('close', onClose);
  req.once('end', () => socket.off('close', onClose));
}

/** The connect deadline of a new upstream connection; the response and idle deadlines are the sweep's. */
function watchUpstreamRequest(ex: Exchange, proxyReq: ClientRequest, timeouts: ForwarderTimeouts): void {
  ex.proxyReq = proxyReq;
  (proxyReq as Carrier)[EXCHANGE] = ex;
  const socket = proxyReq.socket;
  if (socket?.connecting) {
    // Once per new pooled connection, not per request: a timer of its own is fine.
    const t = setTimeout(() => proxyReq.destroy(new ProxyError('AUDITMESH_UPSTREAM_CONNECT_TIMEOUT', 'upstream connect timed out')), timeouts.connectTimeoutMs);
    socket.once('connect', () => clearTimeout(t));
    proxyReq.once('close', () => clearTimeout(t));
  }
  // The response deadline runs once the request is fully sent: a slow upload is not a slow upstream.
  proxyReq.on('finish', onUpstreamRequestSent);
}

function onUpstreamRequestSent(this: ClientRequest): void {
  const ex = exchangeOf(this);
  if (ex.proxyReq === this && !ex.finished && !ex.outcome.upstreamResponded) ex.sentAtMs = performance.now();
}

function relayResponse(ex: Exchange, proxyRes: IncomingMessage): void {
  const { res, outcome } = ex;
  outcome.ttfbMs = performance.now() - ex.startedAt;
  const headers = forwardableResponseHeaders(proxyRes.rawHeaders, proxyRes.headers.connection);
  if (headers === null || res.headersSent || res.destroyed) {
    proxyRes.destroy();
    ex.fail(new ProxyError('AUDITMESH_UPSTREAM_PROTOCOL', 'upstream sent invalid response headers'));
    return;
  }
  Object.assign(headers, ex.responseHeaders);
  outcome.upstreamResponded = true;
  outcome.status = proxyRes.statusCode ?? 502;
  outcome.responseHeaders = proxyRes.headers;
  res.writeHead(outcome.status, proxyRes.statusMessage, headers);
  (proxyRes as Carrier)[EXCHANGE] = ex;
  proxyRes.on('data', onResponseData);
  // Registered before pipe()'s own 'end' handler, so trailers are set before res.end().
  proxyRes.on('end', onResponseEnd);
  // pipe() with both failure paths wired by hand rather than stream.pipeline(), which costs an
  // AbortController and a DOMException per response. An upstream that fails mid-body destroys
  // res: the client sees an abort, never a truncated body that looks complete (http-proxy's own
  // pipe() has no error path).
  proxyRes.pipe(res);
  proxyRes.on('error', onResponseCutShort);
  proxyRes.on('close', onResponseCutShort);
}

function onResponseData(this: IncomingMessage, chunk: Buffer): void {
  exchangeOf(this).outcome.responseBytes += chunk.length;
}

function onResponseEnd(this: IncomingMessage): void {
  if (Object.keys(this.trailers).length > 0) exchangeOf(this).res.addTrailers(this.rawTrailers.length > 0 ? headerPairs(this.rawTrailers) : this.trailers);
}

function onResponseCutShort(this: IncomingMessage, err?: Error): void {
  const ex = exchangeOf(this);
  if (ex.finished || this.complete) return;
  ex.fail(err ?? new ProxyError('AUDITMESH_UPSTREAM_RESET', 'upstream closed mid-response'), 'incomplete');
}

function forwardUpgrade(
  proxy: httpProxy,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  target: UpstreamTarget,
  agent: http.Agent,
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
  proxy.ws(req, socket, head, { target: { host: target.host, port: target.port, protocol: 'http:' }, agent }, (err) => {

    proxy.off('proxyReqWs', onProxyReq);
    if (outcome.status === undefined) {
      const error = classify(err);
      const r = rescue(error);
      outcome.error = error;
      outcome.errorKind = r.kind;
      outcome.status = r.status;
      if (socket.writable) socket.end(rawAnswer(r.status));
      else socket.destroy();
    } else {
      outcome.error ??= classify(err);
      outcome.errorKind ??= 'reset';
      socket.destroy();
    }
  });
}

/**
 * The pool for upstreams the mesh directory lists: its every socket is mesh mTLS (an http: request
 * over a TLS socket, as https.Agent does it), pooled apart from plaintext ones. Without a
 * connector (no workload certificate) its connections fail: never plaintext.
 */
function createMeshAgent(options: http.AgentOptions, mesh: MeshConnector | undefined): http.Agent {
  const agent = new http.Agent(options);
  (agent as unknown as { createConnection: (o: { host?: string; port?: number | string }) => Duplex }).createConnection = (o) => {
    if (mesh !== undefined) return mesh({ host: String(o.host ?? ''), port: Number(o.port) });
    const socket = new PassThrough();
    process.nextTick(() => socket.destroy(new ProxyError('AUDITMESH_PEER_HANDSHAKE', 'this sidecar has no workload certificate for a meshed upstream')));
    return socket;
  };
  return agent;
}
