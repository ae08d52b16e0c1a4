import type { JournalRecord } from '../../../ledger/record.js';
import type { CollectorStore, RecordQuery, StatusFilter, StoredRecord } from '../collector-store.js';
import { isErrorRecord } from '../store/record-index.js';
import { recordNamespace } from './record-namespace.js';
import { parseSpiffeId } from '../../../ledger/spiffe-id.js';

/**
 * The auditors' questions as one query type: parsed from /v1/records parameters (and from
 * `auditmesh query` flags, which send the same parameters), answered newest first from the store's
 * narrowest index and then filtered in full here, so every index only has to be a superset.
 */

/**
 * A record as the collector answers it: the journal's record plus what the collector knows of its
 * writer: which sidecar and incarnation wrote it, and the identity its stream proved. These are
 * the collector's fields, never the record's own: a value the record's bytes carry under one of
 * their names is not believed (a claimed `audit.identity` is kept as `audit.claimed.identity`).
 */
export type CollectedRecord = JournalRecord & {
  'audit.sidecar_id': string;
  /** The pod uid of its chain, when its sidecar presented a ServiceAccount token. */
  'audit.incarnation'?: string;
  /** The SPIFFE ID the writer's stream proved when the collector stored it. */
  'audit.identity'?: string;
  /** true when `audit.service` is not the service account `audit.identity` names (identityMismatch). */
  'audit.identity_mismatch'?: true;
  'audit.claimed.identity'?: unknown;
};

export const DEFAULT_QUERY_LIMIT = 100;
export const MAX_QUERY_LIMIT = 10_000;

/** A parameter the caller got wrong: /v1/records answers 400 with the message, the CLI exits 2. */
export class QueryError extends Error {}

const UNITS_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `10m` (that long before now), an ISO 8601 time, or Unix milliseconds. */
export function parseTimeBound(name: string, text: string, nowUnixMs: number): number {
  const rel = /^(\d+)(ms|s|m|h|d)$/.exec(text);
  if (rel !== null) return nowUnixMs - Number(rel[1]) * UNITS_MS[rel[2]];
  if (/^\d{10,}$/.test(text)) return Number(text);
  const t = /^\d{4}-\d{2}-\d{2}/.test(text) ? Date.parse(text) : Number.NaN;
  if (Number.isNaN(t)) throw new QueryError(`${name}: expected a duration back from now (10m, 2h, 7d), an ISO 8601 time or Unix milliseconds, got ${JSON.stringify(text)}`);
  return t;
}

/** `5xx` (a class), `ok`, `error`, or a status code (HTTP, e.g. 503). */
export function parseStatus(text: string): StatusFilter {
  if (/^[1-5]xx$/i.test(text)) return { class: Number(text[0]) };
  if (text === 'ok' || text === 'error') return { error: text === 'error' };
  if (/^[1-5]\d\d$/.test(text)) return { code: Number(text) };
  throw new QueryError(`status: expected 5xx (a class), ok, error or a status code such as 503, got ${JSON.stringify(text)}`);
}

/** Longer than any SPIFFE ID a token or certificate of the mesh proves (a namespace is 63 characters, a service account 253), and well inside an LMDB key. */
const MAX_IDENTITY_CHARS = 512;

const PARAMS = new Set(['correlation_id', 'trace_id', 'service', 'peer', 'identity', 'since', 'until', 'status', 'namespace', 'limit']);

/** /v1/records parameters -> query. Throws QueryError naming the parameter at fault. */
export function parseRecordQuery(params: URLSearchParams, nowUnixMs = Date.now()): RecordQuery {
  for (const name of params.keys()) if (!PARAMS.has(name)) throw new QueryError(`unknown parameter ${JSON.stringify(name)}; known: ${[...PARAMS].join(', ')}`);
  const get = (name: string): string | undefined => {
    const v = params.get(name);
    if (v === null) return undefined;
    if (v === '') throw new QueryError(`${name}: empty value`);
    return v;
  };
  const q: RecordQuery = { limit: DEFAULT_QUERY_LIMIT };
  const limit = get('limit');
  if (limit !== undefined) {
    if (!/^\d+$/.test(limit) || Number(limit) < 1 || Number(limit) > MAX_QUERY_LIMIT) throw new QueryError(`limit: expected a whole number from 1 to ${MAX_QUERY_LIMIT}, got ${JSON.stringify(limit)}`);
    q.limit = Number(limit);
  }
  q.correlationId = get('correlation_id');
  q.traceId = get('trace_id');
  q.service = get('service');
  q.peer = get('peer');
  const identity = get('identity');
  if (identity !== undefined) {
    if (identity.length > MAX_IDENTITY_CHARS || parseSpiffeId(identity) === null) throw new QueryError(`identity: expected a workload SPIFFE ID, spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT, got ${JSON.stringify(identity)}`);
    q.identity = identity;
  }
  const since = get('since');
  const until = get('until');
  if (since !== undefined) q.sinceUnixMs = parseTimeBound('since', since, nowUnixMs);
  if (until !== undefined) q.untilUnixMs = parseTimeBound('until', until, nowUnixMs);
  if (q.sinceUnixMs !== undefined && q.untilUnixMs !== undefined && q.sinceUnixMs > q.untilUnixMs) throw new QueryError('since is after until');
  const status = get('status');
  if (status !== undefined) q.status = parseStatus(status);
  const namespace = get('namespace');
  if (namespace !== undefined) q.namespaces = parseNamespaces(namespace);
  return q;
}

/** `a` or `a,b`: namespace names (RFC 1123 labels). */
export function parseNamespaces(text: string): ReadonlySet<string> {
  const names = text.split(',');
  const bad = names.find((n) => !/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(n));
  if (bad !== undefined) throw new QueryError(`namespace: expected namespace names separated by commas, got ${JSON.stringify(bad)}`);
  return new Set(names);
}

function matchesStatus(rec: JournalRecord, f: StatusFilter): boolean {
  const status = rec['http.response.status_code'];
  if ('error' in f) return isErrorRecord(rec) === f.error;
  if ('class' in f) return status !== undefined && Math.floor(status / 100) === f.class;
  return status === f.code;
}

/** Whether a record answers the query (every filter, not only the one its index covered). */
export function matchesQuery(rec: JournalRecord, q: RecordQuery): boolean {
  const self = rec['audit.service'];
  const peer = rec['peer.service'];
  if (q.correlationId !== undefined && rec['audit.request_id'] !== q.correlationId) return false;
  if (q.traceId !== undefined && rec['trace.id'] !== q.traceId) return false;
  if (q.identity !== undefined && (rec as CollectedRecord)['audit.identity'] !== q.identity) return false;
  if (q.service !== undefined && q.peer !== undefined) {
    if (!((self === q.service && peer === q.peer) || (self === q.peer && peer === q.service))) return false;
  } else {
    const side = q.service ?? q.peer;
    if (side !== undefined && self !== side && peer !== side) return false;
  }
  const start = rec['audit.start_unix_ms'];
  if (q.sinceUnixMs !== undefined && !(start >= q.sinceUnixMs)) return false;
  if (q.untilUnixMs !== undefined && !(start <= q.untilUnixMs)) return false;
  return q.status === undefined || matchesStatus(rec, q.status);
}

/**
 * Whether a record's claimed service (`audit.service`) is not the service account of the
 * identity its writer proved: the rule is that a workload runs as a service account named after
 * its service. false when there is no proven identity to compare with.
 */
export function identityMismatch(service: unknown, identity: string | undefined): boolean {
  const proven = identity === undefined ? null : parseSpiffeId(identity);
  return proven !== null && service !== proven.serviceAccount;
}

/** Fields only the collector writes: a record's own are dropped (its claimed identity kept as audit.claimed.identity). */
const COLLECTOR_FIELDS = ['audit.identity', 'audit.incarnation', 'audit.identity_mismatch'] as const;

/** The record of stored bytes as answered, with the collector's fields, or null if the bytes are not a JSON object. */
export function collectedRecord(stored: StoredRecord): CollectedRecord | null {
  let rec: unknown;
  try {
    rec = JSON.parse(stored.bytes.toString('utf8')) as unknown;
  } catch {
    return null;
  }
  if (rec === null || typeof rec !== 'object' || Array.isArray(rec)) return null;
  // The parsed object is this call's own: changed in place rather than copied (the OTLP export maps
  // every record), with the same fields in the same order as a copy without the collector's fields.
  const out = rec as CollectedRecord;
  const claimed = out['audit.identity'];
  for (const k of COLLECTOR_FIELDS) if (k in out) delete out[k];
  out['audit.seq'] = stored.seq;
  out['audit.sidecar_id'] = stored.sidecar;
  if (stored.incarnation !== '') out['audit.incarnation'] = stored.incarnation;
  if (stored.identity !== undefined) out['audit.identity'] = stored.identity;
  if (identityMismatch(out['audit.service'], stored.identity)) out['audit.identity_mismatch'] = true;
  if (claimed !== undefined) out['audit.claimed.identity'] = claimed;
  return out;
}

/** Runs a query: matching records, newest first, at most q.limit. */
export async function* runQuery(store: Pick<CollectorStore, 'query'>, q: RecordQuery): AsyncIterable<CollectedRecord> {
  let n = 0;
  for await (const stored of store.query(q)) {
    const rec = collectedRecord(stored);
    if (rec === null || !matchesQuery(rec, q)) continue;
    if (q.namespaces !== undefined && !q.namespaces.has(recordNamespace(rec) ?? '')) continue;
    yield rec;
    if (++n >= q.limit) return;
  }
}
