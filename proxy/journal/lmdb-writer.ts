/**
 * How every auditmesh LMDB writer opens its environment: the sidecar's journal (journal.ts) and
 * the collector's store (control/collector/lmdb-store.ts).
 *
 * - eventTurnBatching off: with it on, lmdb-js 3.5 drops a promise it created for the event turn,
 *   and a failed commit surfaces as an unhandled rejection that kills the process. Each commit is
 *   one explicit batch() instead.
 * - separateFlushed: each commit carries its own `flushed`, because db.flushed never settles once
 *   any later commit fails.
 * - overlappingSync off (lmdb-js's default on Linux is on): with it on, another process opening
 *   the environment while commits go on (`auditmesh verify` run against a live journal or store,
 *   a backup) makes the writer lose transactions it has already reported committed, or fail
 *   with MDB_PROBLEM "mdb_page_touch no parent". Measured with lmdb-js 3.5.6: 3,000 one-entry
 *   commits with read-only openers in a loop lost 1-2 commits in each of 4 runs; with it off, none
 *   in 10. Not all of it: the journal's own version of that test (1,500 strict commits) still lost
 *   one commit in 17 runs under heavy CPU load, and once in CI, so the loss is rarer, not gone; the
 *   cause of the rest is not found. A commit now resolves once it is on disk.
 */
export const LMDB_WRITER_OPTIONS = { eventTurnBatching: false, separateFlushed: true, overlappingSync: false } as const;
