import type { GapReason } from '../../ledger/record.js';

/**
 * What the sidecar does while the journal cannot take records, at its bound, after a failed
 * commit, or so far behind that the records waiting for it reach their bound in memory
 * (`--on-journal-full`): `reject` refuses new exchanges with 503 (fail-closed); `pass` forwards
 * them unrecorded, counted in signed gap records (fail-open). Exchanges already admitted are
 * recorded either way, a little over the bound if need be.
 */
export type JournalFullPolicy = 'reject' | 'pass';

/** The journal's state as the policy sees it. */
export interface JournalCondition {
  readonly full: boolean;
  readonly writable: boolean;
  readonly usedBytes: number;
}

/** The records handed over and not yet committed, against their bound. */
export interface Backlog {
  pending(): number;
  readonly maxPending: number;
}

export interface FullPolicy {
  readonly name: JournalFullPolicy;
  /** Under `pass` while the journal cannot take records: why; otherwise null. Hot path: a few reads. */
  shedding(): GapReason | null;
  /** false while new exchanges must be refused: `reject` and the journal full, unwritable or behind. */
  admits(): boolean;
  /** For /readyz: not ready while refusing; ready but degraded while forwarding unrecorded. */
  readiness(): { ok: boolean; reason?: string };
}

export function createFullPolicy(name: JournalFullPolicy, journal: JournalCondition, limitBytes: number | undefined, backlog: Backlog): FullPolicy {
  const trouble = (): GapReason | null =>
    !journal.writable ? 'journal_write' : journal.full ? 'journal_full' : backlog.pending() >= backlog.maxPending ? 'journal_behind' : null;
  const describe: Record<GapReason, () => string> = {
    journal_write: () => 'audit journal is not writable',
    journal_full: () => `audit journal is full (${journal.usedBytes} of ${limitBytes} bytes)`,
    journal_behind: () => `audit journal is behind (${backlog.pending()} records waiting, at most ${backlog.maxPending})`,
  };
  return {
    name,
    shedding: () => (name === 'pass' ? trouble() : null),
    admits: () => name === 'pass' || trouble() === null,
    readiness() {
      const why = trouble();
      if (why === null) return { ok: true };
      const what = describe[why]();
      return name === 'reject'
        ? { ok: false, reason: `${what}; on-journal-full reject: new requests get 503` }
        : { ok: true, reason: `${what}; on-journal-full pass: forwarding unrecorded, counted in gap records` };
    },
  };
}
