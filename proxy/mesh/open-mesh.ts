import type net from 'node:net';
import type { KeyObject } from 'node:crypto';
import type { AuditRecord } from '../../ledger/record.js';
import type { ExchangeSink } from '../exchange-sink.js';
import { ProxyError, rescue } from '../errors.js';
import type { Route } from '../routing/route.js';
import { EMPTY_DIRECTORY, type MeshDirectory } from './directory.js';
import { createMeshAcceptor } from './mesh-accept.js';
import { createMeshConnector, type MeshConnector } from './mesh-connect.js';
import { meshCredentials, type WorkloadCertificateSource } from './mesh-credentials.js';
import { createMeshPeers, type InboundPolicy, type MeshPeers } from './mesh-peers.js';
import { underlyingSocket } from './peer-socket.js';

/** Sidecar-to-sidecar mTLS as the listeners and forwarders of one sidecar use it. */
export interface Mesh {
  readonly directory: MeshDirectory;
  /** Dials a listed upstream over mesh mTLS; undefined without a workload certificate. */
  readonly connector: MeshConnector | undefined;
  /** An outbound route as routed, upgraded to mesh mTLS when the directory lists its address. */
  plan(route: Route | null): Route | null;
  readonly inboundPeers: MeshPeers;
  readonly outboundPeers: MeshPeers;
  /** The inbound capture listener's handler for TLS offering `auditmesh/1`. */
  accept(socket: net.Socket, accepted: (decrypted: net.Socket) => void): void;
  /** True for a connection from an address the directory lists (capture-listener.ts, opaque ports). */
  meshCaller(socket: net.Socket): boolean;
}

export interface MeshOptions {
  directory: MeshDirectory | undefined;
  /** The workload certificate and its key (the journal's signing key); null without identity. */
  certificate: WorkloadCertificateSource | null;
  privateKey: KeyObject | undefined;
  inboundPolicy: InboundPolicy;
  connectTimeoutMs: number;
  service: string;
  onExchange: ExchangeSink;
}

export function openMesh(opts: MeshOptions): Mesh {
  const directory = opts.directory ?? EMPTY_DIRECTORY;
  const credentials = opts.certificate === null || opts.privateKey === undefined ? null : meshCredentials(opts.certificate, opts.privateKey);
  const connector = credentials === null ? undefined : createMeshConnector(credentials, directory, opts.connectTimeoutMs);
  const inboundPeers = createMeshPeers('inbound', directory, opts.inboundPolicy);
  // A peer that did not prove itself is recorded (inbound, as TLS) and counted like any exchange.
  const refused = (socket: net.Socket, error: ProxyError): void => {
    const raw = underlyingSocket(socket);
    const record: AuditRecord = {
      'audit.kind': 'tcp',
      'audit.phase': 'final',
      'audit.direction': 'inbound',
      'audit.service': opts.service,
      'peer.service': 'unknown',
      'audit.start_unix_ms': Date.now(),
      'network.protocol.name': 'tls',
      'client.address': raw.remoteAddress ?? '',
      'client.port': raw.remotePort ?? 0,
      'audit.peer.verified': false,
      'audit.duration_ms': 0,
      'audit.bytes_in': 0,
      'audit.bytes_out': 0,
      'error.type': rescue(error).kind,
      'audit.error_message': error.message,
    };
    opts.onExchange('tcp', record, 0, 0);
  };
  const acceptor = credentials === null ? null : createMeshAcceptor({ credentials, handshakeTimeoutMs: opts.connectTimeoutMs, failed: refused });
  return {
    directory,
    connector,
    plan(route) {
      if (route === null || connector === undefined) return route;
      const peer = directory.lookup(route.target.host);
      if (peer !== undefined) return { ...route, target: { ...route.target, mesh: peer } };
      return directory.fresh() ? route : { ...route, directoryStale: true };
    },
    inboundPeers,
    outboundPeers: createMeshPeers('outbound', directory),
    accept(socket, accepted) {
      // Without a certificate there is no mTLS to end: the caller is told so by a closed
      // connection, and its TLS never reaches the app as bytes it cannot read.
      if (acceptor === null) {
        socket.destroy();
        return refused(socket, new ProxyError('AUDITMESH_PEER_HANDSHAKE', 'mesh mTLS offered, but this sidecar has no workload certificate'));
      }
      acceptor(socket, accepted);
    },
    meshCaller: (socket) => directory.lookup((socket.remoteAddress ?? '').replace(/^::ffff:/, '')) !== undefined,
  };
}
