import type http from 'node:http';
import { serveMetrics } from '../../../command/admin-server.js';
import { createPlainServer, text, type ServingTls } from '../../../command/plain-http.js';
import { createTailStreams, DEFAULT_MAX_TAIL_SUBSCRIBERS, type TailStreams } from '../../../command/tail-streams.js';
import type { CollectorMetrics } from '../collector-metrics.js';
import type { CollectorStore } from '../collector-store.js';
import type { FleetAnomaly } from './fleet-alerts.js';
import { collectedRecord, parseNamespaces, parseRecordQuery, QueryError, runQuery, type CollectedRecord } from './record-query.js';
import type { StoredRun } from '../ingest/sidecar-chain.js';
import { BatchBlob } from '../store/batch-blob.js';
import type { SidecarStatus } from './sidecar-status.js';
import type { ReadAccess } from './read-access.js';
import { EVERY_NAMESPACE, inScope, recordNamespace, sidecarNamespace, type ReadScope } from './record-namespace.js';
import { readerScope, scopedQuery } from './read-gate.js';
import { chainKeyOf, INCARNATION_SEPARATOR } from '../store/chain-key.js';
import { parseSpiffeId } from '../../../ledger/spiffe-id.js';
import type { EvidenceBundle } from '../../../ledger/evidence-bundle.js';
import { parseRecordRef, ProofError, type RecordRef } from '../witness/bundle-builder.js';
import type { ReconcileFilter } from '../reconcile/call-reconciler.js';
import { RECONCILE_STATES, type ReconciledCall, type ReconcileState } from '../reconcile/reconciled-call.js';
import { parseTimeBound } from './record-query.js';

/**
 * The collector's HTTP API (README.md, The collector): /v1/records (NDJSON, newest first), /v1/tail
 * (server-sent events, one record each, as stored), /v1/sidecars (JSON), /v1/anomalies (JSON:
 * fleet-wide spikes active and the latest raised), /metrics, /livez, /readyz. Under /v1/ a reader
 * needs a credential (read-access.ts) and sees only the namespaces it may read. Read-only:
 * nothing here changes the store. No request stops it: malformed targets and parameters get a
 * 4xx (plain-http.ts), live tails are capped (tail-streams.ts).
 */

export interface HttpApiDeps {
  store: CollectorStore;
  metrics: CollectorMetrics;
  /** Every sidecar known (in the JetStream tier, asked of every replica). */
  sidecars(): SidecarStatus[] | Promise<SidecarStatus[]>;
  /** Runs stored from now on; returns the unsubscribe function. */
  subscribe(listener: (run: StoredRun) => void): () => void;
  ready(): { ok: boolean; reason?: string };
  /** Fleet-wide anomalies: spikes active now, and the latest raised. */
  anomalies(): { active: FleetAnomaly[]; recent: FleetAnomaly[] } | Promise<{ active: FleetAnomaly[]; recent: FleetAnomaly[] }>;
  /** A bundle proving these records (witness/collector-witness.ts); throws ProofError for one it cannot prove. */
  proof?(refs: readonly RecordRef[], opts: { treeSize?: number }): Promise<EvidenceBundle>;
  /** Calls with the state of their two ends (reconcile/call-reconciler.ts); absent: 404. */
  reconciliation?(filter: ReconcileFilter): ReconciledCall[];
  /** /v1/tail subscribers at once (--max-tail-subscribers); default DEFAULT_MAX_TAIL_SUBSCRIBERS. */
  maxTailSubscribers?: number;
  /** Who may read /v1/ and which namespaces; null: open reads (--insecure). */
  readAccess: ReadAccess | null;
  /** Serve HTTPS with this key and certificate. */
  tls?: ServingTls;
}

const ROUTES = '/v1/records, /v1/tail, /v1/sidecars, /v1/anomalies, /v1/proof, /v1/reconciliation, /metrics, /livez, /readyz';

export function createHttpApi(deps: HttpApiDeps): http.Server {
  const tails = createTailStreams(deps.metrics.registry, 'auditmesh_collector', { maxSubscribers: deps.maxTailSubscribers ?? DEFAULT_MAX_TAIL_SUBSCRIBERS });
  return createPlainServer(async (req, res, url) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') return text(res, 405, 'method not allowed\n');
    if (!url.pathname.startsWith('/v1/')) return open(deps, url.pathname, res);
    const scope = deps.readAccess === null ? EVERY_NAMESPACE : await readerScope(deps.readAccess, deps.metrics, req, res);
    if (scope === null) return;
    switch (url.pathname) {
      case '/v1/records':
        return records(deps, scope, url.searchParams, res);
      case '/v1/tail':
        return tail(deps, tails, scope, url.searchParams, res);
      case '/v1/sidecars':
        return json(res, async () => (await deps.sidecars()).filter((s) => inScope(scope, sidecarNamespace(s.id))));
      case '/v1/proof':
        return proof(deps, scope, url.searchParams, res);
      case '/v1/reconciliation':
        return reconciliation(deps, scope, url.searchParams, res);
      case '/v1/anomalies':
        // Anomalies are fleet-wide, by service: no namespace to scope them by.
        if (!scope.all) return refuse(deps, res, 'fleet-wide anomalies are for readers of every namespace (*)');
        return json(res, async () => deps.anomalies());
      default:
        return text(res, 404, `not found: try ${ROUTES}\n`);
    }
  }, deps.tls);
}

/** A JSON answer; 503 when it cannot be gathered (a replica of the tier out of reach). */
async function json(res: http.ServerResponse, gather: () => Promise<unknown>): Promise<void> {
  let body: unknown;
  try {
    body = await gather();
  } catch (err) {
    return text(res, 503, `cannot answer now: ${(err as Error)?.message}\n`);
  }
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body) + '\n');
}

/** What answers without a credential: Prometheus and the kubelet reach these. */
function open(deps: HttpApiDeps, path: string, res: http.ServerResponse): void {
  switch (path) {
    case '/metrics':
      return serveMetrics(deps.metrics.registry, res);
    case '/livez':
      return text(res, 200, 'ok\n');
    case '/readyz': {
      const r = deps.ready();
      return text(res, r.ok ? 200 : 503, r.ok ? 'ready\n' : `not ready: ${r.reason}\n`);
    }
    default:
      return text(res, 404, `not found: try ${ROUTES}\n`);
  }
}

function refuse(deps: HttpApiDeps, res: http.ServerResponse, problem: string): void {
  deps.metrics.readRefusals.inc({ reason: 'out-of-scope' });
  text(res, 403, `forbidden: out-of-scope: ${problem}\n`);
}

async function records(deps: HttpApiDeps, scope: ReadScope, params: URLSearchParams, res: http.ServerResponse): Promise<void> {
  let q;
  try {
    q = parseRecordQuery(params);
  } catch (err) {
    if (!(err instanceof QueryError)) throw err;
    return text(res, 400, `bad query: ${err.message}\n`);
  }
  const scoped = scopedQuery(q.namespaces, scope);
  if (!scoped.ok) return refuse(deps, res, scoped.problem);
  // An identity names its namespace: one outside the reader's is refused as a namespace filter is.
  const identityNs = q.identity === undefined ? null : (parseSpiffeId(q.identity)?.namespace ?? null);
  if (identityNs !== null && !inScope(scope, identityNs)) return refuse(deps, res, `this reader may not read namespace ${identityNs}, which identity ${q.identity} is of`);
  q.namespaces = scoped.namespaces;
  const found = runQuery(deps.store, q)[Symbol.asyncIterator]();
  let next: IteratorResult<CollectedRecord>;
  try {
    // The store may refuse the query only once it looks (an id too many records carry): before the headers.
    next = await found.next();
  } catch (err) {
    return err instanceof QueryError ? text(res, 400, `bad query: ${err.message}\n`) : text(res, 500, `the store failed to answer: ${(err as Error)?.message}\n`);
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  try {
    for (; next.done !== true; next = await found.next()) {
      if (res.destroyed) return;
      if (!res.write(JSON.stringify(next.value) + '\n')) await drainedOrClosed(res);
    }
    res.end();
  } catch (err) {
    // Headers are sent: cut the stream so the client sees an abort, never a short answer that looks complete.
    res.destroy(err as Error);
  }
}

/**
 * `record=SIDECAR_ID:SEQ`: the record with its proofs, as a one-record bundle (ledger/evidence-bundle.ts).
 * The same credential and namespace scope as /v1/records: a record of another namespace is refused (403).
 */
async function proof(deps: HttpApiDeps, scope: ReadScope, params: URLSearchParams, res: http.ServerResponse): Promise<void> {
  if (deps.proof === undefined) return text(res, 404, 'this collector makes no proofs\n');
  for (const name of params.keys()) if (name !== 'record' && name !== 'tree_size') return text(res, 400, `bad proof request: unknown parameter ${JSON.stringify(name)}; known: record, tree_size\n`);
  const wanted = params.getAll('record');
  const size = params.get('tree_size');
  let bundle: EvidenceBundle;
  try {
    if (wanted.length !== 1) throw new ProofError(400, 'record: give exactly one SIDECAR_ID:SEQ');
    if (size !== null && !/^[1-9]\d{0,15}$/.test(size)) throw new ProofError(400, `tree_size: expected the size of a signed tree head, got ${JSON.stringify(size)}`);
    bundle = await deps.proof([parseRecordRef(wanted[0])], { treeSize: size === null ? undefined : Number(size) });
  } catch (err) {
    if (err instanceof ProofError) return text(res, err.status, `${err.status === 400 ? 'bad proof request' : 'no proof'}: ${err.message}\n`);
    return text(res, 500, `the store failed to answer: ${(err as Error)?.message}\n`);
  }
  const r = bundle.records[0];
  // A proof names the record's chain (chain-key.ts); its sidecar id alone (NS/POD, bound to the pod's token) scopes it.
  const [sidecar, incarnation = ''] = r.sidecar.split(INCARNATION_SEPARATOR);
  const rec = collectedRecord({ sidecar: sidecar!, incarnation, seq: r.seq, bytes: Buffer.from(r.bytes, 'base64') });
  // Out of scope answers as a record of another namespace does on /v1/records: refused, never shown.
  if (rec === null || !inScope(scope, recordNamespace(rec))) return refuse(deps, res, `record ${r.sidecar}:${r.seq} is not in this reader's namespaces`);
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(bundle) + '\n');
}

/**
 * `service=&since=&state=`: calls with the state of their two ends, pending ones first, then the
 * decided ones newest first. The same credential and scope as /v1/records: a call shows only when
 * every end it has is a record of a namespace the reader may read.
 */
function reconciliation(deps: HttpApiDeps, scope: ReadScope, params: URLSearchParams, res: http.ServerResponse): void {
  if (deps.reconciliation === undefined) return text(res, 404, 'this collector does not reconcile calls\n');
  const filter: ReconcileFilter = {};
  for (const [name, value] of params) {
    if (name === 'service' && value !== '') filter.service = value;
    else if (name === 'state' && value !== '') {
      if (!(RECONCILE_STATES as readonly string[]).includes(value)) return text(res, 400, `bad reconciliation query: state: expected one of ${RECONCILE_STATES.join(', ')}, got ${JSON.stringify(value)}\n`);
      filter.state = value as ReconcileState;
    } else if (name === 'since' && value !== '') {
      try {
        filter.sinceUnixMs = parseTimeBound('since', value, Date.now());
      } catch (err) {
        if (!(err instanceof QueryError)) throw err;
        return text(res, 400, `bad reconciliation query: ${err.message}\n`);
      }
    } else if (name !== 'service' && name !== 'state' && name !== 'since') return text(res, 400, `bad reconciliation query: unknown parameter ${JSON.stringify(name)}; known: service, since, state\n`);
  }
  const visible = (call: ReconciledCall): boolean => [call.caller, call.callee].every((end) => end === undefined || inScope(scope, end['audit.identity'] === undefined ? sidecarNamespace(end['audit.sidecar_id']) : (parseSpiffeId(end['audit.identity'])?.namespace ?? null)));
  let calls: ReconciledCall[];
  try {
    calls = deps.reconciliation(filter).filter(visible);
  } catch (err) {
    return text(res, 500, `the store failed to answer: ${(err as Error)?.message}\n`);
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.end(calls.map((c) => JSON.stringify(c) + '\n').join(''));
}

/** Waits for 'drain' or 'close', whichever comes first, removing both listeners (a long answer waits many times). */
function drainedOrClosed(res: http.ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

function tail(deps: HttpApiDeps, tails: TailStreams, scope: ReadScope, params: URLSearchParams, res: http.ServerResponse): void {
  let filter;
  try {
    filter = tailFilter(params);
  } catch (err) {
    if (!(err instanceof QueryError)) throw err;
    return text(res, 400, `bad tail: ${err.message}\n`);
  }
  const scoped = scopedQuery(filter, scope);
  if (!scoped.ok) return refuse(deps, res, scoped.problem);
  const wanted = scoped.namespaces;
  tails.serve(res, (send) =>
    deps.subscribe((run) => {
      const chain = chainKeyOf(run.sidecar);
      const incarnation = run.sidecar.incarnation ?? '';
      for (const b of run.batches) {
        const blob = new BatchBlob(b.blob);
        for (let i = 0; i < blob.count; i++) {
          const seq = blob.firstSeq + i;
          const rec = collectedRecord({ sidecar: run.sidecar.id, incarnation, seq, bytes: blob.bytes(i), ...(b.identity === undefined ? {} : { identity: b.identity }) });
          if (rec !== null && (wanted === undefined || wanted.has(recordNamespace(rec) ?? ''))) send(`${chain}:${seq}`, JSON.stringify(rec));
        }
      }
    }),
  );
}

/** /v1/tail takes one parameter, `namespace`. */
function tailFilter(params: URLSearchParams): ReadonlySet<string> | undefined {
  for (const name of params.keys()) if (name !== 'namespace') throw new QueryError(`unknown parameter ${JSON.stringify(name)}; known: namespace`);
  const ns = params.get('namespace');
  return ns === null ? undefined : parseNamespaces(ns);
}
