import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ErrorKind } from '../../ledger/record.js';
import type { ProxyError } from '../errors.js';
import type { UpstreamTarget } from '../routing/route.js';

/** How one forwarded HTTP exchange ended, reported exactly once. */
export interface ForwardOutcome {
  /** The status the client got: the upstream's, or the synthetic one of the rescue table. */
  status?: number;
  /** True when the upstream's response headers reached the client. */
  upstreamResponded: boolean;
  error?: ProxyError;
  errorKind?: ErrorKind;
  /** Body bytes read from the client and from the upstream. */
  requestBytes: number;
  responseBytes: number;
  /** Milliseconds from forward() to the upstream's response headers. */
  ttfbMs?: number;
  responseHeaders?: IncomingHttpHeaders;
}

/** How a WebSocket (or other Upgrade) session ended. */
export interface UpgradeOutcome {
  status?: number;
  error?: ProxyError;
  errorKind?: ErrorKind;
  bytesIn: number;
  bytesOut: number;
  ttfbMs?: number;
}

/**
 * The forwarding engine behind one small interface, so it can be measured against or swapped
 * for another. Request headers are final when called (hop-by-hop stripped, correlation set);
 * `responseHeaders` are added to the response the client gets.
 */
export interface HttpForwarder {
  web(
    req: IncomingMessage,
    res: ServerResponse,
    target: UpstreamTarget,
    responseHeaders: OutgoingHttpHeaders,
    done: (outcome: ForwardOutcome) => void,
  ): void;
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: UpstreamTarget, done: (outcome: UpgradeOutcome) => void): void;
  close(): void;
}

export interface ForwarderTimeouts {
  connectTimeoutMs: number;
  responseTimeoutMs: number;
  idleTimeoutMs: number;
  upstreamKeepAliveMs: number;
  maxSocketsPerUpstream: number;
  /** A request body streaming past this is cut off: 413 if the response has not started; 0: no limit. */
  maxRequestBodyBytes: number;
}
