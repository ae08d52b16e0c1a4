import http from 'node:http';
import type { Socket } from 'node:net';
import type { ExchangeHandler } from './exchange.js';
import { ProxyError, rawAnswer, rescueFor, type ProxyErrorCode } from '../errors.js';

export interface ListenerTimeouts {
  /** Time allowed for a client to send its request headers (slowloris bound): 408 after it. */
  headersTimeoutMs: number;
  /** A client keep-alive connection idle this long is closed. */
  keepAliveTimeoutMs: number;
  /** Any connection with no bytes either way for this long is closed. */
  idleTimeoutMs: number;
  /** Largest request line plus headers: 431 beyond. */
  maxHeaderBytes: number;
}

export const DEFAULT_LISTENER_TIMEOUTS: ListenerTimeouts = {
  headersTimeoutMs: 20_000,
  keepAliveTimeoutMs: 5_000,
  idleTimeoutMs: 300_000,
  maxHeaderBytes: 16 * 1024,
};

/** Node's parser error codes → the error the client is answered with (400 for any other). */
const CLIENT_ERRORS: Record<string, ProxyErrorCode> = {
  HPE_HEADER_OVERFLOW: 'AUDITMESH_HEADERS_TOO_LARGE',
  ERR_HTTP_REQUEST_TIMEOUT: 'AUDITMESH_HEADERS_TIMEOUT',
  HPE_CHUNK_EXTENSIONS_OVERFLOW: 'AUDITMESH_REQUEST_TOO_LARGE',
};

/**
 * An HTTP/1.1 listener in front of an exchange handler. Malformed requests get a clear 4xx and
 * the connection is closed; the listener keeps serving everyone else. `Expect: 100-continue` is
 * answered here (a proxy may do so, RFC 9110 §10.1.1) and not forwarded, so the upstream never
 * waits for a 100 the client already got.
 */
export function createHttpListener(handler: ExchangeHandler, timeouts: ListenerTimeouts, onConnect?: (req: http.IncomingMessage, socket: Socket, head: Buffer) => void): http.Server {
  const server = http.createServer({
    headersTimeout: timeouts.headersTimeoutMs,
    maxHeaderSize: timeouts.maxHeaderBytes,
    // Whole-request timeout off: large bodies stream for as long as bytes keep flowing.
    requestTimeout: 0,
    keepAliveTimeout: timeouts.keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(1000, timeouts.headersTimeoutMs),
  });
  // The client connection's idle timer runs a little past the upstream's: the forwarder checks
  // upstream idleness on a shared sweep that notices a stall up to two ticks late
  // (http1/deadline-sweep.ts), and a stalled upstream must be recorded as the upstream's timeout,
  // not as the client going away.
  server.timeout = timeouts.idleTimeoutMs + Math.max(1000, Math.floor(timeouts.idleTimeoutMs / 4));
  server.on('request', (req, res) => handler.request(req, res));
  server.on('checkContinue', (req, res) => {
    res.writeContinue();
    delete req.headers.expect;
    handler.request(req, res);
  });
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => {});
    handler.upgrade(req, socket, head);
  });
  if (onConnect !== undefined) server.on('connect', (req, socket, head) => onConnect(req, socket as Socket, head));
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    if (!socket.writable || (err.code === 'ECONNRESET' && (socket as Socket).bytesWritten === 0)) {
      socket.destroy();
      return;
    }
    // Only the parser's code goes into the record: its rawPacket holds what the client sent.
    const code = CLIENT_ERRORS[err.code ?? ''] ?? 'AUDITMESH_BAD_REQUEST';
    const { status, message } = rescueFor(code);
    const error = new ProxyError(code, `${message} (${String(err.code ?? 'unknown').slice(0, 64)})`);
    socket.end(rawAnswer(status, error.code));
    handler.refused(socket as Socket, error);
  });
  return server;
}
