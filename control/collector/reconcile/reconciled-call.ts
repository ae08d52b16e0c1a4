import type { CallEnd } from './call-end.js';

/**
 * A call with the state of its two ends (`GET /v1/reconciliation`, `auditmesh reconcile -o json`).
 * `pending`: one end seen, the other may still be in flight (inside --reconcile-grace).
 */
export const RECONCILE_STATES = ['matched', 'pending', 'caller-only', 'callee-only', 'mismatched', 'unpaired-external'] as const;
export type ReconcileState = (typeof RECONCILE_STATES)[number];

/** The states that mean the two ends disagree: `auditmesh reconcile` exits 1 on any. */
export const DISAGREEING_STATES: ReadonlySet<ReconcileState> = new Set(['caller-only', 'callee-only', 'mismatched']);

/** One end as reported: the record it is (its sidecar and seq) and what it said. */
export interface ReportedEnd {
  'audit.sidecar_id': string;
  'audit.seq': number;
  /** The chain (SIDECAR_ID@POD_UID) its record is stored under. */
  chain: string;
  service: string;
  /** The SPIFFE ID the sidecar's stream proved (the collector's stamp), when identities are on. */
  'audit.identity'?: string;
  status?: number;
  grpc_status?: number;
  error_type?: string;
  request_bytes?: number;
  response_bytes?: number;
  start_unix_ms: number;
  duration_ms?: number;
}

/** A field the two ends disagree on, with what each said. */
export interface Difference {
  field: 'status' | 'grpc_status' | 'error' | 'request_bytes' | 'response_bytes' | 'identities' | 'timing' | 'method';
  caller: unknown;
  callee: unknown;
}

export interface ReconciledCall {
  state: ReconcileState;
  kind: 'http' | 'grpc';
  /** HTTP: method and path; gRPC: `rpc.service` and `rpc.method`. */
  'http.request.method'?: string;
  'url.path'?: string;
  'rpc.service'?: string;
  'rpc.method'?: string;
  'audit.request_id': string;
  'trace.id': string;
  'span.id': string;
  /** The calling and the called service, as far as the ends name them. */
  caller_service: string;
  callee_service: string;
  caller?: ReportedEnd;
  callee?: ReportedEnd;
  differs?: Difference[];
  /** When the call started (the earlier end's start), and when the collector decided its state. */
  start_unix_ms: number;
  reconciled_unix_ms: number;
}

/** An end as the reconciler holds it: what the worker read, and which sidecar's record it is. */
export interface HeldEnd {
  end: CallEnd;
  sidecarId: string;
  chain: string;
  identity?: string;
}

export function reportedEnd(h: HeldEnd): ReportedEnd {
  const e = h.end;
  const r: ReportedEnd = { 'audit.sidecar_id': h.sidecarId, 'audit.seq': e.seq, chain: h.chain, service: e.service, start_unix_ms: e.start };
  if (h.identity !== undefined) r['audit.identity'] = h.identity;
  if (e.status !== undefined) r.status = e.status;
  if (e.grpcStatus !== undefined) r.grpc_status = e.grpcStatus;
  if (e.errorType !== undefined) r.error_type = e.errorType;
  if (e.requestBytes !== undefined) r.request_bytes = e.requestBytes;
  if (e.responseBytes !== undefined) r.response_bytes = e.responseBytes;
  if (e.duration !== undefined) r.duration_ms = e.duration;
  return r;
}

/** A call of one or two ends in `state`, `differs` when mismatched. */
export function reconciledCall(state: ReconcileState, caller: HeldEnd | undefined, callee: HeldEnd | undefined, nowUnixMs: number, differs?: Difference[]): ReconciledCall {
  const any = (caller ?? callee)!.end;
  const call: ReconciledCall = {
    state,
    kind: any.kind,
    'audit.request_id': any.requestId,
    'trace.id': any.traceId,
    'span.id': any.spanId,
    caller_service: caller?.end.service ?? callee?.end.claimedClient ?? callee?.end.peer ?? '',
    callee_service: callee?.end.service ?? caller?.end.peer ?? caller?.end.server ?? '',
    start_unix_ms: Math.min(caller?.end.start ?? Infinity, callee?.end.start ?? Infinity),
    reconciled_unix_ms: nowUnixMs,
  };
  if (any.kind === 'grpc') {
    call['rpc.service'] = any.method;
    call['rpc.method'] = any.path;
  } else {
    call['http.request.method'] = any.method;
    call['url.path'] = any.path;
  }
  if (caller !== undefined) call.caller = reportedEnd(caller);
  if (callee !== undefined) call.callee = reportedEnd(callee);
  if (differs !== undefined && differs.length > 0) call.differs = differs;
  return call;
}
