import type { ServerOptions, SessionOptions } from 'node:http2';

/**
 * HTTP/2 limits, set on purpose (REFERENCES.md, node:http2 as a proxy). Node 20.20 carries the
 * fixes for Rapid Reset (CVE-2023-44487) and CONTINUATION floods (CVE-2024-27983); these bound
 * what one peer can make the sidecar hold.
 */
export const H2_SESSION_LIMITS: SessionOptions = {
  // Megabytes of nghttp2 state per session before new streams are refused.
  maxSessionMemory: 32,
  // At most this many streams open at once from our side to one upstream.
  peerMaxConcurrentStreams: 1000,
  // Header list size and count: a header flood is refused, not buffered.
  maxHeaderListPairs: 256,
  maxSendHeaderBlockLength: 64 * 1024,
  // Unanswered PINGs and SETTINGS frames a peer may make us queue (ping/settings floods).
  maxOutstandingPings: 10,
  maxSettings: 32,
};

/** The sidecar as an HTTP/2 server: the same bounds plus per-session abuse counters. */
export const H2_SERVER_OPTIONS: ServerOptions = {
  ...H2_SESSION_LIMITS,
  settings: {
    maxConcurrentStreams: 250,
    maxHeaderListSize: 64 * 1024,
  },
  // Invalid frames and refused streams a session may cause before it is torn down (floods of
  // empty DATA frames, rapid resets past the concurrency limit).
  maxSessionInvalidFrames: 1000,
  maxSessionRejectedStreams: 100,
  // An h2c connection that never sends a valid preface is closed.
  unknownProtocolTimeout: 10_000,
};
