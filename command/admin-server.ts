import type http from 'node:http';
import type { Registry } from 'prom-client';
import type { JournalRecord } from '../ledger/record.js';
import { createPlainServer, text } from './plain-http.js';
import { createTailStreams, DEFAULT_MAX_TAIL_SUBSCRIBERS, type TailLimits } from './tail-streams.js';

export { text } from './plain-http.js';

export interface AdminDeps {
  registry: Registry;
  /** Ready to take traffic: listeners up and the journal writable; a reason with ok is shown as degraded. */
  ready: () => { ok: boolean; reason?: string };
  /** Live feed of committed records; null when auditing is off. */
  subscribe: ((listener: (rec: JournalRecord) => void) => () => void) | null;
  /** Bounds of /tail; default DEFAULT_MAX_TAIL_SUBSCRIBERS subscribers. */
  tail?: TailLimits;
}

/** Whether a peer address is this host's loopback (127.0.0.0/8, ::1, or either mapped into IPv6). */
export function isLoopback(address: string | undefined): boolean {
  return address !== undefined && (/^(::ffff:)?127\./.test(address) || address === '::1');
}

/**
 * The admin endpoints: /metrics (Prometheus), /livez, /readyz (the kubelet, on the pod IP), and
 * /tail (server-sent events): the pod's own records in clear, so loopback clients only
 * (kubectl port-forward and exec arrive on loopback).
 */
export function createAdminServer(deps: AdminDeps): http.Server {
  const subscribe = deps.subscribe;
  const tails = subscribe === null ? null : createTailStreams(deps.registry, 'auditmesh', deps.tail ?? { maxSubscribers: DEFAULT_MAX_TAIL_SUBSCRIBERS });
  return createPlainServer((req, res, url) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(res, 405, 'method not allowed\n');
    switch (url.pathname) {
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
        if (!isLoopback(req.socket.remoteAddress)) return text(res, 403, 'the live tail answers loopback clients only: reach it with kubectl port-forward POD 15020, or read the collector\n');
        if (subscribe === null || tails === null) return text(res, 404, 'auditing is off: no records to tail\n');
        return tails.serve(res, (send) => subscribe((rec) => send(String(rec['audit.seq']), JSON.stringify(rec))));
      default:
        return text(res, 404, 'not found: try /metrics, /livez, /readyz, /tail\n');
    }
  });
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
