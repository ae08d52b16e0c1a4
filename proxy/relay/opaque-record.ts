import type { AuditRecord } from '../../ledger/record.js';
import type { RelayOutcome } from './byte-relay.js';
import { roundMs } from '../audit/http-record.js';


/** Fills an opaque connection's record (tunnel or TCP) from how its relay ended. */
export function completeOpaqueRecord(record: AuditRecord, t0: number, outcome: RelayOutcome): AuditRecord {
  record['audit.duration_ms'] = roundMs(performance.now() - t0);
  if (outcome.connectMs !== undefined) record['audit.ttfb_ms'] = roundMs(outcome.connectMs);
  record['audit.bytes_in'] = outcome.bytesIn;
  record['audit.bytes_out'] = outcome.bytesOut;
  if (outcome.errorKind !== undefined) {
    record['error.type'] = outcome.errorKind;
    if (outcome.errorMessage !== undefined) record['audit.error_message'] = outcome.errorMessage;
  }
  return record;
}
