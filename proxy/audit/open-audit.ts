import type { SidecarConfig } from '../config.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { Logger } from '../../command/log.js';
import { keyFromFlag, loadOrCreateSigningKey, loadPreviousSigningKey, retirePreviousSigningKey } from '../../ledger/keys.js';
import { createAuditPipeline, type AuditPipeline } from './pipeline.js';

/**
 * The sidecar's audit pipeline from its config: signing key (created at first start, apart from
 * the journal), journal bound, policy, retention and checkpoints. null when auditing is off.
 */
export async function openAudit(config: SidecarConfig, metrics: SidecarMetrics, log: Logger): Promise<AuditPipeline | null> {
  if (config.auditMode === 'off') return null;
  const signingKey = await keyFromFlag('--key', config.keyFile, loadOrCreateSigningKey);
  if (signingKey.looseMode) log('warn', 'the signing key file is readable or writable by group or others: chmod 600 it', { key_file: config.keyFile });
  const previousSigningKey = await keyFromFlag('--key', `${config.keyFile}.previous`, () => loadPreviousSigningKey(config.keyFile));
  const onEpochLinked = (endorsedBy: string | undefined): void => {
    if (endorsedBy === undefined || endorsedBy !== previousSigningKey?.keyId) return;
    retirePreviousSigningKey(config.keyFile).then(
      () => log('info', 'key rotated: the previous key endorsed the new one and its file was removed', { key: signingKey.keyId, previous_key: endorsedBy }),
      (err: unknown) => log('warn', 'key rotated, but the previous key file could not be removed: remove it', { key_file: `${config.keyFile}.previous`, err: (err as Error).message }),
    );
  };
  const audit = await createAuditPipeline({
    journalDir: config.journalDir,
    signingKey,
    previousSigningKey,
    onEpochLinked,
    checkpointIntervalMs: config.checkpointIntervalMs,
    maxBatchRecords: config.batchMaxRecords,
    journalLimitBytes: config.journalLimitBytes,
    onJournalFull: config.onJournalFull,
    retentionMs: config.journalRetentionMs === 0 ? undefined : config.journalRetentionMs,
    pruneOnlyShipped: config.collector !== undefined,
    service: config.service,
    sealCrashFile: config.testSealCrashFile,
    metrics,
    log: ({ level, msg, ...fields }) => log((level as 'info' | 'warn' | 'error' | undefined) ?? 'info', String(msg ?? 'journal'), fields),
  });
  log('info', 'audit journal open', { journal: config.journalDir, key: signingKey.keyId, limit_bytes: config.journalLimitBytes, on_journal_full: config.onJournalFull, retention_ms: config.journalRetentionMs });
  return audit;
}
