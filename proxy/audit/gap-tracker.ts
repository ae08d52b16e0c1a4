import type { AuditRecord, Direction, GapReason } from '../../ledger/record.js';

/**
 * Counts exchanges that went through without a record of their own (the journal was full under
 * `--on-journal-full pass`, or a commit failed), so that a signed gap record can say how many and
 * when. Nothing is silent: what cannot be recorded is at least counted in the journal.
 */

export interface GapTracker {
  /** A record that will not reach the journal. Counts exchanges (final records) and lost gap records. */
  lose(rec: AuditRecord, reason: GapReason): void;
  /** Gap records for everything lost since the last take (one per direction and reason); resets. */
  take(): AuditRecord[];
  /** Exchanges counted and not yet taken. */
  readonly pending: number;
}

interface Span {
  exchanges: number;
  firstUnixMs: number;
  lastUnixMs: number;
}

export function createGapTracker(service: string, onExchanges?: (count: number, reason: GapReason) => void): GapTracker {
  const spans = new Map<string, Span>();
  let pending = 0;

  function add(direction: Direction, reason: GapReason, exchanges: number, firstUnixMs: number, lastUnixMs: number): void {
    const key = `${direction}\0${reason}`;
    const span = spans.get(key);
    if (span === undefined) spans.set(key, { exchanges, firstUnixMs, lastUnixMs });
    else {
      span.exchanges += exchanges;
      span.firstUnixMs = Math.min(span.firstUnixMs, firstUnixMs);
      span.lastUnixMs = Math.max(span.lastUnixMs, lastUnixMs);
    }
    pending += exchanges;
  }

  return {
    lose(rec, reason) {
      if (rec['audit.kind'] === 'gap') {
        // A gap record that itself failed: its count goes back into the next one, not lost twice.
        const first = rec['audit.start_unix_ms'];
        add(rec['audit.direction'], rec['audit.gap.reason'] ?? reason, rec['audit.gap.exchanges'] ?? 0, first, first + (rec['audit.duration_ms'] ?? 0));
        return;
      }
      // A strict request record stands for an exchange whose final record is still to come.
      if (rec['audit.phase'] !== 'final' || rec['audit.kind'] === 'alert') return;
      const at = rec['audit.start_unix_ms'];
      add(rec['audit.direction'], reason, 1, at, at);
      onExchanges?.(1, reason);
    },
    take() {
      const out: AuditRecord[] = [];
      for (const [key, span] of spans) {
        const [direction, reason] = key.split('\0') as [Direction, GapReason];
        out.push({
          'audit.kind': 'gap',
          'audit.phase': 'final',
          'audit.direction': direction,
          'audit.service': service,
          'audit.start_unix_ms': span.firstUnixMs,
          'audit.duration_ms': span.lastUnixMs - span.firstUnixMs,
          'audit.gap.exchanges': span.exchanges,
          'audit.gap.reason': reason,
        });
      }
      spans.clear();
      pending = 0;
      return out;
    },
    get pending() {
      return pending;
    },
  };
}
