import { randomBytes } from 'node:crypto';

/** A parsed W3C `traceparent` (Trace Context Level 1, version 00). */
export interface TraceContext {
  traceId: string;
  parentId: string;
  flags: string;
}

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

/**
 * Parses a `traceparent` header value; null when it is not valid per W3C Trace Context §3.2
 * (untrusted input never throws). Version ff is invalid; a future version may carry more
 * fields after a dash, version 00 may not; all-zero ids are invalid.
 */
export function parseTraceparent(value: string | string[] | undefined): TraceContext | null {
  if (typeof value !== 'string' || value.length < 55 || value.length > 512) return null;
  const m = TRACEPARENT_RE.exec(value.trim());
  if (m === null) return null;
  const [, version, traceId, parentId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  if (version === 'ff') return null;
  if (version === '00' && rest !== undefined) return null;
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_SPAN_ID) return null;
  return { traceId, parentId, flags };
}

/** Random bytes are drawn 4 KiB at a time: one call to the CSPRNG per ~170 requests, not two per request. */
const RANDOM_POOL_BYTES = 4096;
let randomPool = Buffer.alloc(0);
let randomOffset = 0;

function randomHex(bytes: number): string {
  if (randomOffset + bytes > randomPool.length) {
    randomPool = randomBytes(RANDOM_POOL_BYTES);
    randomOffset = 0;
  }
  const hex = randomPool.toString('hex', randomOffset, randomOffset + bytes);
  randomOffset += bytes;
  return hex;
}

export function newTraceId(): string {
  return randomHex(16);
}

export function newSpanId(): string {
  return randomHex(8);
}

export function formatTraceparent(traceId: string, spanId: string, flags = '01'): string {
  return `00-${traceId}-${spanId}-${flags}`;
}
