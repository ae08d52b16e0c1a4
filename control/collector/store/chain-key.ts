/**
 * The string a sidecar's chain is stored under. A sidecar id names a workload; with a projected
 * ServiceAccount token the pod's uid names its incarnation (a StatefulSet pod recreated under the
 * same name is a new incarnation, with a fresh journal and key), and each incarnation has a chain
 * of its own: `SIDECAR_ID@POD_UID`. Without an incarnation (a shared token, --insecure) the key is
 * the sidecar id alone, as before incarnations. Sidecar ids cannot hold `@` (ingest refuses one),
 * so two chains never share a key. A chain's state (SidecarState) names its sidecar id and
 * incarnation; readers take them from there, never by splitting a key.
 */

export const INCARNATION_SEPARATOR = '@';

/** The chain key of sidecar `sidecarId`'s incarnation `incarnation` ('' for none). */
export function chainKey(sidecarId: string, incarnation: string): string {
  return incarnation === '' ? sidecarId : `${sidecarId}${INCARNATION_SEPARATOR}${incarnation}`;
}

/** The chain key of a stored sidecar state. */
export function chainKeyOf(state: { id: string; incarnation?: string }): string {
  return chainKey(state.id, state.incarnation ?? '');
}
