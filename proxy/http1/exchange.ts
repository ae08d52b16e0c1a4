import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { AuditRecord, Direction, ErrorKind } from '../../ledger/record.js';
import { JOURNAL_REJECTS, type AuditGate } from '../audit/audit-gate.js';
import type { Redactor } from '../audit/redact.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { AuditMode } from '../config.js';
import type { Logger } from '../../command/log.js';
import type { ExchangeSink } from '../exchange-sink.js';
import { observeOverhead } from '../metrics/observe-exchange.js';
import { sessionClosed, sessionOpened } from '../metrics/observe-connections.js';
import { correlate, type Correlation } from '../correlation/correlate.js';
import { CLIENT_SERVICE_HEADER, stripMeshHeaders } from '../correlation/mesh-headers.js';
import { peerOf } from '../../anomalies/peer-label.js';
import { httpRequestRecord, roundMs } from '../audit/http-record.js';
import { stripRequestHopHeaders } from './hop-headers.js';
import { ProxyError, answerHeaders, rawAnswer, rescue } from '../errors.js';
import type { ForwardOutcome, HttpForwarder, UpgradeOutcome } from './forwarder.js';
import type { Route } from '../routing/route.js';
import { peerHost } from '../routing/target.js';
import type { UpstreamLimit } from './upstream-limit.js';
import type { MeshPeers } from '../mesh/mesh-peers.js';

/** Upgrades the sidecar relays (and records as sessions). Anything else, h2c above all, would tunnel past the audit. */
const RELAYED_UPGRADES = new Set(['websocket']);

export interface ExchangeDeps {
  direction: Direction;
  service: string;
  mode: AuditMode;
  route: (req: IncomingMessage) => Route | null;
  forwarder: HttpForwarder;
  /** A declared body over this gets 413 before the upstream; 0: no limit. */
  maxRequestBodyBytes: number;
  /** Requests in flight per upstream, shared by the sidecar's listeners: past it, 503 at once. */
  upstreamLimit: UpstreamLimit;
  /** Admission and strict durability, as for every protocol. */
  gate: AuditGate;
  redactor: Redactor;
  metrics: SidecarMetrics;
  /** Where every finished exchange goes: metrics, alerts, the journal. */
  onExchange: ExchangeSink;
  log: Logger;
  /** Stamps the peer's proven identity (or none); inbound, refuses callers --inbound-policy does not admit. */
  peers: MeshPeers;
}

/** Handles each HTTP exchange of one listener: correlate, record, forward, complete the record. */
export interface ExchangeHandler {
  request(req: IncomingMessage, res: ServerResponse): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  /** A request the listener refused before it was parsed (malformed, too large, too slow): recorded. */
  refused(socket: Socket, error: ProxyError): void;
}

export function createExchangeHandler(deps: ExchangeDeps): ExchangeHandler {
  /** Rewrites the request for the upstream; returns the record as far as the request knows it. */
  function prepare(req: IncomingMessage, route: Route, correlation: Correlation): AuditRecord {
    const peer = peerOf(deps.direction, req.headers[CLIENT_SERVICE_HEADER], peerHost(route));
    const record = baseRecord(deps, req, route, correlation, peer);
    const headers = stripRequestHopHeaders(req.headers);
    headers.traceparent = correlation.traceparent;
    headers['x-request-id'] = correlation.requestId;
    if (deps.direction === 'inbound') {
      // Forwarding claims from the caller are kept in the record, not trusted on the wire.
      const claimed = req.headers['x-forwarded-for'];
      if (claimed !== undefined) record['audit.claimed.forwarded_for'] = deps.redactor.text(String(claimed)).slice(0, 256);
      headers['x-forwarded-for'] = req.socket.remoteAddress ?? '';
      headers['x-forwarded-proto'] = 'http';
      stripMeshHeaders(headers);
    } else {
      headers[CLIENT_SERVICE_HEADER] = deps.service;
    }
    req.headers = headers;
    req.url = route.path;
    return record;
  }

  function complete(record: AuditRecord, t0: number, outcome: ForwardOutcome, recorded = true): void {
    record['audit.duration_ms'] = roundMs(performance.now() - t0);
    if (outcome.ttfbMs !== undefined) record['audit.ttfb_ms'] = roundMs(outcome.ttfbMs);
    if (outcome.status !== undefined) record['http.response.status_code'] = outcome.status;
    record['http.request.body.size'] = outcome.requestBytes;
    record['http.response.body.size'] = outcome.responseBytes;
    if (outcome.responseHeaders !== undefined) record['http.response.header'] = deps.redactor.headers(outcome.responseHeaders);
    if (outcome.errorKind !== undefined) {
      record['error.type'] = outcome.errorKind;
      record['audit.error_message'] = outcome.error?.message ?? outcome.errorKind;
    }
    deps.onExchange(record['audit.kind'] === 'websocket' ? 'websocket' : 'http1', record, outcome.requestBytes, outcome.responseBytes, recorded);
  }

  function reject(res: ServerResponse, record: AuditRecord, t0: number, status: number, error: ProxyError, recorded = true, errorKind: ErrorKind = 'rejected'): void {
    res.writeHead(status, { ...answerHeaders(error.code), 'x-request-id': record['audit.request_id'] ?? '' });
    res.end(`auditmesh: ${error.message}\n`);
    complete(record, t0, { status, error, upstreamResponded: false, requestBytes: 0, responseBytes: 0, errorKind }, recorded);
  }

  return {
    request(req, res) {
      const t0 = performance.now();
      const correlation = correlate(req.headers);
      const route = deps.route(req);
      if (route === null) {
        const record = baseRecord(deps, req, null, correlation, undefined);
        reject(res, record, t0, 400, new ProxyError('AUDITMESH_NO_ROUTE', 'no upstream for this request (absolute-form URL or Host header required)'));
        return;
      }
      const record = prepare(req, route, correlation);
      const refusal = deps.peers.refuse(req.socket);
      if (refusal !== null) return reject(res, record, t0, 403, refusal, true, 'unverified_peer');
      // llhttp takes a request line without a version as HTTP/0.9, headers and all: not proxied.
      if (req.httpVersionMajor !== 1) return reject(res, record, t0, 400, new ProxyError('AUDITMESH_BAD_REQUEST', `HTTP/${req.httpVersion} is not proxied`));
      // Refused unrecorded: the journal is what cannot take it.
      if (!deps.gate.admits()) return reject(res, record, t0, 503, JOURNAL_REJECTS(), false);
      if (deps.maxRequestBodyBytes > 0 && Number(req.headers['content-length'] ?? 0) > deps.maxRequestBodyBytes) {
        // The body is not read: the connection closes after the answer instead.
        res.shouldKeepAlive = false;
        return reject(res, record, t0, 413, new ProxyError('AUDITMESH_REQUEST_TOO_LARGE', `request body declared larger than ${deps.maxRequestBodyBytes} bytes`));
      }
      const upstream = `${route.target.host}:${route.target.port}`;
      if (!deps.upstreamLimit.enter(upstream)) {
        res.shouldKeepAlive = false;
        return reject(res, record, t0, 503, new ProxyError('AUDITMESH_OVERLOAD', `upstream ${upstream} already has ${deps.upstreamLimit.limit} requests in flight (--max-sockets-per-upstream plus --max-pending-per-upstream)`), true, 'overload');
      }
      const responseHeaders = { 'x-request-id': correlation.requestId };
      const forward = (): void => {
        observeOverhead(deps.metrics, deps.direction, 'http1', t0);
        deps.forwarder.web(req, res, route.target, responseHeaders, (outcome) => {
          deps.upstreamLimit.leave(upstream);
          complete(record, t0, outcome);
        });
      };
      deps.gate.beforeForward(record, forward, (error) => {
        deps.upstreamLimit.leave(upstream);
        reject(res, record, t0, 503, error);
      });
    },

    upgrade(req, socket, head) {
      const t0 = performance.now();
      const correlation = correlate(req.headers);
      const route = deps.route(req);
      if (route === null) {
        socket.end(rawAnswer(400));
        return;
      }
      if (!deps.gate.admits()) {
        socket.end(rawAnswer(503, 'AUDITMESH_JOURNAL_WRITE'));
        return;
      }
      const protocol = req.headers.upgrade;
      if (!RELAYED_UPGRADES.has(String(protocol).toLowerCase())) {
        const record = baseRecord(deps, req, route, correlation, undefined);
        const error = new ProxyError('AUDITMESH_UPGRADE_REFUSED', `upgrade to ${JSON.stringify(String(protocol).slice(0, 32))} is not proxied (h2c: use HTTP/2 with prior knowledge)`);
        socket.end(rawAnswer(400, error.code));
        complete(record, t0, { status: 400, error, upstreamResponded: false, requestBytes: 0, responseBytes: 0, errorKind: 'rejected' });
        return;
      }
      const record = prepare(req, route, correlation);
      const refusal = deps.peers.refuse(req.socket);
      if (refusal !== null) {
        socket.end(rawAnswer(403, refusal.code));
        complete(record, t0, { status: 403, error: refusal, upstreamResponded: false, requestBytes: 0, responseBytes: 0, errorKind: 'unverified_peer' });
        return;
      }
      // An upgrade keeps its Connection/Upgrade fields: they are what asks the upstream to switch.
      req.headers.connection = 'upgrade';
      req.headers.upgrade = protocol;
      record['audit.kind'] = 'websocket';
      sessionOpened(deps.metrics, deps.direction, 'websocket');
      deps.forwarder.upgrade(req, socket, head, route.target, (outcome: UpgradeOutcome) => {
        sessionClosed(deps.metrics, deps.direction, 'websocket');
        record['audit.bytes_in'] = outcome.bytesIn;
        record['audit.bytes_out'] = outcome.bytesOut;
        complete(record, t0, { ...outcome, upstreamResponded: outcome.status === 101, requestBytes: outcome.bytesIn, responseBytes: outcome.bytesOut });
      });
    },

    refused(socket, error) {
      const record: AuditRecord = {
        'audit.kind': 'http',
        'audit.phase': 'final',
        'audit.direction': deps.direction,
        'audit.service': deps.service,
        'peer.service': 'unknown',
        'audit.start_unix_ms': Date.now(),
        'network.protocol.name': 'http',
        'client.address': socket.remoteAddress ?? '',
        'client.port': socket.remotePort ?? 0,
      };
      deps.peers.stamp(record, socket, null);
      complete(record, performance.now(), { status: rescue(error).status, error, upstreamResponded: false, requestBytes: 0, responseBytes: 0, errorKind: 'rejected' });
    },
  };
}


function baseRecord(deps: ExchangeDeps, req: IncomingMessage, route: Route | null, c: Correlation, peer: string | undefined): AuditRecord {
  const record = httpRequestRecord(
    {
      kind: 'http',
      direction: deps.direction,
      service: deps.service,
      peer,
      protocolVersion: req.httpVersion,
      clientAddress: req.socket.remoteAddress,
      clientPort: req.socket.remotePort,
      method: req.method ?? '',
      scheme: 'http',
      path: route?.path ?? req.url ?? '',
      headers: req.headers,
      route,
      correlation: c,
    },
    deps.redactor,
  );
  deps.peers.stamp(record, req.socket, route);
  return record;
}
