import type { Http2Server, Http2Session } from 'node:http2';
import type * as grpc from '@grpc/grpc-js';

/**
 * The HTTP/2 receive window of the collector's Sync streams. Node's default is 64 KiB, and
 * grpc-js's server never raises it (its `grpc-node.flow_control_window` option is read by the
 * client transport only: grpc/grpc-node#3058), so a sidecar sending a 1 MiB segment waits for
 * about 16 WINDOW_UPDATEs, each sent only when the collector's busy event loop gets to it: with
 * the default window ingest stalled on flow control, not on work (bench/README.md, "Figures behind the code").
 *
 * Memory stays bounded: one Sync stream per connection, so a sidecar can have at most this much
 * unread data buffered in the collector beyond the segments sync-server.ts has taken.
 */
export const SYNC_WINDOW_BYTES = 4 * 1024 * 1024;

/** The option under the name grpc-js will read once the server honours it. */
export const FLOW_WINDOW_OPTION = { 'grpc-node.flow_control_window': SYNC_WINDOW_BYTES };

/**
 * Raises every new session's stream and connection windows on a bound grpc-js server. Reaches
 * into grpc-js's `http2Servers` (private): where a version has none, the server keeps Node's
 * defaults and this returns false, so a caller can say so.
 */
export function widenFlowWindow(server: grpc.Server, windowBytes = SYNC_WINDOW_BYTES): boolean {
  const servers = (server as unknown as { http2Servers?: Map<Http2Server, unknown> }).http2Servers;
  if (!(servers instanceof Map) || servers.size === 0) return false;
  for (const h2 of servers.keys()) {
    h2.on('session', (session: Http2Session) => {
      session.settings({ initialWindowSize: windowBytes });
      session.setLocalWindowSize(windowBytes);
    });
  }
  return true;
}
