import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { loadNativeAddon } from '../native-addon.js';

/**
 * One writer per journal, across processes: an exclusive flock(2) on `auditmesh.lock` in the
 * journal folder, held from open to close. LMDB's own lock file does not stop a second writer
 * process, and two writers interleave the chain. The kernel releases a flock when its holder
 * dies, even by kill -9, so no stale lock is ever left to clear by hand. Readers (verify, backups)
 * do not take it.
 */

export const LOCK_FILE = 'auditmesh.lock';

interface JournalLockAddon {
  tryLockExclusive(fd: number): boolean;
}

/** Releases the lock (closing its descriptor). Idempotent. */
export type ReleaseLock = () => void;

/** The lock is held by another process: its message names that process. */
export class JournalLockedError extends Error {
  readonly code = 'AUDITMESH_JOURNAL_LOCKED';
}

/** Takes the journal's lock, or throws JournalLockedError naming the pid that holds it. */
export function lockJournal(realDir: string): ReleaseLock {
  const { tryLockExclusive } = loadNativeAddon<JournalLockAddon>('journal_lock');
  const path = join(realDir, LOCK_FILE);
  // O_CLOEXEC is libuv's default: a child the sidecar spawns never inherits the lock.
  const fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  let locked: boolean;
  try {
    locked = tryLockExclusive(fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  if (!locked) {
    const holder = readFileSync(fd, 'utf8').trim();
    closeSync(fd);
    const who = /^\d+$/.test(holder) ? `process ${holder}` : 'another process';
    throw new JournalLockedError(`journal ${realDir} is in use by ${who} (it holds ${path}): one writer per journal; stop that process, or give this one its own --journal`);
  }
  // The holder's pid, for the refusal message of whoever comes next; the lock itself is the flock.
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  let released = false;
  return () => {
    if (released) return;
    released = true;
    closeSync(fd);
  };
}
