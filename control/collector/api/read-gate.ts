import type http from 'node:http';
import { text } from '../../../command/plain-http.js';
import type { CollectorMetrics } from '../collector-metrics.js';
import type { ReadAccess } from './read-access.js';
import type { ReadScope } from './record-namespace.js';

/**
 * The HTTP side of read access: the reader's scope, or an answer already sent (401 with
 * `www-authenticate: Bearer`, RFC 6750 §3, or 403) and counted by reason.
 */
export async function readerScope(access: ReadAccess, metrics: CollectorMetrics, req: http.IncomingMessage, res: http.ServerResponse): Promise<ReadScope | null> {
  const verdict = await access.authorize(req.headers.authorization);
  if (verdict.ok) return verdict.scope;
  metrics.readRefusals.inc({ reason: verdict.reason });
  if (verdict.status === 401) {
    const error = verdict.reason === 'missing' ? '' : ', error="invalid_token"';
    res.setHeader('www-authenticate', `Bearer realm="auditmesh"${error}`);
    text(res, 401, `unauthorized: ${verdict.reason}: ${verdict.problem}\n`);
  } else {
    text(res, 403, `forbidden: ${verdict.reason}: ${verdict.problem}\n`);
  }
  return null;
}

/**
 * The namespaces a read may cover: those of its `namespace=` filter, which must all be in the
 * reader's scope (else a refusal naming them), or the scope itself; undefined is every record.
 */
export function scopedQuery(filter: ReadonlySet<string> | undefined, scope: ReadScope): { ok: true; namespaces: ReadonlySet<string> | undefined } | { ok: false; problem: string } {
  if (scope.all) return { ok: true, namespaces: filter };
  if (filter === undefined) return { ok: true, namespaces: scope.namespaces };
  const outside = [...filter].filter((ns) => !scope.namespaces.has(ns));
  if (outside.length > 0) return { ok: false, problem: `this reader may not read namespace ${outside.join(', ')} (it may read ${[...scope.namespaces].join(', ')})` };
  return { ok: true, namespaces: filter };
}
