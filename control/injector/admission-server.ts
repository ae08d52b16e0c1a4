import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { readFile } from 'node:fs/promises';
import { createSecureContext } from 'node:tls';
import type { JsonPatchOp } from './json-patch.js';

/** The part of an AdmissionReview v1 request the handlers read. */
export interface AdmissionRequest {
  uid: string;
  kind: { group: string; version: string; kind: string };
  resource?: { group: string; version: string; resource: string };
  subResource?: string;
  name?: string;
  namespace?: string;
  operation: string;
  object?: unknown;
  dryRun?: boolean;
}

/** What a handler decides for one request; the server turns it into the AdmissionReview response. */
export interface AdmissionDecision {
  allowed: boolean;
  patch?: readonly JsonPatchOp[];
  warnings?: readonly string[];
  /** Shown to the user when not allowed. */
  message?: string;
}

export type AdmissionHandler = (request: AdmissionRequest) => AdmissionDecision;

export interface AdmissionServerOptions {
  certFile: string;
  keyFile: string;
  /** How often the certificate files are re-read; a changed pair is served from then on. */
  certReloadMs: number;
  /** Requests with larger bodies get 413 (the API server caps objects near 1.5 MiB anyway). */
  maxBodyBytes: number;
  /** A request must arrive whole within this time. */
  requestTimeoutMs: number;
  /** Handlers by URL path (the webhook configuration's `clientConfig.service.path`). */
  handlers: ReadonlyMap<string, AdmissionHandler>;
  /**
   * A handler threw: the request is allowed unchanged with a warning (failing open, like
   * `failurePolicy: Ignore`, but visible), and this is told so it can be counted and logged.
   */
  onInternalError: (err: Error, request: AdmissionRequest) => void;
  onCertReload: (result: 'reloaded' | 'failed', err?: Error) => void;
}

export interface AdmissionServer {
  readonly server: https.Server;
  /** Re-reads the certificate files now; true when a new pair is being served. */
  reloadCertificates(): Promise<boolean>;
  close(): Promise<void>;
}

/** How much of an oversized body (in multiples of the cap) is read and dropped before the connection is cut. */
const DISCARD_LIMIT_FACTOR = 8;
const INTERNAL_ERROR_WARNING = 'auditmesh: the injector failed on this pod; it was admitted unchanged (no audit sidecar)';

/**
 * A generic HTTPS admission webhook server: TLS with certificate reload, a body size cap,
 * AdmissionReview v1 decoding, and the response with a base64 JSONPatch. Knows nothing of pods
 * or sidecars: what to decide is the handlers' business.
 */
export async function createAdmissionServer(options: AdmissionServerOptions): Promise<AdmissionServer> {
  let current = await readPair(options);
  const server = https.createServer({ ...current, minVersion: 'TLSv1.2', requestTimeout: options.requestTimeoutMs, headersTimeout: Math.min(options.requestTimeoutMs, 10_000) });
  server.on('request', (req: IncomingMessage, res: ServerResponse) => serve(options, req, res));
  server.on('tlsClientError', () => {});

  async function reloadCertificates(): Promise<boolean> {
    try {
      const next = await readPair(options);
      if (next.cert.equals(current.cert) && next.key.equals(current.key)) return false;
      server.setSecureContext(next);
      current = next;
      options.onCertReload('reloaded');
      return true;
    } catch (err) {
      // Keep serving the previous pair: a half-written Secret update must not take the webhook down.
      options.onCertReload('failed', err as Error);
      return false;
    }
  }
  const timer = setInterval(() => void reloadCertificates(), options.certReloadMs);
  timer.unref();

  return {
    server,
    reloadCertificates,
    close: () =>
      new Promise((resolve) => {
        clearInterval(timer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** Reads the pair and checks it makes a TLS context (a key that does not match its cert fails here). */
async function readPair(options: AdmissionServerOptions): Promise<{ cert: Buffer; key: Buffer }> {
  const [cert, key] = await Promise.all([readFile(options.certFile), readFile(options.keyFile)]);
  createSecureContext({ cert, key });
  return { cert, key };
}

function serve(options: AdmissionServerOptions, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? '/').split('?')[0]!;
  const handler = options.handlers.get(path);
  if (handler === undefined) return plain(res, 404, `no admission handler at ${path}`);
  if (req.method !== 'POST') return plain(res, 405, 'admission reviews are POSTed');
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > options.maxBodyBytes) return tooLarge(req, res, options.maxBodyBytes);
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > options.maxBodyBytes) return tooLarge(req, res, options.maxBodyBytes);
    chunks.push(chunk);
  });
  req.on('error', () => res.destroy());
  req.on('end', () => {
    if (res.headersSent || res.writableEnded) return;
    const request = decodeReview(Buffer.concat(chunks));
    if (typeof request === 'string') return plain(res, 400, request);
    let decision: AdmissionDecision;
    try {
      decision = handler(request);
    } catch (err) {
      options.onInternalError(err as Error, request);
      decision = { allowed: true, warnings: [INTERNAL_ERROR_WARNING] };
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(reviewResponse(request.uid, decision)));
  });
}

/** The AdmissionReview's request, or why the body is not one. */
export function decodeReview(body: Buffer): AdmissionRequest | string {
  let review: unknown;
  try {
    review = JSON.parse(body.toString('utf8'));
  } catch {
    return 'body is not JSON';
  }
  const r = review as { apiVersion?: unknown; kind?: unknown; request?: Partial<AdmissionRequest> } | null;
  if (r === null || typeof r !== 'object' || r.apiVersion !== 'admission.k8s.io/v1' || r.kind !== 'AdmissionReview') {
    return 'expected an AdmissionReview of apiVersion admission.k8s.io/v1';
  }
  const request = r.request;
  if (request === undefined || typeof request.uid !== 'string' || request.uid === '' || typeof request.kind?.kind !== 'string' || typeof request.operation !== 'string') {
    return 'AdmissionReview has no request with uid, kind and operation';
  }
  return request as AdmissionRequest;
}

/** The AdmissionReview v1 response: the patch, when there is one, as base64 JSONPatch. */
export function reviewResponse(uid: string, decision: AdmissionDecision): Record<string, unknown> {
  const response: Record<string, unknown> = { uid, allowed: decision.allowed };
  if (decision.allowed && decision.patch !== undefined && decision.patch.length > 0) {
    response.patchType = 'JSONPatch';
    response.patch = Buffer.from(JSON.stringify(decision.patch)).toString('base64');
  }
  if (decision.warnings !== undefined && decision.warnings.length > 0) response.warnings = decision.warnings;
  if (!decision.allowed) response.status = { code: 403, message: decision.message ?? 'denied' };
  return { apiVersion: 'admission.k8s.io/v1', kind: 'AdmissionReview', response };
}

function plain(res: ServerResponse, status: number, message: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', connection: 'close' });
  res.end(message + '\n');
}

function tooLarge(req: IncomingMessage, res: ServerResponse, max: number): void {
  if (res.headersSent) return;
  plain(res, 413, `request body larger than ${max} bytes`);
  // Read and drop the rest rather than reset the connection: a reset can reach the client before
  // the 413 does. A client that keeps sending far past the cap is cut off.
  let discarded = 0;
  req.removeAllListeners('data');
  req.on('data', (chunk: Buffer) => {
    discarded += chunk.length;
    if (discarded > DISCARD_LIMIT_FACTOR * max) req.destroy();
  });
  req.resume();
}
