import type { AuditRecord, ErrorKind } from '../../ledger/record.js';
import { rescueFor } from '../errors.js';

/** The reasons auditmesh_mesh_tls_failures_total counts, a closed set. */
export type MeshFailureReason = 'peer_untrusted' | 'peer_expired' | 'peer_identity_mismatch' | 'peer_handshake' | 'peer_reset' | 'unverified_peer' | 'directory_stale';

const HANDSHAKE_FAILURES: ReadonlySet<ErrorKind> = new Set(['peer_untrusted', 'peer_expired', 'peer_identity_mismatch', 'peer_handshake']);
/** Failures before any handshake: nothing was proven either. */
const NOT_CONNECTED: ReadonlySet<ErrorKind> = new Set(['refused', 'unresolved']);

/**
 * Settles a finished record's mesh fields from how the exchange ended, whatever its protocol
 * (the exchange sink calls it once per record): a peer that failed its handshake proved nothing
 * (`audit.peer.verified` false, no `peer.identity`), and a reset of an mTLS connection to a peer
 * sidecar is `peer_reset`. Returns what to count, if anything.
 */
export function settleMeshOutcome(record: AuditRecord): MeshFailureReason | undefined {
  const error = record['error.type'];
  if (record['audit.peer.verified'] === true && error !== undefined) {
    if (HANDSHAKE_FAILURES.has(error) || NOT_CONNECTED.has(error)) {
      record['audit.peer.verified'] = false;
      delete record['peer.identity'];
    } else if (error === 'reset' && record['audit.direction'] === 'outbound') {
      record['error.type'] = 'peer_reset';
      record['audit.error_message'] = rescueFor('AUDITMESH_PEER_RESET').message;
    }
  }
  const settled = record['error.type'];
  if (settled !== undefined && (HANDSHAKE_FAILURES.has(settled) || settled === 'peer_reset' || settled === 'unverified_peer')) return settled as MeshFailureReason;
  return record['audit.peer.directory_stale'] === true ? 'directory_stale' : undefined;
}
