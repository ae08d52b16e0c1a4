import http from 'node:http';
import type { Readable } from 'node:stream';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { Agent, type Dispatcher } from 'undici';
import { ProxyError } from '../errors.js';
import { ForwardedRequest, hasBody, headerPairs } from './forwarded-request.js';
import { forwardableResponseHeaders } from './hop-headers.js';
import type { ForwardOutcome, ForwarderTimeouts, HttpForwarder } from './forwarder.js';
import type { UpstreamTarget } from '../routing/route.js';
import { undiciMeshConnect, type MeshConnector } from '../mesh/mesh-connect.js';

/**
 * HTTP/1.1 forwarding on an undici Agent (one keep-alive pool per upstream): the same contract
 * as the http-proxy engine (hop-by-hop fields stripped, response headers validated, trailers
 * forwarded, a client abort cancels the upstream request, an upstream failure after the headers
 * becomes an abort, one replay of an idempotent request on a reset before any response), at
 * about half its CPU per request. WebSocket upgrades go to `upgrades` (the http-proxy engine).
 */
export function createUndiciForwarder(timeouts: ForwarderTimeouts, upgrades: HttpForwarder, mesh?: MeshConnector): HttpForwarder {
  const agentOptions: Agent.Options = {
    connections: timeouts.maxSocketsPerUpstream,
    // A pooled socket closes before the app's own keep-alive timeout would: undici also honours
    // the app's `Keep-Alive: timeout=` hint, capped here.
    keepAliveTimeout: timeouts.upstreamKeepAliveMs,
    keepAliveMaxTimeout: timeouts.upstreamKeepAliveMs,
    // undici starts the headers timeout when the request goes out and restarts it with every
    // body chunk sent, so a slow upload is not a slow upstream.
    headersTimeout: timeouts.responseTimeoutMs,
    bodyTimeout: timeouts.idleTimeoutMs,
    connect: { timeout: timeouts.connectTimeoutMs },
  };
  const agent = new Agent(agentOptions);
  // Upstreams the mesh directory lists: a pool of its own whose every connection is mesh mTLS
  // (an http: origin over a TLS socket), so a plaintext pooled socket is never reused for them.
  const meshAgent = mesh === undefined ? null : new Agent({ ...agentOptions, connect: undiciMeshConnect(mesh) as unknown as Agent.Options['connect'] });

  function dispatch(ex: UndiciExchange): void {
    const { req, target } = ex;
    const options: Dispatcher.DispatchOptions = {
      origin: `http://${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`,
      path: req.url ?? '/',
      method: req.method ?? 'GET',
      headers: upstreamHeaders(req.headers),
      body: requestBody(ex),
    };
    if (target.mesh === undefined) agent.dispatch(options, ex);
    else if (meshAgent !== null) meshAgent.dispatch(options, ex);
    else ex.fail(new ProxyError('AUDITMESH_PEER_HANDSHAKE', 'this sidecar has no workload certificate for a meshed upstream'));
  }

  return {
    web(req, res, target, responseHeaders, done) {
      const ex = new UndiciExchange(req, res, target, responseHeaders, done, dispatch);
      ex.bodyLimit = timeouts.maxRequestBodyBytes;
      (res as Carrier)[EXCHANGE] = ex;
      res.on('drain', onClientDrain);
      // A client that goes away cancels the upstream request.
      res.on('close', onClientClose);
      res.on('finish', onClientFinish);
      dispatch(ex);
    },
    upgrade(req, socket, head, target, done) {
      upgrades.upgrade(req, socket, head, target, done);
    },
    close() {
      upgrades.close();
      void agent.destroy();
      void meshAgent?.destroy();
    },
  };
}

const EXCHANGE = Symbol('auditmesh.exchange');
type Carrier = { [EXCHANGE]?: UndiciExchange };
const exchangeOf = (res: ServerResponse): UndiciExchange => (res as Carrier)[EXCHANGE]!;

/** Failures of a reused pooled socket before any response: the keep-alive race, safe to replay once. */
const RESET_CODES = new Set(['UND_ERR_SOCKET', 'ECONNRESET', 'EPIPE']);
/** Request fields undici frames itself (and refuses to be given): hop-by-hop already stripped by the caller. */
const FRAMED_BY_UNDICI = new Set(['transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'expect']);

/**
 * The client's body as undici sends it, counted as it is read: an async iterable, which undici
 * reads only once it writes the request (a 'data' listener added now would let chunks flow away
 * before it is there) and sends chunked unless the client gave a Content-Length (given the
 * stream itself, undici sends a Content-Length when the whole body happens to be buffered
 * already, and the upstream would not see the client's framing).
 */
function requestBody(ex: UndiciExchange): Dispatcher.DispatchOptions['body'] {
  // undici takes async iterables (its documented body types); its type declarations omit them.
  return hasBody(ex.req) ? (countedBody(ex) as unknown as Readable) : null;
}

async function* countedBody(ex: UndiciExchange): AsyncGenerator<Buffer> {
  for await (const chunk of ex.req) {
    // Over the limit: the 413 is answered, and the throw aborts the upstream request.
    if (!ex.countBody((chunk as Buffer).length, ex.bodyLimit)) throw new ProxyError('AUDITMESH_REQUEST_TOO_LARGE', 'request body over the limit');
    yield chunk as Buffer;
  }
}

function upstreamHeaders(headers: IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined || FRAMED_BY_UNDICI.has(name)) continue;
    if (typeof value === 'string') out.push(name, value);
    else for (const v of value) out.push(name, v);
  }
  return out;
}

/** The headers object node:http builds from a raw list (its rules for repeated fields), for the record. */
function incomingHeaders(raw: readonly string[]): IncomingHttpHeaders {
  const headers: IncomingHttpHeaders = {};
  for (let i = 0; i + 1 < raw.length; i += 2) addHeaderLine.call(NODE_DEFAULTS, raw[i]!, raw[i + 1]!, headers);
  return headers;
}

/** node:http's own rule for one header line (which repeated fields join, which keep the first). */
const addHeaderLine = (http.IncomingMessage.prototype as unknown as { _addHeaderLine(this: object, name: string, value: string, dest: object): void })._addHeaderLine;
/** The `this` it reads its options from: joinDuplicateHeaders off, node:http's default. */
const NODE_DEFAULTS = Object.freeze({});

/** One forwarded request, and undici's handler for it (undici's legacy handler API, its native one). */
class UndiciExchange extends ForwardedRequest implements Dispatcher.DispatchHandler {
  private abortUpstream: ((err?: Error) => void) | null = null;
  /** --max-request-body-bytes (0: none). */
  bodyLimit = 0;
  private resumeUpstream: (() => void) | null = null;

  constructor(req: IncomingMessage, res: ServerResponse, target: UpstreamTarget, responseHeaders: OutgoingHttpHeaders, done: (outcome: ForwardOutcome) => void, private readonly redispatch: (ex: UndiciExchange) => void) {
    super(req, res, target, responseHeaders, done);
  }

  /** The client went away: cancel the upstream request, now or as soon as it starts. */
  cancel(): void {
    this.abortUpstream?.(new ProxyError('AUDITMESH_CLIENT_ABORTED', 'client closed the connection'));
  }

  resume(): void {
    this.resumeUpstream?.();
  }

  onConnect(abort: (err?: Error) => void): void {
    this.abortUpstream = abort;
    if (this.finished) abort(new ProxyError('AUDITMESH_CLIENT_ABORTED', 'client closed the connection'));
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean {
    // 1xx informational responses (103 Early Hints) are not relayed; the final response follows.
    if (statusCode < 200 || this.finished) return true;
    const { res, outcome } = this;
    outcome.ttfbMs = performance.now() - this.startedAt;
    const raw = new Array<string>(rawHeaders.length);
    let connection: string | undefined;
    for (let i = 0; i < rawHeaders.length; i++) {
      raw[i] = rawHeaders[i]!.toString('latin1');
      if (i % 2 === 1 && raw[i - 1]!.length === 10 && raw[i - 1]!.toLowerCase() === 'connection') connection = connection === undefined ? raw[i] : `${connection}, ${raw[i]}`;
    }
    const headers = forwardableResponseHeaders(raw, connection);
    if (headers === null || res.headersSent || res.destroyed) {
      this.abortUpstream?.();
      this.fail(new ProxyError('AUDITMESH_UPSTREAM_PROTOCOL', 'upstream sent invalid response headers'));
      return false;
    }
    Object.assign(headers, this.responseHeaders);
    outcome.upstreamResponded = true;
    outcome.status = statusCode;
    outcome.responseHeaders = incomingHeaders(raw);
    this.resumeUpstream = resume;
    res.writeHead(statusCode, statusText, headers);
    return true;
  }

  onData(chunk: Buffer): boolean {
    this.outcome.responseBytes += chunk.length;
    if (this.finished) return true;
    // false pauses the upstream until the client drains (onClientDrain).
    return this.res.write(chunk);
  }

  onComplete(rawTrailers: Buffer[] | string[] | null): void {
    if (this.finished) return;
    if (rawTrailers !== null && rawTrailers.length > 0) this.res.addTrailers(headerPairs(rawTrailers.map((t) => t.toString())));
    this.res.end();
  }

  onError(err: Error): void {
    if (this.finished) return;
    const code = (err as { code?: string }).code ?? '';
    if (RESET_CODES.has(code) && this.replayable()) {
      this.retried = true;
      this.abortUpstream = null;
      this.redispatch(this);
      return;
    }
    this.fail(named(err, code));
  }
}

/**
 * The body deadline as the http-proxy engine words it. classify() maps every other undici code,
 * its headers and connect timeouts included, with the rescue table's own messages.
 */
function named(err: Error, code: string): Error {
  return code === 'UND_ERR_BODY_TIMEOUT' ? new ProxyError('AUDITMESH_UPSTREAM_TIMEOUT', 'upstream idle timed out', { cause: err }) : err;
}

function onClientDrain(this: ServerResponse): void {
  exchangeOf(this).resume();
}

function onClientClose(this: ServerResponse): void {
  if (this.writableFinished) return;
  const ex = exchangeOf(this);
  if (ex.finished) return;
  ex.fail(new ProxyError('AUDITMESH_CLIENT_ABORTED', 'client closed the connection'), 'aborted');
  ex.cancel();
}

function onClientFinish(this: ServerResponse): void {
  const ex = exchangeOf(this);
  if (ex.outcome.upstreamResponded) ex.finish();
}
