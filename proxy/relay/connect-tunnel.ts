import type { IncomingMessage } from 'node:http';
import { rawAnswer } from '../errors.js';
import type net from 'node:net';
import type { AuditRecord } from '../../ledger/record.js';
import { parseAuthority } from '../routing/target.js';
import { serviceOfHost } from '../../anomalies/peer-label.js';
import { correlate } from '../correlation/correlate.js';
import { relayBytes } from './byte-relay.js';
import { completeOpaqueRecord } from './opaque-record.js';
import type { Route } from '../routing/route.js';
import type { MeshPeers } from '../mesh/mesh-peers.js';
import type { MeshConnector } from '../mesh/mesh-connect.js';

export interface TunnelDeps {
  service: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Called once when the tunnel closes, with its record. */
  onRecord: (record: AuditRecord) => void;
  /** Upgrades the tunnel's route to mesh mTLS when the mesh directory lists its address. */
  plan: (route: Route | null) => Route | null;
  /** Stamps the peer's proven identity (or none). */
  peers: MeshPeers;
  /** Dials upstreams the mesh directory lists (mesh mTLS). */
  mesh?: MeshConnector;
}

/**
 * Relays a `CONNECT host:port` tunnel byte for byte and records it as an opaque connection:
 * the tunnel's authority, bytes each way, duration, how it ended. Its contents (usually TLS)
 * are not inspected.
 */
export function relayConnect(deps: TunnelDeps, req: IncomingMessage, client: net.Socket, head: Buffer): void {
  const t0 = performance.now();
  const asked = parseAuthority(req.url, 443);
  const route = deps.plan(asked === null ? null : { target: asked, host: asked.host, port: asked.port, path: '' });
  const target = route?.target ?? null;
  const correlation = correlate(req.headers);
  const record: AuditRecord = {
    'audit.kind': 'tunnel',
    'audit.phase': 'final',
    'audit.direction': 'outbound',
    'audit.service': deps.service,
    'peer.service': target === null ? 'unknown' : (serviceOfHost(target.host) ?? 'unknown'),
    'audit.start_unix_ms': Date.now(),
    'network.protocol.name': 'http',
    'http.request.method': 'CONNECT',
    'client.address': client.remoteAddress ?? '',
    'client.port': client.remotePort ?? 0,
    'trace.id': correlation.traceId,
    'audit.request_id': correlation.requestId,
  };
  deps.peers.stamp(record, client, route);
  client.on('error', () => {});
  if (target === null) {
    record['http.response.status_code'] = 400;
    client.end(rawAnswer(400));
    deps.onRecord(completeOpaqueRecord(record, t0, { connected: false, bytesIn: head.length, bytesOut: 0, errorKind: 'rejected', errorMessage: 'CONNECT target is not host:port' }));
    return;
  }
  record['server.address'] = target.host;
  record['server.port'] = target.port;
  const onConnect = (): void => {
    record['http.response.status_code'] = 200;
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
  };
  // A listed address: the tunnel is carried inside mesh mTLS (plan() lists it only when a connector exists).
  const connect = target.mesh === undefined ? undefined : deps.mesh;
  relayBytes(client, target, { connectTimeoutMs: deps.connectTimeoutMs, idleTimeoutMs: deps.idleTimeoutMs, head, onConnect, connect }, (outcome) => {
    if (outcome.rescue !== undefined) {
      record['http.response.status_code'] = outcome.rescue.status;
      client.end(rawAnswer(outcome.rescue.status));
    }
    deps.onRecord(completeOpaqueRecord(record, t0, outcome));
  });
}
