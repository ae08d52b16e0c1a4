import { constants, type ClientHttp2Stream, type IncomingHttpHeaders, type OutgoingHttpHeaders, type ServerHttp2Stream } from 'node:http2';
import type { Socket } from 'node:net';
import type { AuditRecord, Direction } from '../../ledger/record.js';
import type { AuditPipeline } from '../audit/pipeline.js';
import { JOURNAL_REJECTS, type AuditGate } from '../audit/audit-gate.js';
import type { Redactor } from '../audit/redact.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { AuditMode } from '../config.js';
import type { Logger } from '../../command/log.js';
import type { Route } from '../routing/route.js';
import { peerHost } from '../routing/target.js';
import { correlate, type Correlation } from '../correlation/correlate.js';
import { peerOf } from '../../anomalies/peer-label.js';
import { httpRequestRecord, roundMs } from '../audit/http-record.js';
import type { ExchangeSink } from '../exchange-sink.js';
import { observeOverhead } from '../metrics/observe-exchange.js';
import { CLIENT_SERVICE_HEADER, stripMeshHeaders } from '../correlation/mesh-headers.js';
import { ProxyError, answerHeaders, classify, rescue } from '../errors.js';
import type { SessionPool } from './session-pool.js';
import { createGrpcMessageCounter, parseGrpcPath, parseGrpcTimeout } from './grpc-framing.js';
import { NO_PSEUDO, REQUEST_PSEUDO, RESPONSE_PSEUDO, forwardableH2Headers } from './h2-headers.js';
import { grpcErrorTrailers, rescueToGrpcStatus } from './grpc-status.js';
import type { MeshPeers } from '../mesh/mesh-peers.js';

const { NGHTTP2_CANCEL, NGHTTP2_REFUSED_STREAM, NGHTTP2_FLAG_END_STREAM } = constants;
/** After a call's deadline the sidecar gives the endpoints this long to end it themselves. */
const DEADLINE_GRACE_MS = 100;
const MAX_GRPC_MESSAGE_CHARS = 256;
/**
 * The sidecar starts a call's clock when it gets to the stream, after the client did (transit, a
 * busy event loop): a reset this close to the deadline counts as reaching it. 50 ms was too
 * little: in CI a 300 ms call cancelled at its deadline was recorded as `aborted`, the event loop
 * having reached the new stream more than 50 ms late.
 */
const DEADLINE_SLACK_MS = 100;
const DEADLINE_SLACK_RATIO = 0.25;

export interface H2Deps {
  direction: Direction;
  service: string;
  mode: AuditMode;
  /** The socket (HTTP/2's proxy of it) lets a route find a redirected connection's original destination. */
  route: (authority: string | undefined, path: string, socket: Socket | undefined) => Route | null;
  sessions: SessionPool;
  audit: AuditPipeline | null;
  /** Admission and strict durability, as for every protocol. */
  gate: AuditGate;
  redactor: Redactor;
  metrics: SidecarMetrics;
  /** Where every finished exchange goes: metrics, alerts, the journal. */
  onExchange: ExchangeSink;
  log: Logger;
  responseTimeoutMs: number;
  /** Interim records for long-lived streams at this interval; 0: none. */
  interimRecordMs: number;
  /** A gRPC message from the client declared larger than this ends the call with RESOURCE_EXHAUSTED; 0: no limit. */
  maxGrpcMessageBytes: number;
  /** Stamps the peer's proven identity (or none); inbound, refuses callers --inbound-policy does not admit. */
  peers: MeshPeers;
}

/** Everything one proxied HTTP/2 stream tracks until it closes. */
interface Call {
  deps: H2Deps;
  stream: ServerHttp2Stream;
  req?: ClientHttp2Stream;
  record: AuditRecord;
  /** The :path as the client sent it. */
  path: string;
  grpc: boolean;
  t0: number;
  requestCounter: ReturnType<typeof createGrpcMessageCounter>;
  responseCounter: ReturnType<typeof createGrpcMessageCounter>;
  trailers?: IncomingHttpHeaders;
  timers: NodeJS.Timeout[];
  /** Plain HTTP/2 only: time allowed for the upstream's response headers (gRPC uses deadlines). */
  responseTimer?: NodeJS.Timeout;
  /** performance.now() from which a client reset counts as the call's deadline (less slack). */
  deadlineAt?: number;
  interims: number;
  /** The sidecar answered the client itself (an error): the upstream's reset is not relayed. */
  answered: boolean;
  /** False for a call refused because the journal cannot take it: counted, not journalled. */
  journal: boolean;
  done: boolean;
}

/** Proxies one HTTP/2 stream (a gRPC call of any kind, or plain h2) and records it when it closes. */
export function handleH2Stream(deps: H2Deps, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, flags: number): void {
  stream.on('error', () => {});
  const correlation = correlate(headers);
  const path = headers[':path'] ?? '/';
  const authority = headers[':authority'] ?? headers.host;
  const grpc = String(headers['content-type'] ?? '').startsWith('application/grpc');
  const route = deps.route(authority, path, stream.session?.socket as Socket | undefined);
  const call: Call = {
    deps,
    stream,
    record: baseRecord(deps, stream, headers, route, correlation, grpc),
    path,
    grpc,
    t0: performance.now(),
    requestCounter: createGrpcMessageCounter(),
    responseCounter: createGrpcMessageCounter(),
    timers: [],
    interims: 0,
    answered: false,
    journal: true,
    done: false,
  };
  const encoded = headers['grpc-encoding'] !== undefined && headers['grpc-encoding'] !== 'identity';
  stream.on('data', (chunk: Buffer) => {
    call.requestCounter.push(chunk);
    if (grpc && !call.done && !call.answered) checkFraming(call, encoded);
  });
  stream.once('close', () => finish(call));
  if (route === null) return answerError(call, new ProxyError('AUDITMESH_NO_ROUTE', 'no upstream for this :authority'));
  // A refused gRPC caller gets PERMISSION_DENIED, a plain HTTP/2 one 403 (the rescue table).
  const refusal = deps.peers.refuse(stream.session?.socket as Socket | undefined);
  if (refusal !== null) return answerError(call, refusal);
  // Refused unrecorded: the journal is what cannot take it.
  if (!deps.gate.admits()) {
    call.journal = false;
    return answerError(call, JOURNAL_REJECTS());
  }
  const start = (): void => forward(call, route, upstreamHeaders(deps, stream, headers, correlation), (flags & NGHTTP2_FLAG_END_STREAM) !== 0);
  if (!deps.gate.waits) return start();
  // Paused while the request record is made durable; resumed (or answered) when it is.
  stream.pause();
  deps.gate.beforeForward(
    call.record,
    () => {
      stream.resume();
      if (!stream.closed) start();
    },
    (error) => answerError(call, error),
  );
}

function forward(call: Call, route: Route, headers: OutgoingHttpHeaders, endStream: boolean): void {
  const { deps, stream } = call;
  const deadlineMs = parseGrpcTimeout(headers['grpc-timeout'] as string | undefined);
  if (deadlineMs !== null) {
    // Propagate what is left of the deadline, and end the call if neither side does.
    const left = Math.max(0, deadlineMs - (performance.now() - call.t0));
    call.deadlineAt = call.t0 + deadlineMs - Math.max(DEADLINE_SLACK_MS, deadlineMs * DEADLINE_SLACK_RATIO);
    headers['grpc-timeout'] = `${Math.ceil(left)}m`;
    call.timers.push(setTimeout(() => expire(call), left + DEADLINE_GRACE_MS));
  }
  observeOverhead(deps.metrics, deps.direction, call.grpc ? 'grpc' : 'h2', call.t0);
  let req: ClientHttp2Stream;
  try {
    req = deps.sessions.get(route.target).request(headers, { endStream });
  } catch (err) {
    return answerError(call, classify(err));
  }
  call.req = req;
  if (!call.grpc) {
    call.responseTimer = setTimeout(() => {
      answerError(call, new ProxyError('AUDITMESH_UPSTREAM_TIMEOUT', 'upstream response timed out'));
      req.close(NGHTTP2_CANCEL);
    }, deps.responseTimeoutMs);
  }
  if (!endStream) stream.pipe(req);
  req.on('response', (resHeaders, resFlags) => relayResponse(call, req, resHeaders, resFlags));
  req.on('trailers', (trailers) => (call.trailers = trailers));
  req.on('error', (err) => {
    if (!stream.headersSent) answerError(call, classify(err));
  });
  req.once('close', () => {
    // A reset from the upstream reaches the client with the same code (linkerd2-proxy's
    // http2_rst_stream_is_propagated); REFUSED_STREAM lets gRPC clients retry transparently.
    if (req.rstCode !== undefined && req.rstCode !== 0 && !stream.closed && !call.answered) {
      if (!stream.headersSent && req.rstCode !== NGHTTP2_REFUSED_STREAM && !call.done) return answerError(call, new ProxyError('AUDITMESH_UPSTREAM_RESET', `upstream reset the stream (code ${req.rstCode})`));
      call.record['error.type'] ??= 'reset';
      stream.close(req.rstCode);
    }
  });
  // A client reset or disappearance cancels the upstream call (no MadeYouReset-style orphan work).
  stream.once('close', () => {
    if (!req.closed) req.close(stream.rstCode && stream.rstCode !== 0 ? stream.rstCode : NGHTTP2_CANCEL);
  });
  if (deps.interimRecordMs > 0) call.timers.push(setInterval(() => interim(call), deps.interimRecordMs));
}

function relayResponse(call: Call, req: ClientHttp2Stream, resHeaders: IncomingHttpHeaders, resFlags: number): void {
  const { stream, record } = call;
  clearResponseTimer(call);
  if (stream.closed) return;
  record['audit.ttfb_ms'] = roundMs(performance.now() - call.t0);
  record['http.response.status_code'] = Number(resHeaders[':status']);
  const out = forwardableH2Headers(resHeaders, RESPONSE_PSEUDO);
  out['x-request-id'] = record['audit.request_id'];
  if ((resFlags & NGHTTP2_FLAG_END_STREAM) !== 0) {
    // Trailers-only: one HEADERS frame carrying grpc-status.
    call.trailers = resHeaders;
    stream.respond(out, { endStream: true });
    return;
  }
  const grpcResponse = String(resHeaders['content-type'] ?? '').startsWith('application/grpc');
  stream.respond(out, { waitForTrailers: grpcResponse });
  if (grpcResponse) {
    stream.once('wantTrailers', () => {
      const trailers = call.trailers !== undefined ? forwardableH2Headers(call.trailers, NO_PSEUDO) : grpcErrorTrailers(13, 'upstream ended the call without a status');
      stream.sendTrailers(trailers);
    });
  }
  req.on('data', (chunk: Buffer) => call.responseCounter.push(chunk));
  req.pipe(stream);
}

/**
 * The client's gRPC framing, checked from each length prefix before its payload: a message over
 * the limit (RESOURCE_EXHAUSTED), an undefined flag byte or a compressed message without an
 * encoding (INTERNAL) ends the call. The upstream call is cancelled; once the response has
 * started, the client's stream is reset instead.
 */
function checkFraming(call: Call, encoded: boolean): void {
  const counter = call.requestCounter;
  const limit = call.deps.maxGrpcMessageBytes;
  let error: ProxyError | undefined;
  if (limit > 0 && counter.largestMessageBytes > limit) error = new ProxyError('AUDITMESH_REQUEST_TOO_LARGE', `gRPC message larger than ${limit} bytes`);
  else if (counter.invalidFlags > 0) error = new ProxyError('AUDITMESH_BAD_REQUEST', 'malformed gRPC framing: undefined flag byte');
  else if (counter.compressedMessages > 0 && !encoded) error = new ProxyError('AUDITMESH_BAD_REQUEST', 'malformed gRPC framing: compressed message without grpc-encoding');
  if (error === undefined) return;
  call.record['error.type'] = 'rejected';
  call.req?.close(NGHTTP2_CANCEL);
  call.stream.unpipe();
  if (!call.stream.headersSent) answerError(call, error);
  else if (!call.stream.closed) call.stream.close(NGHTTP2_CANCEL);
}

/** The call's deadline passed and neither side ended it: cancel upstream, tell the client. */
function expire(call: Call): void {
  call.record['error.type'] = 'timeout';
  call.req?.close(NGHTTP2_CANCEL);
  if (!call.stream.headersSent) answerError(call, new ProxyError('AUDITMESH_UPSTREAM_TIMEOUT', 'deadline exceeded'), 4);
  else if (!call.stream.closed) call.stream.close(NGHTTP2_CANCEL);
}

/** Before response headers: a gRPC trailers-only status, or the rescue table's HTTP answer. */
function answerError(call: Call, error: ProxyError, grpcStatus?: number): void {
  const { stream, record } = call;
  const r = rescue(error);
  record['error.type'] ??= r.kind;
  record['audit.error_message'] = error.message;
  if (stream.closed || stream.headersSent) return;
  call.answered = true;
  if (call.grpc) {
    const status = grpcStatus ?? rescueToGrpcStatus(r.status);
    call.trailers = { 'grpc-status': String(status), 'grpc-message': `auditmesh: ${error.message}` };
    stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'x-auditmesh-error': error.code, ...grpcErrorTrailers(status, `auditmesh: ${error.message}`) }, { endStream: true });
  } else {
    record['http.response.status_code'] = r.status;
    stream.respond({ ':status': r.status, ...answerHeaders(error.code) });
    stream.end(`auditmesh: ${r.message}\n`);
  }
}

function clearResponseTimer(call: Call): void {
  clearTimeout(call.responseTimer);
}

function fillProgress(call: Call, record: AuditRecord): void {
  record['audit.duration_ms'] = roundMs(performance.now() - call.t0);
  record['http.request.body.size'] = call.requestCounter.bytes;
  record['http.response.body.size'] = call.responseCounter.bytes;
  if (call.grpc) {
    record['audit.messages_in'] = call.requestCounter.messages;
    record['audit.messages_out'] = call.responseCounter.messages;
  }
}

function interim(call: Call): void {
  if (call.done || call.deps.audit === null || call.deps.mode === 'off') return;
  const snapshot: AuditRecord = { ...call.record, 'audit.phase': 'interim', 'audit.interim_index': call.interims++ };
  fillProgress(call, snapshot);
  call.deps.audit.record(snapshot);
}

function finish(call: Call): void {
  if (call.done) return;
  call.done = true;
  for (const t of call.timers) clearTimeout(t);
  clearResponseTimer(call);
  const { record, stream, deps } = call;
  fillProgress(call, record);
  if (call.trailers !== undefined && call.trailers['grpc-status'] !== undefined) {
    record['rpc.grpc.status_code'] = Number(call.trailers['grpc-status']);
    const message = call.trailers['grpc-message'];
    if (typeof message === 'string' && message !== '') record['rpc.grpc.status_message'] = statusMessage(call, decodeGrpcMessage(message));
  }
  if (record['error.type'] === undefined && stream.rstCode !== undefined && stream.rstCode !== 0 && (call.req === undefined || !call.req.closed || call.req.rstCode === 0 || call.req.rstCode === undefined)) {
    // A client cancelling at its own deadline is a timeout, not a change of mind.
    const atDeadline = call.deadlineAt !== undefined && performance.now() >= call.deadlineAt;
    record['error.type'] = atDeadline ? 'timeout' : 'aborted';
    record['audit.error_message'] = atDeadline ? 'deadline exceeded: the client cancelled at its deadline' : `client reset the stream (code ${stream.rstCode})`;
  }
  // A gRPC response that started and ended without a status did not complete, whatever the race
  // between the upstream's reset and the end of its body said first.
  if (call.grpc && stream.headersSent && record['rpc.grpc.status_code'] === undefined) record['error.type'] ??= 'incomplete';
  if (call.interims > 0) record['audit.interim_index'] = call.interims;
  deps.onExchange(call.grpc ? 'grpc' : 'h2', record, call.requestCounter.bytes, call.responseCounter.bytes, call.journal);
}

/** A status message as recorded: servers quote the method path (UNIMPLEMENTED), so it is quoted as recorded. */
function statusMessage(call: Call, message: string): string {
  const { path, query } = call.deps.redactor.target(call.path);
  const quoted = message.includes(call.path) ? message.split(call.path).join(query === undefined ? path : `${path}?${query}`) : message;
  return call.deps.redactor.text(quoted);
}

function decodeGrpcMessage(message: string): string {
  let text: string;
  try {
    text = decodeURIComponent(message);
  } catch {
    text = message;
  }
  return text.slice(0, MAX_GRPC_MESSAGE_CHARS);
}

function upstreamHeaders(deps: H2Deps, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, c: Correlation): OutgoingHttpHeaders {
  const out = forwardableH2Headers(headers, REQUEST_PSEUDO);
  out.traceparent = c.traceparent;
  out['x-request-id'] = c.requestId;
  if (deps.direction === 'inbound') {
    stripMeshHeaders(out);
    out['x-forwarded-for'] = stream.session?.socket?.remoteAddress ?? '';
  } else {
    out[CLIENT_SERVICE_HEADER] = deps.service;
  }
  return out;
}

function baseRecord(deps: H2Deps, stream: ServerHttp2Stream, headers: IncomingHttpHeaders, route: Route | null, c: Correlation, grpc: boolean): AuditRecord {
  const path = headers[':path'] ?? '/';
  const socket = stream.session?.socket;
  const record = httpRequestRecord(
    {
      kind: grpc ? 'grpc' : 'http',
      direction: deps.direction,
      service: deps.service,
      peer: peerOf(deps.direction, headers[CLIENT_SERVICE_HEADER], peerHost(route)),
      protocolVersion: '2',
      clientAddress: socket?.remoteAddress,
      clientPort: socket?.remotePort,
      method: String(headers[':method'] ?? ''),
      scheme: String(headers[':scheme'] ?? 'http'),
      path,
      headers,
      route,
      correlation: c,
    },
    deps.redactor,
  );
  deps.peers.stamp(record, socket as Socket | undefined, route);
  // From the path as recorded: a secret segment stays a fingerprint in the method name too.
  const rpc = grpc ? parseGrpcPath(record['url.path']) : null;
  if (rpc !== null) {
    record['rpc.system'] = 'grpc';
    record['rpc.service'] = rpc.service.slice(0, 256);
    record['rpc.method'] = rpc.method.slice(0, 256);
  }
  return record;
}


