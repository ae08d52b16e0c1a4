import type { Database } from 'lmdb';

/** Bytes of LMDB pages in use by these databases of one environment: a sidecar's journal or the collector's store. */
export function databaseBytes(dbs: readonly Pick<Database, 'getStats'>[]): number {
  let pages = 0;
  let pageSize = 4096;
  for (const db of dbs) {
    const s = db.getStats() as { pageSize: number; treeBranchPageCount: number; treeLeafPageCount: number; overflowPages: number };
    pages += s.treeBranchPageCount + s.treeLeafPageCount + s.overflowPages;
    pageSize = s.pageSize;
  }
  return pages * pageSize;
}
