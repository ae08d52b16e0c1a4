import type { Difference, HeldEnd } from './reconciled-call.js';

/** Body sizes may differ by this much, or this share of the larger, before they count as different. */
export const BYTES_TOLERANCE = 0;
export const BYTES_TOLERANCE_RATIO = 0;
/** How far apart two sidecars' clocks may be: the callee's exchange must lie within the caller's, widened by this each way. */
export const CLOCK_SKEW_MS = 1_000;

/**
 * What the caller's outbound record and the callee's inbound record of one call disagree on: the
 * outcome (HTTP status, gRPC status, an error one end saw and the other did not), the bytes each
 * way, the identities (the service each names the other by), and the timing (the callee's exchange
 * outside the caller's, beyond the two clocks' bounds).
 */
export function compareEnds(caller: HeldEnd, callee: HeldEnd): Difference[] {
  const a = caller.end;
  const b = callee.end;
  const out: Difference[] = [];
  const differ = (field: Difference['field'], x: unknown, y: unknown): void => void out.push({ field, caller: x ?? null, callee: y ?? null });
  if (a.method !== b.method || a.path !== b.path) differ('method', `${a.method} ${a.path}`, `${b.method} ${b.path}`);
  if (a.status !== b.status) differ('status', a.status, b.status);
  if (a.grpcStatus !== b.grpcStatus) differ('grpc_status', a.grpcStatus, b.grpcStatus);
  if (a.errorType !== b.errorType) differ('error', a.errorType, b.errorType);
  if (!bytesAgree(a.requestBytes, b.requestBytes)) differ('request_bytes', a.requestBytes, b.requestBytes);
  if (!bytesAgree(a.responseBytes, b.responseBytes)) differ('response_bytes', a.responseBytes, b.responseBytes);
  // Each end names the other: the callee's claimed caller must be the caller's service, the caller's peer the callee's.
  const calleeSaysCaller = b.claimedClient ?? b.peer;
  const callerSaysCallee = a.peer;
  if ((calleeSaysCaller !== undefined && calleeSaysCaller !== a.service) || (callerSaysCallee !== undefined && callerSaysCallee !== b.service)) {
    differ('identities', { service: a.service, names_callee: callerSaysCallee, identity: caller.identity }, { service: b.service, names_caller: calleeSaysCaller, identity: callee.identity });
  }
  const aEnd = a.start + (a.duration ?? 0);
  const bEnd = b.start + (b.duration ?? 0);
  if (b.start < a.start - CLOCK_SKEW_MS || bEnd > aEnd + CLOCK_SKEW_MS) differ('timing', { start_unix_ms: a.start, end_unix_ms: aEnd }, { start_unix_ms: b.start, end_unix_ms: bEnd });
  return out;
}

function bytesAgree(x: number | undefined, y: number | undefined): boolean {
  if (x === undefined || y === undefined) return x === y;
  return Math.abs(x - y) <= Math.max(BYTES_TOLERANCE, BYTES_TOLERANCE_RATIO * Math.max(x, y));
}
