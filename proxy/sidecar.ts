import { createUpstreamLimit } from './http1/upstream-limit.js';
import type net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { SidecarConfig } from './config.js';
import type { AuditRecord, Direction } from '../ledger/record.js';
import { createSidecarMetrics, type SidecarMetrics } from './metrics/metrics.js';
import { createExchangeSink } from './exchange-sink.js';
import { countTcpConnections, sessionClosed, sessionOpened } from './metrics/observe-connections.js';
import { createAlerting } from './alerts/alerting.js';
import { createAdminServer } from '../command/admin-server.js';
import type { AuditPipeline } from './audit/pipeline.js';
import { openAudit } from './audit/open-audit.js';
import { createAuditGate } from './audit/audit-gate.js';
import { rawAnswer } from './errors.js';
import { createRedactor } from './audit/redact.js';
import { createPeerLabels } from '../anomalies/peer-label.js';
import { createHttpProxyForwarder } from './http1/http-proxy-forwarder.js';
import { createUndiciForwarder } from './http1/undici-forwarder.js';
import { createExchangeHandler } from './http1/exchange.js';
import { routeByAuthority, routeInbound, routeOutbound } from './routing/target.js';
import type { Route } from './routing/route.js';
import { assertOriginalDstAvailable, redirectedDestination } from './capture/original-dst.js';
import { createHttpListener, DEFAULT_LISTENER_TIMEOUTS } from './http1/http-listener.js';
import { createCaptureListener } from './capture/capture-listener.js';
import { relayConnect } from './relay/connect-tunnel.js';
import { relayOpaque } from './relay/tcp-relay.js';
import { createH2Listener } from './h2/h2-listener.js';
import type { H2Deps } from './h2/h2-exchange.js';
import { createSessionPool } from './h2/session-pool.js';
import { keyFromFlag, loadOrCreateSecret } from '../ledger/keys.js';
import { openShipper } from './ship/open-shipper.js';
import { openWorkloadCertificate } from './identity/open-identity.js';
import { openMesh } from './mesh/open-mesh.js';
import type { Shipper } from './ship/shipper.js';
import { EMPTY_DIRECTORY, type MeshDirectory } from './mesh/directory.js';
import { createLogger, type Logger } from '../command/log.js';
import { logIfUnpatched } from '../ledger/lmdb-build.js';

/** Where the outbound listener listens: only this pod's own processes may use it. */
const OUTBOUND_BIND = '127.0.0.1';

/** A running sidecar: its bound ports, its audit pipeline and metrics, and a way to stop it. */
export interface Sidecar {
  readonly config: SidecarConfig;
  readonly ports: { inbound: number | undefined; outbound: number; admin: number };
  readonly audit: AuditPipeline | null;
  readonly metrics: SidecarMetrics;
  /** Ships the journal to --collector; null without one. */
  readonly shipper: Shipper | null;
  /** The mesh directory watched from --collector (proxy/mesh/directory-watch.ts); EMPTY_DIRECTORY without a collector or without auditing. */
  readonly directory: MeshDirectory;
  close(): Promise<void>;
}

/**
 * Wires one sidecar, top to bottom: keys → audit pipeline → workload certificate → shipper → mesh
 * mTLS → forwarders → capture listeners (protocol detection → HTTP/1.1 | HTTP/2 and gRPC | opaque
 * TCP; inbound, mesh mTLS terminated first) → admin server. Nothing here reads process.env or
 * installs signal handlers.
 */
export async function startSidecar(config: SidecarConfig, log: Logger = createLogger(config.logLevel)): Promise<Sidecar> {
  // Redirected traffic is routed by its original destination: fail at boot, not on the first connection.
  assertOriginalDstAvailable();
  const metrics = createSidecarMetrics({ perRequest: config.requestMetrics, service: config.service });
  const redactor = createRedactor({ key: await keyFromFlag('--redaction-key', config.redactionKeyFile, (path) => loadOrCreateSecret(path)), secretHeaders: config.secretHeaders, secretParams: config.secretParams, secretPaths: config.secretPaths });
  const audit = await openAudit(config, metrics, log);
  // One certificate for the collector and for peer sidecars; each new connection takes its current one.
  const certificate = await openWorkloadCertificate(config, audit, log);
  const shipper = await openShipper(config, audit, metrics, log, certificate);
  const peerLabel = createPeerLabels();
  const alerting = config.alerts.intervalMs > 0 ? createAlerting({ service: config.service, options: config.alerts, metrics, peerLabel, audit, log }) : null;
  const onExchange = createExchangeSink({ metrics, peerLabel, alerting, audit });
  // Which destinations are meshed: the collector's directory, watched beside the shipper (a fixed one in tests).
  const directory = config.directory ?? shipper?.directory ?? EMPTY_DIRECTORY;
  const mesh = openMesh({
    directory,
    certificate: config.workloadCertificate ?? certificate,
    privateKey: audit?.journal.signer.privateKey,
    inboundPolicy: config.inboundPolicy,
    connectTimeoutMs: config.connectTimeoutMs,
    service: config.service,
    onExchange,
  });
  const forwarder = config.forwardEngine === 'undici' ? createUndiciForwarder(config, createHttpProxyForwarder(config, undefined, mesh.connector), mesh.connector) : createHttpProxyForwarder(config, undefined, mesh.connector);
  const upstreamLimit = createUpstreamLimit(config.maxSocketsPerUpstream, config.maxPendingPerUpstream);
  const sessions = createSessionPool({ connectTimeoutMs: config.connectTimeoutMs, idleTimeoutMs: config.idleTimeoutMs, mesh: mesh.connector });
  const listenerTimeouts = { ...DEFAULT_LISTENER_TIMEOUTS, idleTimeoutMs: config.idleTimeoutMs, headersTimeoutMs: config.headersTimeoutMs, maxHeaderBytes: config.maxHeaderBytes };
  const gate = createAuditGate({ audit, strict: config.auditMode === 'strict', metrics, log });
  const common = { service: config.service, mode: config.auditMode, audit, gate, redactor, metrics, onExchange, log };
  // Opaque connections (tunnels, TCP) are counted when they open and recorded when they close.
  const opened = (direction: Direction, kind: 'tunnel' | 'tcp'): void => sessionOpened(metrics, direction, kind);
  const recordOpaque = (kind: 'tunnel' | 'tcp') => (record: AuditRecord) => {
    sessionClosed(metrics, record['audit.direction'], kind);
    onExchange(kind, record, record['audit.bytes_in'] ?? 0, record['audit.bytes_out'] ?? 0);
  };
  const peersOf = (direction: Direction) => (direction === 'inbound' ? mesh.inboundPeers : mesh.outboundPeers);
  const opaque = (direction: Direction, target: (socket: net.Socket, sni: string | null) => Route | null) => (socket: net.Socket, sni: string | null) => {
    // --on-journal-full reject holds for connections too: refused (closed), counted, not journalled.
    if (!gate.admits()) return void socket.destroy();
    opened(direction, 'tcp');
    relayOpaque({ direction, service: config.service, connectTimeoutMs: config.connectTimeoutMs, idleTimeoutMs: config.idleTimeoutMs, target, onRecord: recordOpaque('tcp'), peers: peersOf(direction), mesh: mesh.connector }, socket, sni);
  };
  const h2 = (direction: Direction, route: H2Deps['route']) =>
    createH2Listener({ ...common, direction, route, sessions, peers: peersOf(direction), responseTimeoutMs: config.responseTimeoutMs, interimRecordMs: config.interimRecordMs, maxGrpcMessageBytes: config.maxGrpcMessageBytes });
  const capture = { detectTimeoutMs: config.detectTimeoutMs };
  const servers: net.Server[] = [];
  /** The ports this sidecar listens on, once bound: never a destination for redirected inbound traffic. */
  const ownPorts = new Set<number>();

  let inbound: net.Server | undefined;
  if (config.appPort !== undefined) {
    const app = { host: config.appHost, port: config.appPort };
    const toApp = (path: string, socket: net.Socket | undefined): Route | null => routeInbound(path, app, ownPorts, socket === undefined ? null : redirectedDestination(socket));
    const handler = createExchangeHandler({ ...common, forwarder, upstreamLimit, peers: mesh.inboundPeers, maxRequestBodyBytes: config.maxRequestBodyBytes, direction: 'inbound', route: (req) => toApp(req.url ?? '/', req.socket) });
    inbound = createCaptureListener(
      { http1: createHttpListener(handler, listenerTimeouts), h2: h2('inbound', (_authority, path, socket) => toApp(path, socket)), opaque: opaque('inbound', (socket) => toApp('', socket)), mesh: mesh.accept },
      { ...capture, isOpaque: (socket) => config.opaquePorts.has(redirectedDestination(socket)?.port ?? config.appPort!), meshCaller: mesh.meshCaller },
    );
    countTcpConnections(metrics, inbound, 'inbound');
    servers.push(inbound);
  }
  // Outbound routes go to mesh mTLS where the mesh directory lists the destination address.
  const outboundHandler = createExchangeHandler({ ...common, forwarder, upstreamLimit, peers: mesh.outboundPeers, maxRequestBodyBytes: config.maxRequestBodyBytes, direction: 'outbound', route: (req) => mesh.plan(routeOutbound(req, config.resolve, redirectedDestination(req.socket))) });
  const tunnelDeps = { service: config.service, connectTimeoutMs: config.connectTimeoutMs, idleTimeoutMs: config.idleTimeoutMs, onRecord: recordOpaque('tunnel'), plan: mesh.plan, peers: mesh.outboundPeers, mesh: mesh.connector };
  const outbound = createCaptureListener(
    {
      http1: createHttpListener(outboundHandler, listenerTimeouts, (req, socket, head) => {
        if (!gate.admits()) return void socket.end(rawAnswer(503, 'AUDITMESH_JOURNAL_WRITE'));
        opened('outbound', 'tunnel');
        relayConnect(tunnelDeps, req, socket, head);
      }),
      h2: h2('outbound', (authority, path, socket) => mesh.plan(routeByAuthority(authority, path, config.resolve, 80, socket === undefined ? null : redirectedDestination(socket)))),
      // A redirected connection goes to its original destination; otherwise a TLS one can still
      // be routed by its SNI. The SNI, when there is one, names the peer.
      opaque: opaque('outbound', (socket, sni) => mesh.plan(routeByAuthority(sni ?? undefined, '', config.resolve, 443, redirectedDestination(socket)))),
    },
    { ...capture, isOpaque: (socket) => config.opaquePorts.has(redirectedDestination(socket)?.port ?? 0) },
  );
  countTcpConnections(metrics, outbound, 'outbound');
  servers.push(outbound);
  const admin = createAdminServer({
    registry: metrics.registry,
    ready: () => readiness(audit, shipper),
    subscribe: audit === null ? null : (listener) => audit.subscribe(listener),
    tail: { maxSubscribers: config.maxTailSubscribers },
  });
  servers.push(admin);

  const listen = (server: net.Server, port: number, host = config.bind): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  const ports = {
    inbound: inbound === undefined ? undefined : await listen(inbound, config.inboundPort),
    // Loopback only, whatever --bind says: iptables REDIRECT from OUTPUT delivers to 127.0.0.1, and
    // on the pod IP this port would be an open proxy speaking in this pod's name.
    outbound: await listen(outbound, config.outboundPort, OUTBOUND_BIND),
    admin: await listen(admin, config.adminPort),
  };
  for (const p of Object.values(ports)) if (p !== undefined) ownPorts.add(p);
  log('info', 'sidecar listening', { service: config.service, ...ports, app_port: config.appPort, audit_mode: config.auditMode, journal: config.journalDir });
  if (config.auditMode !== 'off') logIfUnpatched(log);

  const connections = new Set<net.Socket>();
  for (const s of servers) s.on('connection', (socket: net.Socket) => (connections.add(socket), socket.once('close', () => connections.delete(socket))));
  let closing: Promise<void> | undefined;
  return {
    config,
    ports,
    audit,
    metrics,
    shipper,
    directory,
    close() {
      closing ??= (async () => {
        const closed = Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
        for (const socket of connections) socket.destroy();
        await closed;
        alerting?.close();
        sessions.close();
        forwarder.close();
        // The journal's last commits go out with the audit's close; the shipper stops before it.
        await shipper?.close();
        certificate?.close();
        await audit?.close();
      })();
      return closing;
    },
  };
}

/**
 * /readyz: the journal decides (full-policy.ts). A collector that is away does not make the
 * sidecar unready, the journal is the buffer, but the body says so.
 */
function readiness(audit: AuditPipeline | null, shipper: Shipper | null): { ok: boolean; reason?: string } {
  const journal = audit === null ? { ok: true } : audit.readiness();
  const shipping = shipper?.status();
  if (shipping === undefined || shipping.connected) return journal;
  return { ok: journal.ok, reason: journal.reason === undefined ? shipping.detail : `${journal.reason}; ${shipping.detail}` };
}
