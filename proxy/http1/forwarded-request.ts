import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { ProxyError, answerHeaders, classify, rescue } from '../errors.js';
import type { ForwardOutcome } from './forwarder.js';
import type { UpstreamTarget } from '../routing/route.js';

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

/** A request with neither Content-Length nor Transfer-Encoding, or a zero length, has no body (RFC 9112 §6.3). */
export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * One request in a forwarding engine, ended exactly once: finish() reports the outcome, fail()
 * answers with the rescue table (or aborts the client, after headers) and reports it. Each
 * engine extends it with its own upstream state.
 */
export class ForwardedRequest {
  readonly startedAt = performance.now();
  readonly outcome: ForwardOutcome = { upstreamResponded: false, requestBytes: 0, responseBytes: 0 };
  finished = false;
  /** The keep-alive race: a pooled socket that closed as it was reused gets one replay. */
  retried = false;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly target: UpstreamTarget,
    /** Added to the client's response, the rescue answer's included. */
    readonly responseHeaders: OutgoingHttpHeaders,
    readonly done: (outcome: ForwardOutcome) => void,
  ) {}

  /** True when a reset before any response may be replayed: idempotent, no body, not replayed yet. */
  replayable(): boolean {
    return !this.finished && !this.outcome.upstreamResponded && !this.retried && IDEMPOTENT.has(this.req.method ?? '') && !hasBody(this.req);
  }

  /**
   * Counts a chunk of the client's body. Past `limit` bytes (0: none) the request fails with 413
   * and false is returned: a chunked body declares no length, so it is cut off as it passes.
   */
  countBody(bytes: number, limit: number): boolean {
    this.outcome.requestBytes += bytes;
    if (limit === 0 || this.outcome.requestBytes <= limit || this.finished) return true;
    this.fail(new ProxyError('AUDITMESH_REQUEST_TOO_LARGE', `request body larger than ${limit} bytes`), 'rejected');
    return false;
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.done(this.outcome);
  }

  /** Records a failure; before headers the client gets the rescue table's answer, after them an abort. */
  fail(err: unknown, kind?: ForwardOutcome['errorKind']): void {
    if (this.finished) return;
    const error = classify(err);
    const r = rescue(error);
    const { res, outcome } = this;
    outcome.error = error;
    outcome.errorKind = kind ?? (outcome.upstreamResponded ? 'incomplete' : r.kind);
    if (kind === 'aborted') {
      // Nobody to answer.
    } else if (!res.headersSent && !res.destroyed) {
      outcome.status = r.status;
      res.writeHead(r.status, { ...this.responseHeaders, ...answerHeaders(error.code), connection: 'close' });
      res.end(`auditmesh: ${r.message}\n`);
    } else {
      res.destroy();
    }
    this.finish();
  }
}

/** A raw header list (name, value, name, value...) as pairs, the form res.addTrailers() keeps repeated fields in. */
export function headerPairs(raw: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}
