import net from 'node:net';
import type { Server as HttpServer } from 'node:http';
import type { Http2Server } from 'node:http2';
import { detectProtocol, type Detected } from './detect.js';
import { parseClientHello } from './tls-sni.js';
import { MESH_ALPN } from '../mesh/mesh-credentials.js';

/** Bytes read to decide a protocol (and find a TLS server name) before giving up and relaying. */
const MAX_SNIFF_BYTES = 16 * 1024;
const TLS_RECORD_HEADER_BYTES = 5;
/** How much longer a client that sent part of its first bytes gets before it is relayed as TCP. */
const PARTIAL_DETECT_FACTOR = 10;

export interface CaptureHandlers {
  /** Receives HTTP/1.x connections (never listens itself). */
  http1: HttpServer;
  /** Receives HTTP/2 prior-knowledge (h2c) connections, gRPC among them. */
  h2: Http2Server;
  /** Everything else, TLS included: relayed byte for byte and recorded. */
  opaque: (socket: net.Socket, sni: string | null) => void;
  /**
   * TLS whose ClientHello offers ALPN `auditmesh/1`: a peer sidecar's mesh mTLS (inbound only).
   * It terminates TLS and hands the decrypted connection to `detect`, the same detection again.
   */
  mesh?: (socket: net.Socket, detect: (decrypted: net.Socket) => void) => void;
}

export interface CaptureOptions {
  /** A client that sends nothing for this long is relayed as opaque TCP (server-first protocols). */
  detectTimeoutMs: number;
  /** True when this connection's destination port is configured opaque: no detection at all. */
  isOpaque: (socket: net.Socket) => boolean;
  /**
   * True when the connection comes from an address the mesh directory lists: a peer sidecar opens
   * with mesh mTLS even to an opaque (server-first) port, so those first bytes are read; anyone
   * else on an opaque port is relayed at once, as before.
   */
  meshCaller?: (socket: net.Socket) => boolean;
}

/**
 * One listening port for every protocol: the first bytes of each connection pick the path
 * (docs/ARCHITECTURE.md). The bytes read to decide are put back, so each path sees the
 * connection from its first byte.
 */
export function createCaptureListener(handlers: CaptureHandlers, opts: CaptureOptions): net.Server {
  // The HTTP/1 server never listens, so its connection tracking (which enforces headersTimeout,
  // the slowloris bound) must be started by hand: Node starts it on 'listening'.
  handlers.http1.emit('listening');
  // noDelay as node:http sets it on its own sockets: without it, a response written in two parts
  // waits on Nagle and delayed ACKs (tens of milliseconds per request).
  const detect = (socket: net.Socket, decrypted: boolean): void => {
    socket.on('error', () => {});
    if (opts.isOpaque(socket)) {
      const mesh = handlers.mesh;
      if (decrypted || mesh === undefined || opts.meshCaller?.(socket) !== true) return handlers.opaque(socket, null);
      return sniff(socket, opts.detectTimeoutMs, (detected, bytes) => {
        socket.unshift(bytes);
        if (detected === 'tls' && parseClientHello(bytes)?.alpn.includes(MESH_ALPN) === true) return mesh(socket, (inner) => detect(inner, true));
        handlers.opaque(socket, null);
      });
    }
    sniff(socket, opts.detectTimeoutMs, (detected, bytes) => {
      socket.unshift(bytes);
      switch (detected) {
        case 'h2':
          // node:http2 takes over the socket's handle and reads the put-back bytes itself;
          // resuming here would let them flow past it.
          handlers.h2.emit('connection', socket);
          return;
        case 'http1':
          handlers.http1.emit('connection', socket);
          socket.resume();
          return;
        default: {
          const hello = detected === 'tls' ? parseClientHello(bytes) : null;
          // Decided from the ClientHello alone, no timeout: a peer sidecar offers our ALPN first.
          // TLS inside a mesh connection is the app's own: relayed.
          if (!decrypted && handlers.mesh !== undefined && hello?.alpn.includes(MESH_ALPN) === true) return handlers.mesh(socket, (inner) => detect(inner, true));
          handlers.opaque(socket, hello?.sni ?? null);
        }
      }
    });
  };
  const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) => detect(socket, false));
  server.on('close', () => handlers.http1.close());
  return server;
}

/** Reads until the protocol is known (and, for TLS, the ClientHello record is whole), then pauses. */
function sniff(socket: net.Socket, timeoutMs: number, decided: (detected: Detected, bytes: Buffer) => void): void {
  const chunks: Buffer[] = [];
  let length = 0;
  let done = false;
  const finish = (detected: Detected): void => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    socket.off('data', onData);
    socket.off('end', onEnd);
    socket.pause();
    decided(detected, Buffer.concat(chunks, length));
  };
  // Timers run before the event loop polls for I/O: after a stall longer than the timeout, the
  // client's first bytes may be waiting unread. Decide only after the next poll has read them.
  // A client that has begun to speak is not server-first: it gets longer to finish its first line.
  let extended = false;
  const expire = (): void => {
    if (done) return;
    if (length > 0 && !extended) {
      extended = true;
      timer = setTimeout(expire, timeoutMs * PARTIAL_DETECT_FACTOR);
      return;
    }
    finish('tcp');
  };
  let timer = setTimeout(() => setImmediate(expire), timeoutMs);
  const onEnd = (): void => finish('tcp');
  const onData = (chunk: Buffer): void => {
    chunks.push(chunk);
    length += chunk.length;
    const bytes = chunks.length === 1 ? chunk : Buffer.concat(chunks, length);
    const detected = detectProtocol(bytes);
    if (detected === 'tls' && length < MAX_SNIFF_BYTES && length < TLS_RECORD_HEADER_BYTES + (length >= TLS_RECORD_HEADER_BYTES ? bytes.readUInt16BE(3) : MAX_SNIFF_BYTES)) return;
    if (detected !== null) return finish(detected);
    if (length >= MAX_SNIFF_BYTES) finish('tcp');
  };
  socket.on('data', onData);
  socket.once('end', onEnd);
  socket.resume();
}
