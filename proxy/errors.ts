import { STATUS_CODES } from 'node:http';
import type { ErrorKind } from '../ledger/record.js';

/** Stable error codes of the proxy. The original error stays as `cause`. */
export type ProxyErrorCode =
  | 'AUDITMESH_UPSTREAM_REFUSED'
  | 'AUDITMESH_UPSTREAM_RESET'
  | 'AUDITMESH_UPSTREAM_CONNECT_TIMEOUT'
  | 'AUDITMESH_UPSTREAM_TIMEOUT'
  | 'AUDITMESH_UPSTREAM_UNRESOLVED'
  | 'AUDITMESH_UPSTREAM_PROTOCOL'
  | 'AUDITMESH_NO_ROUTE'
  | 'AUDITMESH_JOURNAL_WRITE'
  | 'AUDITMESH_OVERLOAD'
  | 'AUDITMESH_CLIENT_ABORTED'
  | 'AUDITMESH_BAD_REQUEST'
  | 'AUDITMESH_HEADERS_TOO_LARGE'
  | 'AUDITMESH_HEADERS_TIMEOUT'
  | 'AUDITMESH_REQUEST_TOO_LARGE'
  | 'AUDITMESH_UPGRADE_REFUSED'
  | 'AUDITMESH_PEER_UNTRUSTED'
  | 'AUDITMESH_PEER_EXPIRED'
  | 'AUDITMESH_PEER_IDENTITY'
  | 'AUDITMESH_PEER_HANDSHAKE'
  | 'AUDITMESH_PEER_RESET'
  | 'AUDITMESH_UNVERIFIED_PEER';

export class ProxyError extends Error {
  constructor(
    readonly code: ProxyErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** What the client gets and what the record says, for one failure. */
export interface Rescue {
  status: number;
  kind: ErrorKind;
  message: string;
}

/**
 * The one rescue table: an error before response headers were sent becomes a synthetic response.
 * After headers, the caller destroys the client socket instead (never a truncated "success").
 */
const RESCUES: Record<ProxyErrorCode, Rescue> = {
  AUDITMESH_UPSTREAM_REFUSED: { status: 502, kind: 'refused', message: 'upstream refused the connection' },
  AUDITMESH_UPSTREAM_RESET: { status: 502, kind: 'reset', message: 'upstream reset the connection' },
  AUDITMESH_UPSTREAM_CONNECT_TIMEOUT: { status: 504, kind: 'timeout', message: 'upstream connect timed out' },
  AUDITMESH_UPSTREAM_TIMEOUT: { status: 504, kind: 'timeout', message: 'upstream response timed out' },
  AUDITMESH_UPSTREAM_UNRESOLVED: { status: 502, kind: 'unresolved', message: 'upstream host could not be resolved' },
  AUDITMESH_UPSTREAM_PROTOCOL: { status: 502, kind: 'upstream_protocol', message: 'upstream sent an invalid response' },
  AUDITMESH_NO_ROUTE: { status: 400, kind: 'rejected', message: 'no upstream for this request' },
  AUDITMESH_JOURNAL_WRITE: { status: 503, kind: 'overload', message: 'audit journal unavailable' },
  AUDITMESH_OVERLOAD: { status: 503, kind: 'overload', message: 'sidecar overloaded' },
  AUDITMESH_CLIENT_ABORTED: { status: 499, kind: 'aborted', message: 'client went away' },
  AUDITMESH_BAD_REQUEST: { status: 400, kind: 'rejected', message: 'malformed request' },
  AUDITMESH_HEADERS_TOO_LARGE: { status: 431, kind: 'rejected', message: 'request line or header fields too large' },
  AUDITMESH_HEADERS_TIMEOUT: { status: 408, kind: 'rejected', message: 'request headers not received in time' },
  AUDITMESH_REQUEST_TOO_LARGE: { status: 413, kind: 'rejected', message: 'request larger than the configured limit' },
  AUDITMESH_UPGRADE_REFUSED: { status: 400, kind: 'rejected', message: 'upgrade to this protocol is not proxied' },
  // Sidecar-to-sidecar mTLS (proxy/mesh/): the call fails, never falls back to plaintext.
  AUDITMESH_PEER_UNTRUSTED: { status: 502, kind: 'peer_untrusted', message: "peer sidecar's certificate is not from the mesh CA" },
  AUDITMESH_PEER_EXPIRED: { status: 502, kind: 'peer_expired', message: "peer sidecar's certificate is outside its validity period" },
  AUDITMESH_PEER_IDENTITY: { status: 502, kind: 'peer_identity_mismatch', message: 'peer sidecar is not the identity the mesh directory lists' },
  AUDITMESH_PEER_HANDSHAKE: { status: 502, kind: 'peer_handshake', message: 'mTLS handshake with the peer sidecar failed' },
  AUDITMESH_PEER_RESET: { status: 502, kind: 'peer_reset', message: 'peer sidecar reset the mTLS connection' },
  AUDITMESH_UNVERIFIED_PEER: { status: 403, kind: 'unverified_peer', message: 'caller not verified (--inbound-policy)' },
};

const SOCKET_CODES: Record<string, ProxyErrorCode> = {
  ECONNREFUSED: 'AUDITMESH_UPSTREAM_REFUSED',
  ECONNRESET: 'AUDITMESH_UPSTREAM_RESET',
  EPIPE: 'AUDITMESH_UPSTREAM_RESET',
  ECONNABORTED: 'AUDITMESH_UPSTREAM_RESET',
  EHOSTUNREACH: 'AUDITMESH_UPSTREAM_REFUSED',
  ENETUNREACH: 'AUDITMESH_UPSTREAM_REFUSED',
  EADDRNOTAVAIL: 'AUDITMESH_UPSTREAM_REFUSED',
  ENOTFOUND: 'AUDITMESH_UPSTREAM_UNRESOLVED',
  EAI_AGAIN: 'AUDITMESH_UPSTREAM_UNRESOLVED',
  ETIMEDOUT: 'AUDITMESH_UPSTREAM_CONNECT_TIMEOUT',
  HPE_INVALID_HEADER_TOKEN: 'AUDITMESH_UPSTREAM_PROTOCOL',
  ERR_INVALID_CHAR: 'AUDITMESH_UPSTREAM_PROTOCOL',
  ERR_INVALID_HTTP_TOKEN: 'AUDITMESH_UPSTREAM_PROTOCOL',
  // undici (the undici forwarding engine)
  UND_ERR_SOCKET: 'AUDITMESH_UPSTREAM_RESET',
  UND_ERR_RES_CONTENT_LENGTH_MISMATCH: 'AUDITMESH_UPSTREAM_RESET',
  UND_ERR_CONNECT_TIMEOUT: 'AUDITMESH_UPSTREAM_CONNECT_TIMEOUT',
  UND_ERR_HEADERS_TIMEOUT: 'AUDITMESH_UPSTREAM_TIMEOUT',
  UND_ERR_BODY_TIMEOUT: 'AUDITMESH_UPSTREAM_TIMEOUT',
  // OpenSSL's verdicts on a peer sidecar's certificate (X509_V_ERR_*, as node names them).
  CERT_HAS_EXPIRED: 'AUDITMESH_PEER_EXPIRED',
  CERT_NOT_YET_VALID: 'AUDITMESH_PEER_EXPIRED',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'AUDITMESH_PEER_UNTRUSTED',
  UNABLE_TO_GET_ISSUER_CERT: 'AUDITMESH_PEER_UNTRUSTED',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'AUDITMESH_PEER_UNTRUSTED',
  SELF_SIGNED_CERT_IN_CHAIN: 'AUDITMESH_PEER_UNTRUSTED',
  DEPTH_ZERO_SELF_SIGNED_CERT: 'AUDITMESH_PEER_UNTRUSTED',
  CERT_SIGNATURE_FAILURE: 'AUDITMESH_PEER_UNTRUSTED',
  CERT_UNTRUSTED: 'AUDITMESH_PEER_UNTRUSTED',
  CERT_REJECTED: 'AUDITMESH_PEER_UNTRUSTED',
  INVALID_CA: 'AUDITMESH_PEER_UNTRUSTED',
};

/** Maps any error from the forwarding path to a ProxyError with a stable code. */
export function classify(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  // node:http2 fails a session's streams with the error that destroyed the session as cause.
  if ((err as { cause?: unknown } | null)?.cause instanceof ProxyError) return (err as { cause: ProxyError }).cause;
  const e = err as { code?: string; name?: string; cause?: { code?: string } } | null;
  // node:http2 wraps a session's socket error in ERR_HTTP2_* errors on its streams.
  const code = (e?.code?.startsWith('ERR_HTTP2_') ? e.cause?.code : undefined) ?? e?.code ?? '';
  // llhttp's verdict on the upstream's bytes: node:http sets an HPE_ code; undici's HTTPParserError
  // leaves it unset for some (an invalid header token).
  const unparsable = code.startsWith('HPE_') || e?.name === 'HTTPParserError';
  // Any other TLS failure (an alert, a protocol version): only mesh connections speak TLS upstream.
  const tls = code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_');
  const mapped = SOCKET_CODES[code] ?? (unparsable ? 'AUDITMESH_UPSTREAM_PROTOCOL' : tls ? 'AUDITMESH_PEER_HANDSHAKE' : 'AUDITMESH_UPSTREAM_RESET');
  return new ProxyError(mapped, RESCUES[mapped].message, { cause: err });
}

export function rescue(err: ProxyError): Rescue {
  return RESCUES[err.code];
}

export function rescueFor(code: ProxyErrorCode): Rescue {
  return RESCUES[code];
}

/**
 * An answer the sidecar writes itself on a raw HTTP/1.1 socket (an upgrade, CONNECT, a request the
 * parser refused, a WebSocket handshake that failed upstream): status, the error code when there is
 * one, and the connection closes.
 */
export function rawAnswer(status: number, code?: ProxyErrorCode): string {
  return `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${code === undefined ? '' : `x-auditmesh-error: ${code}\r\n`}connection: close\r\ncontent-length: 0\r\n\r\n`;
}

/** The head of an answer the sidecar writes itself through node:http or node:http2: plain text, naming the error's code. */
export function answerHeaders(code: ProxyErrorCode): { 'content-type': string; 'x-auditmesh-error': ProxyErrorCode } {
  return { 'content-type': 'text/plain; charset=utf-8', 'x-auditmesh-error': code };
}
