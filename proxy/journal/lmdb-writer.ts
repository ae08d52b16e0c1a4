/**
 * How every auditmesh LMDB writer opens its environment: the sidecar's journal (journal.ts) and
 * the collector's store (control/collector/lmdb-store.ts).
 *
 * - eventTurnBatching off: with it on, lmdb-js 3.5 drops a promise it created for the event turn,
 *   and a failed commit surfaces as an unhandled rejection that kills the process. Each commit is
 *   one explicit batch() instead.
 * - separateFlushed: each commit carries its own `flushed`, because db.flushed never settles once
 *   any later commit fails.
 * - overlappingSync on (lmdb-js's default on Linux): a commit resolves once written and its
 *   `flushed` once on disk; every acknowledgement waits for `flushed`. It was off for a while,
 *   while another process opening a live environment made the writer lose acknowledged commits;
 *   the cause was LMDB's own (ITS#9496, lmdb-build.ts), fixed by the patched build, and turning
 *   overlapping sync off had only made the race rarer.
 */
export const LMDB_WRITER_OPTIONS = { eventTurnBatching: false, separateFlushed: true, overlappingSync: true } as const;
