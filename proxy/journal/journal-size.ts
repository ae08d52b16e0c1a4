import type { SidecarMetrics } from '../metrics/metrics.js';
import { headroomBytes, usedBytes } from './retention.js';
import type { JournalStores } from '../../ledger/journal-layout.js';

/** After commits, the in-use size is sampled at most this often (each sample costs ~0.1 ms). */
const USAGE_SAMPLE_MS = 50;
/** After a failed commit, the journal takes new work again once it has this much room (headroomBytes). */
export const RECOVERY_HEADROOM_BYTES = 512 * 1024;

export interface JournalSize {
  /** In-use bytes at the last sample. */
  readonly usedBytes: number;
  /** At or over the limit at the last sample. */
  readonly full: boolean;
  /** Samples (at most every USAGE_SAMPLE_MS unless forced); sets the gauges, logs crossing the limit either way. */
  sample(force: boolean): void;
  /** Enough room to take new work again after a failed commit. */
  hasRecoveryRoom(): boolean;
}

/** The journal's size against its bound (--journal-limit-bytes), as the writer sees it. */
export function createJournalSize(
  stores: JournalStores,
  dir: string,
  opts: { limitBytes?: number; metrics?: SidecarMetrics; log?: (line: Record<string, unknown>) => void },
): JournalSize {
  const { limitBytes, metrics, log } = opts;
  let used = 0;
  let sampledAtMs = Number.NEGATIVE_INFINITY;
  let full = false;
  metrics?.journalLimitBytes.set(limitBytes ?? 0);

  const size: JournalSize = {
    get usedBytes() {
      return used;
    },
    get full() {
      return full;
    },
    sample(force) {
      const now = performance.now();
      if (!force && now - sampledAtMs < USAGE_SAMPLE_MS) return;
      sampledAtMs = now;
      used = usedBytes(stores);
      metrics?.journalBytes.set(used);
      const over = limitBytes !== undefined && used >= limitBytes;
      if (over === full) return;
      full = over;
      metrics?.journalFull.set(full ? 1 : 0);
      log?.(
        full
          ? { level: 'error', msg: 'journal full: the on-journal-full policy applies', used_bytes: used, limit_bytes: limitBytes }
          : { level: 'info', msg: 'journal below its limit again', used_bytes: used, limit_bytes: limitBytes },
      );
    },
    hasRecoveryRoom() {
      size.sample(true);
      try {
        return headroomBytes(dir, used) >= RECOVERY_HEADROOM_BYTES;
      } catch {
        return false;
      }
    },
  };
  size.sample(true);
  return size;
}
