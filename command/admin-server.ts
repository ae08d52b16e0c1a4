import http from 'node:http';
import type { Registry } from 'prom-client';
import type { JournalRecord } from '../ledger/record.js';

export interface AdminDeps {
  registry: Registry;
  /** Ready to take traffic: listeners up and the journal writable; a reason with ok is shown as degraded. */
  ready: () => { ok: boolean; reason?: string };
  /** Live feed of committed records; null when auditing is off. */
  subscribe: ((listener: (rec: JournalRecord) => void) => () => void) | null;
}

/** SSE comment sent this often so idle tails survive proxies and notice dead clients. */
const TAIL_HEARTBEAT_MS = 15_000;
const MAX_TAIL_BUFFER_BYTES = 4 * 1024 * 1024;

/** The admin endpoints: /metrics (Prometheus), /livez, /readyz, /tail (server-sent events). */
export function createAdminServer(deps: AdminDeps): http.Server {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(res, 405, 'method not allowed\n');
    switch (path) {
      case '/metrics':
        return serveMetrics(deps.registry, res);
      case '/livez':
        return text(res, 200, 'ok\n');
      case '/readyz': {
        const r = deps.ready();
        // Ready with a reason is degraded: taking traffic, but something is off (a journal-full `pass`).
        return text(res, r.ok ? 200 : 503, r.ok ? (r.reason === undefined ? 'ready\n' : `ready, degraded: ${r.reason}\n`) : `not ready: ${r.reason}\n`);
      }
      case '/tail':
        return tail(deps, res);
      default:
        return text(res, 404, 'not found: try /metrics, /livez, /readyz, /tail\n');
    }
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  return server;
}

/** The registry in Prometheus text format. */
export function serveMetrics(registry: Registry, res: http.ServerResponse): void {
  registry.metrics().then(
    (body) => {
      res.writeHead(200, { 'content-type': registry.contentType });
      res.end(body);
    },
    (err: Error) => text(res, 500, `metrics failed: ${err.message}\n`),
  );
}

/** A plain-text answer. */
export function text(res: http.ServerResponse, status: number, body: string): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(body);
}

function tail(deps: AdminDeps, res: http.ServerResponse): void {
  const subscribe = deps.subscribe;
  if (subscribe === null) return text(res, 404, 'auditing is off: no records to tail\n');
  serveEventStream(res, (send) => subscribe((rec) => send(String(rec['audit.seq']), JSON.stringify(rec))));
}

/**
 * Serves server-sent events on `res` until the client goes: one event per `send(id, data)`, a
 * keep-alive comment every TAIL_HEARTBEAT_MS. `subscribe` returns its unsubscribe function.
 * Shared by the sidecar's /tail and the collector's /v1/tail.
 */
export function serveEventStream(res: http.ServerResponse, subscribe: (send: (id: string, data: string) => void) => () => void): void {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  res.write(': auditmesh tail\n\n');
  const unsubscribe = subscribe((id, data) => {
    // A tail client that does not read is cut off rather than buffered without bound.
    if (res.writableLength > MAX_TAIL_BUFFER_BYTES) return void res.destroy();
    res.write(`id: ${id}\ndata: ${data}\n\n`);
  });
  const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), TAIL_HEARTBEAT_MS);
  res.on('close', () => {
    clearInterval(heartbeat);
    unsubscribe();
  });
}
