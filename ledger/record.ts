/**
 * The audit record: one per exchange (an HTTP request/response, a WebSocket session, a CONNECT
 * tunnel or an opaque TCP connection). A plain object, filled on the hot path and handed to the
 * batcher; everything heavy (encoding, hashing, disk) happens per batch, elsewhere.
 *
 * Keys follow the OpenTelemetry semantic conventions where one exists (`http.request.method`,
 * `url.path`, `server.address`, ...); auditmesh's own fields live under `audit.*`. This file is
 * the one home of the type: the journal, the tail stream and (later) the wire protocol import it.
 */

/** gRPC status codes by number, the names of `rpc.grpc.status_code` (grpc/doc/statuscodes.md). */
export const GRPC_STATUS = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'] as const;

/** What kind of exchange a record describes. */
export type RecordKind = 'http' | 'websocket' | 'tunnel' | 'tcp' | 'grpc' | 'alert' | 'gap';

/**
 * `request`: written before forwarding in strict mode; `interim`: progress of a long-lived
 * stream, at a configured interval; `final`: written when the exchange ends.
 */
export type RecordPhase = 'request' | 'interim' | 'final';

export type Direction = 'inbound' | 'outbound';

/**
 * Why exchanges went unrecorded: the journal at its bound or too far behind (`pass` policy), or
 * a failed commit.
 */
export type GapReason = 'journal_full' | 'journal_write' | 'journal_behind';

/**
 * How an exchange failed, when it did. `refused`/`reset`/`timeout` are upstream failures,
 * `aborted` is the client going away, `incomplete` is a response cut short after its headers
 * were sent, `rejected` is the sidecar refusing the request itself (bad input, overload).
 *
 * Sidecar-to-sidecar mTLS (docs/MESH-TLS.md): `peer_untrusted` the other end's certificate does
 * not chain to the mesh CA (or none was presented), `peer_expired` it is outside its validity
 * period, `peer_identity_mismatch` its SPIFFE ID is not the one the mesh directory lists for the
 * address, `peer_handshake` the TLS handshake failed otherwise (no `auditmesh/1` ALPN, an alert),
 * `peer_reset` the mTLS connection was reset after the handshake, `unverified_peer` an inbound
 * caller refused by `--inbound-policy`.
 */
export type ErrorKind =
  | 'refused'
  | 'reset'
  | 'timeout'
  | 'aborted'
  | 'incomplete'
  | 'rejected'
  | 'unresolved'
  | 'overload'
  | 'upstream_protocol'
  | 'peer_untrusted'
  | 'peer_expired'
  | 'peer_identity_mismatch'
  | 'peer_handshake'
  | 'peer_reset'
  | 'unverified_peer';

export interface AuditRecord {
  'audit.kind': RecordKind;
  'audit.phase': RecordPhase;
  'audit.direction': Direction;
  /** The identity of the service this sidecar stands in front of. */
  'audit.service': string;
  /** The other side's service identity, when known (Host/authority for outbound, `unknown` otherwise). */
  'peer.service'?: string;
  /**
   * The other end's SPIFFE ID (`spiffe://TRUST_DOMAIN/ns/NS/sa/SA`), proven by its certificate in
   * sidecar-to-sidecar mTLS: inbound, the caller's client certificate; outbound, the callee's
   * server certificate, checked against the mesh directory. Only with `audit.peer.verified` true.
   */
  'peer.identity'?: string;
  /**
   * True when the other end was a sidecar proven over mTLS (`peer.identity`); false when it was
   * plaintext (a destination the mesh directory does not list, a caller outside the mesh) or the
   * mTLS handshake failed. Absent on records that have no peer (alerts, gaps).
   */
  'audit.peer.verified'?: boolean;
  /**
   * Outbound to an address the mesh directory does not list while the directory was stale (not
   * heard from the collector within its bound): called in plaintext, as an unlisted address is,
   * but the address may have been meshed since.
   */
  'audit.peer.directory_stale'?: true;
  /** Start of the exchange, milliseconds since the Unix epoch (fractional). */
  'audit.start_unix_ms': number;
  /** Whole exchange, from the first request byte to the last response byte or the failure. */
  'audit.duration_ms'?: number;
  /** From the start to the first response byte from upstream. */
  'audit.ttfb_ms'?: number;

  'network.protocol.name'?: string;
  'network.protocol.version'?: string;
  'client.address'?: string;
  'client.port'?: number;
  /** Outbound: where the bytes went (the original destination when iptables redirected the connection). */
  'server.address'?: string;
  'server.port'?: number;

  'http.request.method'?: string;
  'url.scheme'?: string;
  'url.path'?: string;
  /** The query string with secret parameters replaced by fingerprints. */
  'url.query'?: string;
  'http.response.status_code'?: number;
  /** Measured body bytes (not Content-Length). */
  'http.request.body.size'?: number;
  'http.response.body.size'?: number;
  /** Raw bytes each way for tunnels, WebSockets and TCP relays. */
  'audit.bytes_in'?: number;
  'audit.bytes_out'?: number;

  /** Selected request/response headers, secrets replaced by `hmac-sha256:<hex>` fingerprints. */
  'http.request.header'?: Record<string, string>;
  'http.response.header'?: Record<string, string>;

  'rpc.system'?: 'grpc';
  'rpc.service'?: string;
  'rpc.method'?: string;
  'rpc.grpc.status_code'?: number;
  /** The `grpc-message` of the call's status, decoded and truncated. */
  'rpc.grpc.status_message'?: string;
  /** gRPC messages each way, counted from the length-prefixed framing. */
  'audit.messages_in'?: number;
  'audit.messages_out'?: number;
  /** For interim records: how many came before this one for the same stream. */
  'audit.interim_index'?: number;
  /** The TLS server name (SNI) an opaque connection's ClientHello asked for. */
  'tls.client.server_name'?: string;

  /** Alert records: what was detected, raised or cleared, and the numbers behind it. */
  'audit.alert.kind'?: string;
  'audit.alert.state'?: 'raised' | 'cleared';
  'audit.alert.message'?: string;
  'audit.alert.observed'?: number;
  'audit.alert.baseline'?: number;

  'trace.id'?: string;
  'span.id'?: string;
  'span.parent_id'?: string;
  'audit.request_id'?: string;
  /** A malformed `traceparent` the client sent, kept as claimed (it was replaced on the wire). */
  'audit.claimed.traceparent'?: string;
  /** Identity or forwarding claims from outside the mesh, kept as claimed and stripped from the wire. */
  'audit.claimed.forwarded_for'?: string;
  /**
   * The calling service an inbound request claimed (`x-auditmesh-client`), unauthenticated, bounded.
   * Kept beside `peer.identity` when the caller is verified: a claim that contradicts the proven
   * identity stays visible.
   */
  'audit.claimed.client'?: string;
  /**
   * Outbound, redirected: the destination the client named (Host, `:authority` or TLS SNI), as it
   * named it and bounded, when that is not `server.address`:`server.port`. It names `peer.service`.
   */
  'audit.claimed.server'?: string;

  'error.type'?: ErrorKind;
  /** A short human-readable reason, never containing secrets. */
  'audit.error_message'?: string;

  /**
   * Gap records (`audit.kind` `gap`): this many exchanges in this direction went through without
   * a record of their own, the first starting at `audit.start_unix_ms`, the last
   * `audit.duration_ms` later.
   */
  'audit.gap.exchanges'?: number;
  'audit.gap.reason'?: GapReason;
}

/** A record as read back from the journal: the record plus its journal sequence number. */
export type JournalRecord = AuditRecord & { 'audit.seq': number };
