import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { SidecarConfig } from './config.js';
import { createSidecarMetrics, type SidecarMetrics } from './metrics/metrics.js';
import { createAdminServer } from './metrics/admin-server.js';
import type { AuditRecord } from './audit/record.js';
import type { AuditPipeline } from './audit/pipeline.js';
import { openAudit } from './audit/open-audit.js';
import { createRedactor } from './audit/redact.js';
import { createPeerLabels } from './audit/peer-label.js';
import { createHttpProxyForwarder } from './http1/http-proxy-forwarder.js';
import { createExchangeHandler } from './http1/exchange.js';
import { routeOutbound } from './http1/target.js';
import { createHttpListener, DEFAULT_LISTENER_TIMEOUTS } from './capture/http-listener.js';
import { relayConnect } from './capture/connect-tunnel.js';
import { loadOrCreateSecret } from './keys.js';
import { createLogger, type Logger } from './log.js';

/** A running sidecar: its bound ports, its audit pipeline and metrics, and a way to stop it. */
export interface Sidecar {
  readonly config: SidecarConfig;
  readonly ports: { inbound: number | undefined; outbound: number; admin: number };
  readonly audit: AuditPipeline | null;
  readonly metrics: SidecarMetrics;
  close(): Promise<void>;
}

/**
 * Wires one sidecar, top to bottom: keys → audit pipeline → forwarder → inbound and outbound
 * listeners → admin server. Nothing here reads process.env or installs signal handlers.
 */
export async function startSidecar(config: SidecarConfig, log: Logger = createLogger(config.logLevel)): Promise<Sidecar> {
  const metrics = createSidecarMetrics();
  const redactor = createRedactor({ key: await loadOrCreateSecret(config.redactionKeyFile), secretHeaders: config.secretHeaders, secretParams: config.secretParams });
  const audit = await openAudit(config, metrics, log);
  const forwarder = createHttpProxyForwarder(config);
  const peerLabel = createPeerLabels();
  const listenerTimeouts = { ...DEFAULT_LISTENER_TIMEOUTS, idleTimeoutMs: config.idleTimeoutMs };
  const common = { service: config.service, mode: config.auditMode, forwarder, audit, redactor, metrics, peerLabel, log };
  const servers: Server[] = [];

  let inbound: Server | undefined;
  if (config.appPort !== undefined) {
    const app = { host: config.appHost, port: config.appPort };
    const handler = createExchangeHandler({ ...common, direction: 'inbound', route: (req) => ({ target: app, host: config.appHost, path: req.url ?? '/' }) });
    inbound = createHttpListener(handler, listenerTimeouts);
    servers.push(inbound);
  }
  const outboundHandler = createExchangeHandler({ ...common, direction: 'outbound', route: (req) => routeOutbound(req, config.resolve) });
  const tunnelDeps = {
    service: config.service,
    connectTimeoutMs: config.connectTimeoutMs,
    idleTimeoutMs: config.idleTimeoutMs,
    onRecord: (record: AuditRecord) => audit?.record(record),
  };
  const outbound = createHttpListener(outboundHandler, listenerTimeouts, (req, socket, head) => relayConnect(tunnelDeps, req, socket, head));
  servers.push(outbound);
  const admin = createAdminServer({
    registry: metrics.registry,
    ready: () => (audit === null ? { ok: true } : audit.readiness()),
    subscribe: audit === null ? null : (listener) => audit.subscribe(listener),
  });
  servers.push(admin);

  const listen = (server: Server, port: number): Promise<number> =>
    new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, config.bind, () => {
        server.off('error', reject);
        resolve((server.address() as AddressInfo).port);
      });
    });
  const ports = {
    inbound: inbound === undefined ? undefined : await listen(inbound, config.inboundPort),
    outbound: await listen(outbound, config.outboundPort),
    admin: await listen(admin, config.adminPort),
  };
  log('info', 'sidecar listening', { service: config.service, ...ports, app_port: config.appPort, audit_mode: config.auditMode, journal: config.journalDir });

  let closing: Promise<void> | undefined;
  return {
    config,
    ports,
    audit,
    metrics,
    close() {
      closing ??= (async () => {
        await Promise.all(
          servers.map(
            (s) =>
              new Promise<void>((resolve) => {
                s.close(() => resolve());
                s.closeAllConnections();
              }),
          ),
        );
        forwarder.close();
        await audit?.close();
      })();
      return closing;
    },
  };
}
