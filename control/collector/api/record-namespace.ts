import { parseSpiffeId } from '../../../ledger/spiffe-id.js';

/**
 * Which namespace a record belongs to, for scoped reads: the namespace of the writer's proven
 * identity (`audit.identity`, a SPIFFE ID the collector stamps), else the namespace part of its
 * sidecar id when that is `NS/POD` (bound to the pod's token since issue 22), else none: such a
 * record is visible to readers of every namespace (`*`) only.
 */

/** The namespace of a sidecar id `NS/POD`, or null for any other shape. */
export function sidecarNamespace(sidecarId: string): string | null {
  const m = /^([^/]+)\/[^/]+$/.exec(sidecarId);
  return m === null ? null : m[1];
}

export function recordNamespace(rec: { 'audit.identity'?: unknown; 'audit.sidecar_id': string }): string | null {
  const identity = rec['audit.identity'];
  if (typeof identity === 'string') {
    const parsed = parseSpiffeId(identity);
    if (parsed !== null) return parsed.namespace;
  }
  return sidecarNamespace(rec['audit.sidecar_id']);
}

/** What a reader may read: every namespace, or these. */
export type ReadScope = { all: true } | { all: false; namespaces: ReadonlySet<string> };

export const EVERY_NAMESPACE: ReadScope = Object.freeze({ all: true });

/** Whether a reader of `scope` may see what belongs to `namespace` (null: no namespace, `*` only). */
export function inScope(scope: ReadScope, namespace: string | null): boolean {
  return scope.all || (namespace !== null && scope.namespaces.has(namespace));
}
