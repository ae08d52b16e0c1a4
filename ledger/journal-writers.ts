import type { JournalStores } from './journal-layout.js';

/**
 * The journals this process has open for writing, by real path: a reader in the same process reads
 * through the writer's environment, because lmdb-js misbehaves when one process opens an
 * environment twice (lmdb-js#164).
 */
const writers = new Map<string, JournalStores>();

export function writerFor(realDir: string): JournalStores | undefined {
  return writers.get(realDir);
}

export function registerWriter(realDir: string, stores: JournalStores): void {
  if (writers.has(realDir)) throw new Error(`journal ${realDir} is already open in this process`);
  writers.set(realDir, stores);
}

export function unregisterWriter(realDir: string): void {
  writers.delete(realDir);
}
