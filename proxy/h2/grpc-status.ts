import type { OutgoingHttpHeaders } from 'node:http2';

/** The gRPC status a client gets for a failure the rescue table answers with `httpStatus`. */
export function rescueToGrpcStatus(httpStatus: number): number {
  switch (httpStatus) {
    case 504:
      return 4; // DEADLINE_EXCEEDED
    case 400:
      return 13; // INTERNAL: the sidecar could not route the call
    default:
      return 14; // UNAVAILABLE: retryable by the client's policy
  }
}

/** `grpc-status` and a percent-encoded `grpc-message` (gRPC over HTTP/2 spec). */
export function grpcErrorTrailers(status: number, message: string): OutgoingHttpHeaders {
  return { 'grpc-status': String(status), 'grpc-message': encodeURIComponent(message) };
}
