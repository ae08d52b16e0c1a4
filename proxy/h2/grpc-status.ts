import type { OutgoingHttpHeaders } from 'node:http2';

/** The gRPC status a client gets for a failure the rescue table answers with `httpStatus`. */
export function rescueToGrpcStatus(httpStatus: number): number {
  switch (httpStatus) {
    case 504:
      return 4; // DEADLINE_EXCEEDED
    case 413:
      return 8; // RESOURCE_EXHAUSTED: a message over the configured limit
    case 400:
      return 13; // INTERNAL: the sidecar could not route the call
    case 403:
      return 7; // PERMISSION_DENIED: the caller is not verified (--inbound-policy)
    default:
      return 14; // UNAVAILABLE: retryable by the client's policy
  }
}

/**
 * `grpc-status` and its `grpc-message`, percent-encoded as the gRPC over HTTP/2 spec says: only
 * bytes outside printable ASCII, and `%` itself.
 */
export function grpcErrorTrailers(status: number, message: string): OutgoingHttpHeaders {
  const encoded = Array.from(Buffer.from(message, 'utf8'), (b) => (b >= 0x20 && b <= 0x7e && b !== 0x25 ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0'))).join('');
  return { 'grpc-status': String(status), 'grpc-message': encoded };
}
