import type { GapReason } from './record.js';

/**
 * What the sidecar does while the journal cannot take records, at its bound or after a failed
 * commit (`--on-journal-full`): `reject` refuses new exchanges with 503 (fail-closed); `pass`
 * forwards them unrecorded, counted in signed gap records (fail-open). Exchanges already admitted
 * are recorded either way, a little over the bound if need be.
 */
export type JournalFullPolicy = 'reject' | 'pass';

/** The journal's state as the policy sees it. */
export interface JournalCondition {
  readonly full: boolean;
  readonly writable: boolean;
  readonly usedBytes: number;
}

export interface FullPolicy {
  readonly name: JournalFullPolicy;
  /** Under `pass` while the journal cannot take records: why; otherwise null. Hot path: two reads. */
  shedding(): GapReason | null;
  /** false while new exchanges must be refused: `reject` and the journal full or unwritable. */
  admits(): boolean;
  /** For /readyz: not ready while refusing; ready but degraded while forwarding unrecorded. */
  readiness(): { ok: boolean; reason?: string };
}

export function createFullPolicy(name: JournalFullPolicy, journal: JournalCondition, limitBytes: number | undefined): FullPolicy {
  const trouble = (): GapReason | null => (!journal.writable ? 'journal_write' : journal.full ? 'journal_full' : null);
  return {
    name,
    shedding: () => (name === 'pass' ? trouble() : null),
    admits: () => name === 'pass' || trouble() === null,
    readiness() {
      const why = trouble();
      if (why === null) return { ok: true };
      const what = why === 'journal_write' ? 'audit journal is not writable' : `audit journal is full (${journal.usedBytes} of ${limitBytes} bytes)`;
      return name === 'reject'
        ? { ok: false, reason: `${what}; on-journal-full reject: new requests get 503` }
        : { ok: true, reason: `${what}; on-journal-full pass: forwarding unrecorded, counted in gap records` };
    },
  };
}
