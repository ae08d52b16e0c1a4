import { statfsSync, statSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Room left for the store to grow: what its filesystem still offers, plus the pages of its file
 * LMDB has freed (pruning frees pages inside the file, which later commits reuse; the file never
 * shrinks). The collector stops taking segments while this is under its reserve, before the disk
 * is full: lmdb-js 3.5 can abort the process (heap corruption) when a commit meets ENOSPC while
 * spilling pages (kriszyp/lmdb-js#40, #283), so a full disk must not be reached by the store's
 * own writes. Returns undefined when it cannot be read (no check then).
 */
export function storeRoomBytes(storeDir: string, usedBytes: number): number | undefined {
  try {
    const fs = statfsSync(storeDir);
    const file = statSync(join(storeDir, 'data.mdb')).size;
    return fs.bavail * fs.bsize + Math.max(0, file - usedBytes);
  } catch {
    return undefined;
  }
}

/** Default room kept free under the store: more than the segments in flight commit at once. */
export const DEFAULT_DISK_RESERVE_BYTES = 128 * 1024 * 1024;
