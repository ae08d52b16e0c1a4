import type net from 'node:net';
import type { AuditRecord, Direction } from '../../ledger/record.js';
import type { Route } from '../routing/route.js';
import { peerHost } from '../routing/target.js';
import { serviceOfHost } from '../../anomalies/peer-label.js';
import { relayBytes } from './byte-relay.js';
import { completeOpaqueRecord } from './opaque-record.js';
import type { MeshPeers } from '../mesh/mesh-peers.js';
import type { MeshConnector } from '../mesh/mesh-connect.js';
import { rescue } from '../errors.js';

export interface OpaqueDeps {
  direction: Direction;
  service: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Where an opaque connection goes: the app (inbound), the original destination (outbound). */
  target: (socket: net.Socket, sni: string | null) => Route | null;
  onRecord: (record: AuditRecord) => void;
  /** Stamps the peer's proven identity (or none) and refuses callers --inbound-policy does not admit. */
  peers: MeshPeers;
  /** Dials upstreams the mesh directory lists (mesh mTLS). */
  mesh?: MeshConnector;
}

/** Relays an opaque TCP (or TLS) connection and records peer, bytes each way, duration and SNI. */
export function relayOpaque(deps: OpaqueDeps, socket: net.Socket, sni: string | null): void {
  const t0 = performance.now();
  const routed = deps.target(socket, sni);
  const record: AuditRecord = {
    'audit.kind': 'tcp',
    'audit.phase': 'final',
    'audit.direction': deps.direction,
    'audit.service': deps.service,
    'peer.service': deps.direction === 'outbound' ? (serviceOfHost(peerHost(routed) ?? '') ?? 'unknown') : 'unknown',
    'audit.start_unix_ms': Date.now(),
    'network.protocol.name': sni !== null ? 'tls' : 'tcp',
    'client.address': socket.remoteAddress ?? '',
    'client.port': socket.remotePort ?? 0,
  };
  if (sni !== null) record['tls.client.server_name'] = sni;
  deps.peers.stamp(record, socket, routed);
  const refusal = deps.peers.refuse(socket);
  if (refusal !== null) {
    // Closed without a byte to the app: TCP has no way to say why.
    socket.destroy();
    const r = rescue(refusal);
    deps.onRecord(completeOpaqueRecord(record, t0, { connected: false, bytesIn: 0, bytesOut: 0, errorKind: r.kind, errorMessage: refusal.message }));
    return;
  }
  if (routed === null) {
    socket.destroy();
    deps.onRecord(completeOpaqueRecord(record, t0, { connected: false, bytesIn: 0, bytesOut: 0, errorKind: 'unresolved', errorMessage: 'no destination known for this connection' }));
    return;
  }
  record['server.address'] = routed.host;
  record['server.port'] = routed.port;
  if (routed.claimed !== undefined) record['audit.claimed.server'] = routed.claimed.authority;
  const connect = routed.target.mesh === undefined ? undefined : deps.mesh;
  if (routed.target.mesh !== undefined && connect === undefined) {
    // Listed as meshed but no certificate to call it with: failed, never sent in plaintext.
    socket.destroy();
    deps.onRecord(completeOpaqueRecord(record, t0, { connected: false, bytesIn: 0, bytesOut: 0, errorKind: 'peer_handshake', errorMessage: 'this sidecar has no workload certificate for a meshed upstream' }));
    return;
  }
  relayBytes(socket, routed.target, { connectTimeoutMs: deps.connectTimeoutMs, idleTimeoutMs: deps.idleTimeoutMs, connect }, (outcome) => {
    if (outcome.rescue !== undefined) socket.destroy();
    deps.onRecord(completeOpaqueRecord(record, t0, outcome));
  });
}
