import { Counter, type Registry } from 'prom-client';
import type { Logger } from '../../../command/log.js';
import { initialiseLabels } from '../../../command/label-values.js';
import type { CollectorStore } from '../collector-store.js';
import { rejectionOf } from '../../../ledger/lmdb-writer.js';

/** How long a failed commit's cause is waited for. */
const COMMIT_ERROR_WAIT_MS = 100;

/**
 * Watches the store's verified-run commits: one that fails (a full disk: lmdb-js grows its map
 * itself, so a full map shows as a full filesystem) is counted, logged, and makes /readyz say
 * so until a later commit goes through. The segment is not acked (ingest answers UNAVAILABLE and
 * the sidecar keeps it and retries), so nothing acknowledged is lost and nothing stops.
 */

export const STORE_WRITE_FAILURES = ['disk-full', 'other'] as const;

/** A failed commit's reason label: disk-full for a full filesystem or map, else other. */
export function writeFailureReason(err: unknown): (typeof STORE_WRITE_FAILURES)[number] {
  const text = `${(err as { code?: unknown })?.code ?? ''} ${(err as Error)?.message ?? String(err)}`;
  // LMDB reports a short write (a disk with a little room left) as EIO.
  return /ENOSPC|No space left|MDB_MAP_FULL|MAP_FULL|EDQUOT|quota|^(28|5) |Input\/output error/i.test(text) ? 'disk-full' : 'other';
}

export interface StoreWrites<S extends CollectorStore> {
  /** The store, its commits watched. */
  readonly store: S;
  /** Why /readyz is not ready: the last commit failed; undefined once one went through. */
  problem(): string | undefined;
}

export function watchStoreWrites<S extends CollectorStore>(store: S, registry: Registry, log: Logger): StoreWrites<S> {
  const failures = new Counter({ name: 'auditmesh_collector_store_write_failures_total', help: 'Verified segments the store failed to commit (not acked: the sidecar retries), by reason: disk-full (the filesystem or the LMDB map), other', labelNames: ['reason'], registers: [registry] });
  initialiseLabels(failures, 'reason', STORE_WRITE_FAILURES);
  let failing: string | undefined;
  const watched = Object.create(store) as S;
  watched.append = (run) =>
    store.append(run).then(
      () => {
        if (failing !== undefined) log('info', 'collector store commits go through again', {});
        failing = undefined;
      },
      async (err: unknown) => {
        // lmdb-js rejects with "Commit failed" and settles `commitError` (ENOSPC, EIO) right after.
        const cause = await rejectionOf((err as { commitError?: Promise<unknown> })?.commitError, err, COMMIT_ERROR_WAIT_MS);
        const reason = writeFailureReason(cause);
        failures.inc({ reason });
        if (failing === undefined) log('error', 'collector store commit failed: segments are not acked and sidecars retry', { reason, err: (cause as Error)?.message });
        failing = `store commits are failing (${reason}): ${(cause as Error)?.message}`;
        throw err;
      },
    );
  return { store: watched, problem: () => failing };
}

