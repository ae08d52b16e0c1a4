import { parse } from 'yaml';
import { parseSpiffeId } from '../../../ledger/spiffe-id.js';
import type { ReadScope } from './record-namespace.js';
import { watchFile } from './watched-file.js';

/**
 * The read policy (--read-policy FILE, YAML): which workload identities may read which
 * namespaces through the collector's /v1/ API. Re-read when the file changes.
 *
 *   readers:
 *     - serviceAccount: monitoring/grafana     # NAMESPACE/NAME; NAMESPACE/* is every one of it
 *       namespaces: ["*"]                      # every namespace, records without one included
 *     - spiffeId: spiffe://cluster.local/ns/payments/sa/auditor
 *       namespaces: [payments, billing]
 *
 * A reader matched by several entries reads the union; one matched by none reads nothing (403).
 */
export interface ReadPolicy {
  /** The scope of an identity (its SPIFFE ID, whose namespace and service account the token proves), or null. */
  scopeOf(spiffeId: string): ReadScope | null;
}

interface Entry {
  matches(spiffeId: string): boolean;
  namespaces: string[];
}

const NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

function entry(raw: unknown, where: string): Entry {
  const e = raw as { serviceAccount?: unknown; spiffeId?: unknown; namespaces?: unknown } | null;
  if (e === null || typeof e !== 'object') throw new Error(`${where}: expected a mapping with serviceAccount or spiffeId, and namespaces`);
  const namespaces = e.namespaces;
  if (!Array.isArray(namespaces) || namespaces.length === 0 || !namespaces.every((n) => typeof n === 'string' && (n === '*' || NAME.test(n)))) {
    throw new Error(`${where}.namespaces: expected a list of namespace names or ["*"]`);
  }
  if ((e.serviceAccount === undefined) === (e.spiffeId === undefined)) throw new Error(`${where}: give one of serviceAccount (NAMESPACE/NAME) or spiffeId`);
  if (typeof e.spiffeId === 'string' && parseSpiffeId(e.spiffeId) !== null) {
    const id = e.spiffeId;
    return { matches: (s) => s === id, namespaces };
  }
  const sa = typeof e.serviceAccount === 'string' ? /^([^/]+)\/([^/]+)$/.exec(e.serviceAccount) : null;
  if (sa === null || !NAME.test(sa[1]) || !(sa[2] === '*' || NAME.test(sa[2]))) {
    throw new Error(e.spiffeId !== undefined ? `${where}.spiffeId: expected spiffe://TRUST_DOMAIN/ns/NS/sa/SA` : `${where}.serviceAccount: expected NAMESPACE/NAME or NAMESPACE/*`);
  }
  const [, ns, name] = sa;
  return {
    matches(s) {
      const p = parseSpiffeId(s);
      return p !== null && p.namespace === ns && (name === '*' || p.serviceAccount === name);
    },
    namespaces,
  };
}

/** Parses the policy's text; throws naming the entry at fault. */
export function parseReadPolicy(text: string, path: string): Entry[] {
  const doc = parse(text) as { readers?: unknown } | null;
  if (doc === null || typeof doc !== 'object' || !Array.isArray(doc.readers)) throw new Error(`${path}: expected a mapping with a "readers" list`);
  return doc.readers.map((r, i) => entry(r, `${path}: readers[${i}]`));
}

/** Every namespace the matching entries grant, or null when none matches. */
function scopeOf(entries: readonly Entry[], spiffeId: string): ReadScope | null {
  const granted = entries.filter((e) => e.matches(spiffeId)).flatMap((e) => e.namespaces);
  if (granted.length === 0) return null;
  return granted.includes('*') ? { all: true } : { all: false, namespaces: new Set(granted) };
}

export function createReadPolicy(path: string, log?: Parameters<typeof watchFile>[2]): ReadPolicy {
  const file = watchFile(path, parseReadPolicy, log);
  return { scopeOf: (spiffeId) => scopeOf(file.current(), spiffeId) };
}
