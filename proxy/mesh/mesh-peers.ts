import type net from 'node:net';
import type { AuditRecord, Direction } from '../../ledger/record.js';
import { parseSpiffeId } from '../../ledger/spiffe-id.js';
import { ProxyError } from '../errors.js';
import type { Route } from '../routing/route.js';
import type { MeshDirectory } from './directory.js';
import { underlyingSocket, verifiedPeerOf } from './peer-socket.js';

/** `--inbound-policy`: which plaintext callers an inbound listener refuses. */
export type InboundPolicy = 'permissive' | 'verified' | 'mesh-verified';

/**
 * Who the other end of an exchange is, as proven or not, for one listener direction: every
 * protocol path stamps its records through `stamp` and asks `refuse` before forwarding inbound.
 */
export interface MeshPeers {
  /** Fills `peer.identity` and `audit.peer.verified` (and `peer.service` from a proof). */
  stamp(record: AuditRecord, socket: net.Socket | undefined, route: Route | null): void;
  /** Inbound: the refusal of a caller `--inbound-policy` does not admit; null when admitted. */
  refuse(socket: net.Socket | undefined): ProxyError | null;
}

export function createMeshPeers(direction: Direction, directory: MeshDirectory, policy: InboundPolicy = 'permissive'): MeshPeers {
  return direction === 'outbound' ? { stamp: (record, _socket, route) => stampOutbound(record, route), refuse: () => null } : { stamp: (record, socket) => stampInbound(record, socket, directory), refuse: (socket) => refuseInbound(socket, policy, directory) };
}

/** Outbound: proven when the route is over mesh mTLS (a failed handshake is settled later, mesh-outcome.ts). */
function stampOutbound(record: AuditRecord, route: Route | null): void {
  const mesh = route?.target.mesh;
  if (mesh === undefined) {
    record['audit.peer.verified'] = false;
    if (route?.directoryStale === true) record['audit.peer.directory_stale'] = true;
    return;
  }
  record['peer.identity'] = mesh.identity;
  record['audit.peer.verified'] = true;
  if (record['peer.service'] === 'unknown' && mesh.service !== '') record['peer.service'] = mesh.service;
}

/**
 * Inbound: the caller's SPIFFE ID when it came over mesh mTLS. `peer.service` then comes from the
 * proof (the service the directory lists for that identity at the caller's address, else its
 * service account), not from `x-auditmesh-client`, which stays in `audit.claimed.client`.
 */
function stampInbound(record: AuditRecord, socket: net.Socket | undefined, directory: MeshDirectory): void {
  const identity = verifiedPeerOf(socket);
  record['audit.peer.verified'] = identity !== undefined;
  if (identity === undefined) return;
  record['peer.identity'] = identity;
  const listed = directory.lookup(remoteIp(socket));
  const service = listed?.identity === identity && listed.service !== '' ? listed.service : parseSpiffeId(identity)?.serviceAccount;
  if (service !== undefined) record['peer.service'] = service;
}

function refuseInbound(socket: net.Socket | undefined, policy: InboundPolicy, directory: MeshDirectory): ProxyError | null {
  if (policy === 'permissive' || verifiedPeerOf(socket) !== undefined) return null;
  if (policy === 'verified') return new ProxyError('AUDITMESH_UNVERIFIED_PEER', 'plaintext caller refused: --inbound-policy verified admits only callers proven over mesh mTLS');
  const ip = remoteIp(socket);
  if (directory.lookup(ip) === undefined) return null;
  return new ProxyError('AUDITMESH_UNVERIFIED_PEER', `plaintext caller ${ip} refused: the mesh directory lists it as meshed (--inbound-policy mesh-verified)`);
}

function remoteIp(socket: net.Socket | undefined): string {
  const address = socket === undefined ? undefined : underlyingSocket(socket).remoteAddress;
  return (address ?? '').replace(/^::ffff:/, '');
}
