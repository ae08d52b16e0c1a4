import { X509Certificate } from 'node:crypto';
import type { SidecarConfig } from '../config.js';
import type { AuditPipeline } from '../audit/pipeline.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { Logger } from '../../command/log.js';
import type { Shipper } from './shipper.js';
import type { WorkloadCertificate } from '../identity/workload-identity.js';
import type { MeshDirectory } from '../mesh/directory.js';

/** The shipper and, beside it on the same collector and credentials, the sidecar's copy of the mesh directory (proxy/mesh/). */
export type OpenedShipper = Shipper & { readonly directory: MeshDirectory };

/** First reconnect delay ceiling; it doubles per failed attempt up to --ship-backoff-max-ms. */
const BACKOFF_BASE_MS = 200;
/** A segment closes at the first signed link past either size (one commit is never split). */
const SEGMENT_TARGET_BYTES = 512 * 1024;
const SEGMENT_TARGET_LINKS = 512;

/**
 * The sidecar's shipper from its config; null without --collector or without auditing. Loaded
 * only then: a sidecar without a collector does not pay for loading grpc-js at start. With
 * identity, `certificate` (proxy/identity/open-identity.ts) authenticates it to the collector.
 */
export async function openShipper(config: SidecarConfig, audit: AuditPipeline | null, metrics: SidecarMetrics, log: Logger, certificate: WorkloadCertificate | null): Promise<OpenedShipper | null> {
  if (config.collector === undefined || audit === null) return null;
  const { startShipper } = await import('./shipper.js');
  const { ship } = config;
  // The journal keeps the certificate with its key: `verify --ca-file` takes it as endorsing a change to this key.
  if (certificate !== null) await audit.journal.recordCertificate(new X509Certificate(certificate.current().chainPem).raw);
  const tokenFile = config.identityTokenFile ?? config.collectorTokenFile;
  const tokenFlag = config.identityTokenFile !== undefined ? '--identity-token-file' : '--collector-token-file';
  log('info', 'shipper started', { collector: config.collector, sidecar_id: config.sidecarId, window_segments: ship.windowSegments, window_bytes: ship.windowBytes });
  const shipper = startShipper({
    target: config.collector,
    tls: certificate ?? undefined,
    // The projected ServiceAccount token in Kubernetes; the shared token for local runs.
    tokenFile,
    tokenFlag,
    sidecarId: config.sidecarId,
    service: config.service,
    podIp: config.podIp,
    journal: audit.journal,
    metrics: metrics.shipper,
    log,
    timeouts: {
      welcomeMs: ship.welcomeTimeoutMs,
      ackMs: ship.ackTimeoutMs,
      heartbeatMs: config.checkpointIntervalMs,
      keepaliveMs: ship.keepaliveMs,
      keepaliveTimeoutMs: ship.keepaliveTimeoutMs,
    },
    window: { segments: ship.windowSegments, bytes: ship.windowBytes },
    segment: { targetBytes: SEGMENT_TARGET_BYTES, targetLinks: SEGMENT_TARGET_LINKS },
    backoffBaseMs: BACKOFF_BASE_MS,
    backoffMaxMs: ship.backoffMaxMs,
  });
  const { openDirectory } = await import('../mesh/directory-watch.js');
  const directory = openDirectory({ target: config.collector, tls: certificate ?? undefined, tokenFile, tokenFlag, backoffBaseMs: BACKOFF_BASE_MS, backoffMaxMs: ship.backoffMaxMs, registry: metrics.registry, log });
  return {
    directory,
    status: () => shipper.status(),
    // The certificate is the sidecar's (open-identity.ts): it closes it.
    async close() {
      await Promise.all([shipper.close(), directory.close()]);
    },
  };
}
