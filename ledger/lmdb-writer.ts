/**
 * How every auditmesh LMDB writer opens its environment: the sidecar's journal
 * (proxy/journal/journal.ts) and the collector's store (control/collector/store/lmdb-store.ts).
 *
 * - eventTurnBatching off: with it on, lmdb-js 3.5 drops a promise it created for the event turn,
 *   and a failed commit surfaces as an unhandled rejection that kills the process. Each commit is
 *   one explicit batch() instead.
 * - separateFlushed: each commit carries its own `flushed`, because db.flushed never settles once
 *   any later commit fails.
 * - overlappingSync off (lmdb-js's default on Linux is on): a commit resolves once it is on
 *   disk, so "committed" and "flushed" are one moment. It was turned off when another process
 *   opening a live environment made the writer lose acknowledged commits; that was LMDB's own
 *   bug (ITS#9496, lmdb-build.ts), fixed by the patched build, and off had only made it rarer.
 *   It stays off for the simpler guarantee: with the patched build, on and off measured the same
 *   (bench/README.md, "Figures behind the code").
 */
export const LMDB_WRITER_OPTIONS = { eventTurnBatching: false, separateFlushed: true, overlappingSync: false } as const;

/** Resolves with the promise's rejection reason, or `fallback` if it has none within waitMs. */
export function rejectionOf(promise: PromiseLike<unknown> | undefined, fallback: unknown, waitMs: number): Promise<unknown> {
  if (promise === undefined) return Promise.resolve(fallback);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(fallback), waitMs);
    const settle = (value: unknown): void => {
      clearTimeout(timer);
      resolve(value);
    };
    promise.then(() => settle(fallback), settle);
  });
}
