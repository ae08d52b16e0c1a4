import type { SidecarConfig } from '../config.js';
import type { AuditPipeline } from '../audit/pipeline.js';
import type { Logger } from '../../command/log.js';
import type { WorkloadCertificate } from './workload-identity.js';

/**
 * The sidecar's workload certificate, obtained in one place for everything that authenticates
 * with it (the shipper to the collector, sidecar-to-sidecar mTLS): with --collector,
 * --identity-token-file and --ca-file, its journal key certified by the mesh CA before the sidecar
 * serves (so before /readyz); null otherwise. Loaded only then: grpc-js is not paid for without.
 */
export async function openWorkloadCertificate(config: SidecarConfig, audit: AuditPipeline | null, log: Logger): Promise<WorkloadCertificate | null> {
  if (config.collector === undefined || audit === null || config.caFile === undefined || config.identityTokenFile === undefined) return null;
  const { obtainWorkloadCertificate } = await import('./workload-identity.js');
  return obtainWorkloadCertificate({ target: config.collector, tokenFile: config.identityTokenFile, caFile: config.caFile, privateKey: audit.journal.signer.privateKey, log });
}
