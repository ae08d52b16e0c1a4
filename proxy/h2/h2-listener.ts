import http2 from 'node:http2';
import { H2_SERVER_OPTIONS } from './h2-limits.js';
import { handleH2Stream, type H2Deps } from './h2-exchange.js';

/**
 * The HTTP/2 side of a capture listener: an h2c server that never listens itself, fed the
 * connections whose first bytes are the HTTP/2 preface. Sessions get error listeners where
 * they are created (an unhandled one crashes the process).
 */
export function createH2Listener(deps: H2Deps): http2.Http2Server {
  const server = http2.createServer(H2_SERVER_OPTIONS);
  server.on('session', (session) => session.on('error', () => {}));
  server.on('sessionError', () => {});
  server.on('stream', (stream, headers, flags) => handleH2Stream(deps, stream, headers, flags));
  return server;
}
