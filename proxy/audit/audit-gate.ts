import type { AuditRecord } from '../../ledger/record.js';
import type { Logger } from '../../command/log.js';
import { ProxyError } from '../errors.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { AuditPipeline } from './pipeline.js';

/**
 * The audit gate every protocol passes before it forwards (HTTP/1.1, HTTP/2 and gRPC, CONNECT
 * tunnels, opaque TCP): admission under `--on-journal-full reject`, then in strict mode the
 * request record made durable first. One place, so the protocols cannot drift apart.
 */
export interface AuditGate {
  /**
   * False when the journal cannot take another exchange (`--on-journal-full reject`): nothing
   * goes through unrecorded; the refusal is counted, not journalled (the journal is what cannot take it).
   */
  admits(): boolean;
  /** True when beforeForward waits for the journal (strict mode): a caller may pause its stream meanwhile. */
  readonly waits: boolean;
  /**
   * Calls `forward` at once, or in strict mode once the request record is durable; when it cannot
   * be made durable, counts and logs it and calls `refuse` with the error to answer.
   */
  beforeForward(record: AuditRecord, forward: () => void, refuse: (error: ProxyError) => void): void;
}

/** The error a request gets when admits() is false. */
export const JOURNAL_REJECTS = (): ProxyError => new ProxyError('AUDITMESH_JOURNAL_WRITE', 'audit journal full, unwritable or behind (on-journal-full reject)');

/** `audit` is null when auditing is off (--audit-mode off): the gate then lets everything through. */
export function createAuditGate(deps: { audit: AuditPipeline | null; strict: boolean; metrics: SidecarMetrics; log: Logger }): AuditGate {
  const { audit, metrics, log } = deps;
  const waits = audit !== null && deps.strict;
  return {
    waits,
    admits() {
      if (audit === null || audit.admits()) return true;
      metrics.journalRejected.inc();
      return false;
    },
    beforeForward(record, forward, refuse) {
      if (!waits) return forward();
      audit!.recordDurable({ ...record, 'audit.phase': 'request' }).then(forward, (err: Error) => {
        log('error', 'strict mode: request record not durable, refusing request', { error: err.message });
        metrics.journalUnrecorded.inc({ reason: 'strict_refused' });
        refuse(new ProxyError('AUDITMESH_JOURNAL_WRITE', 'audit journal unavailable (strict mode)', { cause: err }));
      });
    },
  };
}
