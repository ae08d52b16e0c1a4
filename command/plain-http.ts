import http from 'node:http';
import https from 'node:https';
import type { Duplex } from 'node:stream';

/**
 * What the plain HTTP servers (the sidecar's admin server, the collector's API) share so that no
 * request can stop them: a request target parsed without throwing, a clear 4xx for what Node's
 * parser refuses, and a handler whose failures become a 500 (or a cut stream), never a crash.
 */

/** Time a client has to send its request line and headers: 408 after it (slowloris bound). */
export const HEADERS_TIMEOUT_MS = 20_000;
/** Largest request line plus headers: 431 beyond. */
export const MAX_HEADER_BYTES = 16 * 1024;

const PARSER_STATUS: Record<string, number> = { HPE_HEADER_OVERFLOW: 431, ERR_HTTP_REQUEST_TIMEOUT: 408 };

/**
 * The request target as a URL, or null when it is not one: origin-form (`/path?query`) or
 * absolute-form (`http://host/path`, which a server must accept, RFC 9112 §3.2.2), with
 * well-formed percent-encoding. `//[` is a path here, never a scheme-relative URL.
 */
export function requestTarget(raw: string | undefined): URL | null {
  if (raw === undefined || /%(?![0-9a-fA-F]{2})/.test(raw)) return null;
  try {
    if (raw.startsWith('/')) return new URL(`http://local${raw}`);
    if (/^https?:\/\//i.test(raw)) return new URL(raw);
  } catch {
    // Falls through: not a URL.
  }
  return null;
}

/** A plain-text answer. */
export function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(body);
}

/** A serving key and certificate chain (PEM): the server speaks HTTPS with them. */
export interface ServingTls {
  key: string | Buffer;
  cert: string | Buffer;
}

/** An HTTP (or, with `tls`, HTTPS) server for `handle` with bounded headers, 4xx for malformed requests, and no throw escaping a handler. */
export function createPlainServer(handle: (req: http.IncomingMessage, res: http.ServerResponse, url: URL) => void | Promise<void>, tls?: ServingTls): http.Server {
  const options = { headersTimeout: HEADERS_TIMEOUT_MS, maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: 0 };
  const serve = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const url = requestTarget(req.url);
    if (url === null) return text(res, 400, 'bad request target: expected /path?query with valid percent-encoding\n');
    try {
      const done = handle(req, res, url);
      if (done !== undefined) done.catch((err: unknown) => failed(res, err));
    } catch (err) {
      failed(res, err);
    }
  };
  // https.Server has every method of http.Server callers use (listen, close, closeAllConnections); its type does not say so.
  const server = tls === undefined ? http.createServer(options, serve) : (https.createServer({ ...options, key: tls.key, cert: tls.cert, minVersion: 'TLSv1.2' }, serve) as unknown as http.Server);
  server.on('clientError', answerClientError);
  return server;
}

/** A handler failed: 500 if nothing was sent yet, else the stream is cut so it never looks complete. */
function failed(res: http.ServerResponse, err: unknown): void {
  if (res.headersSent) return void res.destroy();
  text(res, 500, `internal error: ${(err as Error)?.message ?? String(err)}\n`);
}

/** Node's parser refused the request: say why (400, 408, 431) and close, as the proxy's listeners do. */
export function answerClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (!socket.writable) return void socket.destroy();
  const status = PARSER_STATUS[err.code ?? ''] ?? 400;
  socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
}
