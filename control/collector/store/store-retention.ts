import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../../command/log.js';
import { initialiseLabels, labelValues } from '../../../command/label-values.js';
import type { PruneEntry, PruneReason } from './prune-log.js';
import { StorePruner } from './store-pruner.js';
import { storeRoomBytes } from './disk-room.js';
import type { CollectorStores } from './store-layout.js';

/**
 * The collector store's bounds (--retention, --store-limit-bytes): every sweep prunes whole
 * batches sealed longer ago than the retention; past the byte limit it prunes the oldest batches
 * of the fleet until the store is back under LIMIT_TARGET of it. What `keep` protects (with an
 * exporter: what is not exported yet) is never pruned, by age or by the limit: if the store is
 * still at its limit, it is full, and ingest refuses new segments (retryably) until a sweep frees
 * room. So it is, without pruning anything, while the disk under the store has less room than its
 * reserve (disk-room.ts). Sweeps run one at a time.
 */

export const DEFAULT_RETENTION = '90d';
/** How often the retention sweep runs; while the store is full, FULL_SWEEP_INTERVAL_MS. */
export const SWEEP_INTERVAL_MS = 60_000;
export const FULL_SWEEP_INTERVAL_MS = 1_000;
/** Past the limit, pruning goes on until the store is this far under it, so it does not prune at every segment. */
export const LIMIT_TARGET = 0.9;

export const PRUNE_REASONS: readonly PruneReason[] = labelValues<PruneReason>({ retention: true, limit: true });

export interface RetentionOptions {
  /** Batches sealed longer ago than this are pruned; 0: never by age. */
  retentionMs: number;
  /** The store's bound in bytes of pages in use; undefined: none. */
  limitBytes?: number;
  sweepIntervalMs?: number;
  /** The last batch of a sidecar that may be pruned (Infinity: any). */
  keep(sidecar: string): number;
  /** Told of each pruning once it is committed (the witness log signs them). */
  onPruned?(entry: PruneEntry): void;
  usedBytes(): number;
  /** The store's folder and the room to keep free on its disk; absent: no disk check. */
  disk?: { dir: string; reserveBytes: number };
  registry: Registry;
  log: Logger;
}

export interface StoreRetention {
  /** At the byte limit with nothing prunable: ingest refuses new segments. */
  readonly full: boolean;
  /** What /readyz says while full. */
  readonly problem: string | undefined;
  /** Whether a new segment may be stored: undefined if so, else why not (counted). */
  admit(): string | undefined;
  /** A segment was stored: checks the limit soon (coalesced). */
  stored(): void;
  /** Runs a sweep now (or waits for the one running); resolves with what it pruned. */
  sweep(): Promise<PruneEntry[]>;
  readonly pruner: StorePruner;
  close(): Promise<void>;
}

export function createStoreRetention(stores: CollectorStores, opts: RetentionOptions): StoreRetention {
  const metrics = createRetentionMetrics(opts.registry, opts.limitBytes);
  const pruner = new StorePruner(stores, {
    keep: opts.keep,
    onPruned: (entry) => {
      metrics.prunedBatches.inc({ reason: entry.reason }, entry.to_batch - entry.from_batch + 1);
      metrics.prunedRecords.inc({ reason: entry.reason }, entry.records);
      try {
        opts.onPruned?.(entry);
      } catch (err) {
        opts.log('error', 'collector onPruned listener threw', { err: (err as Error)?.message });
      }
    },
  });
  let full = false;
  /** Why it is full: the byte limit, or the disk. */
  let why: 'limit' | 'disk' = 'limit';
  let room: number | undefined;
  let running: Promise<PruneEntry[]> | undefined;
  let checkQueued = false;
  let closed = false;
  let timer: NodeJS.Timeout | undefined;

  /** Whether the disk under the store has less room than its reserve (checked at every look at the bound). */
  const diskLow = (used: number): boolean => {
    if (opts.disk === undefined) return false;
    room = storeRoomBytes(opts.disk.dir, used);
    return room !== undefined && room < opts.disk.reserveBytes;
  };

  const setFull = (limitFull: boolean, used: number): void => {
    const disk = !limitFull && diskLow(used);
    const now = limitFull || disk;
    if (now) why = limitFull ? 'limit' : 'disk';
    if (now !== full) opts.log(now ? 'error' : 'info', now ? `collector store ${why === 'limit' ? 'at its bound with nothing it may prune' : 'disk nearly full'}: new segments are refused (retryable) until room is freed` : 'collector store has room again: segments accepted again', { used_bytes: used, limit_bytes: opts.limitBytes, room_bytes: room, reserve_bytes: opts.disk?.reserveBytes });
    full = now;
    metrics.full.set(now ? 1 : 0);
  };

  const enforceLimit = async (done: PruneEntry[]): Promise<void> => {
    const limit = opts.limitBytes;
    let used = opts.usedBytes();
    if (limit === undefined) return setFull(false, used);
    if (used < limit) return setFull(false, used);
    while (used > limit * LIMIT_TARGET) {
      const entry = await pruner.pruneOldest('limit');
      if (entry === null) break;
      done.push(entry);
      used = opts.usedBytes();
    }
    setFull(used >= limit, used);
  };

  const run = async (byAge: boolean): Promise<PruneEntry[]> => {
    const done: PruneEntry[] = [];
    try {
      if (byAge && opts.retentionMs > 0) done.push(...(await pruner.pruneOlderThan(Date.now() - opts.retentionMs)));
      await enforceLimit(done);
    } catch (err) {
      metrics.failures.inc();
      opts.log('error', 'collector store pruning failed: it is tried again at the next sweep', { err: (err as Error)?.message });
    }
    return done;
  };

  const sweep = (byAge = true): Promise<PruneEntry[]> => {
    running ??= run(byAge).finally(() => {
      running = undefined;
      schedule();
    });
    return running;
  };

  const schedule = (): void => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => void sweep(), full ? FULL_SWEEP_INTERVAL_MS : (opts.sweepIntervalMs ?? SWEEP_INTERVAL_MS));
    timer.unref();
  };
  // The first sweep at start: a collector that was down past the retention catches up at once.
  void sweep();

  return {
    get full() {
      return full;
    },
    get problem() {
      if (!full) return undefined;
      return why === 'limit'
        ? `the store is at --store-limit-bytes (${opts.limitBytes} bytes) and holds nothing it may prune yet; new segments are refused until the exporter catches up or the limit is raised`
        : `the disk under the store has ${room} bytes of room, less than the ${opts.disk?.reserveBytes} kept free; new segments are refused until space is freed`;
    },
    admit() {
      if (!full) return undefined;
      metrics.refusals.inc();
      return this.problem;
    },
    stored() {
      if ((opts.limitBytes === undefined && opts.disk === undefined) || checkQueued) return;
      checkQueued = true;
      setImmediate(() => {
        checkQueued = false;
        if (running !== undefined) return;
        const used = opts.usedBytes();
        if (opts.limitBytes !== undefined && used >= opts.limitBytes) void sweep(false);
        else setFull(false, used);
      });
    },
    sweep: () => sweep(),
    pruner,
    async close() {
      closed = true;
      clearTimeout(timer);
      await running;
    },
  };
}

function createRetentionMetrics(registry: Registry, limitBytes: number | undefined) {
  const prunedBatches = new Counter({ name: 'auditmesh_collector_pruned_batches_total', help: 'Batches pruned from the store, by reason: retention (older than --retention) or limit (the store at --store-limit-bytes)', labelNames: ['reason'], registers: [registry] });
  const prunedRecords = new Counter({ name: 'auditmesh_collector_pruned_records_total', help: 'Records pruned from the store with their batches, by reason (retention, limit)', labelNames: ['reason'], registers: [registry] });
  initialiseLabels(prunedBatches, 'reason', PRUNE_REASONS);
  initialiseLabels(prunedRecords, 'reason', PRUNE_REASONS);
  new Gauge({ name: 'auditmesh_collector_store_limit_bytes', help: 'The store bound (--store-limit-bytes); 0 when none', registers: [registry] }).set(limitBytes ?? 0);
  const full = new Gauge({ name: 'auditmesh_collector_store_full', help: '1 while the store is at its bound with nothing it may prune: new segments are refused (retryable) and sidecars buffer', registers: [registry] });
  full.set(0);
  const failures = new Counter({ name: 'auditmesh_collector_prune_failures_total', help: 'Store sweeps that failed (tried again at the next one)', registers: [registry] });
  const refusals = new Counter({ name: 'auditmesh_collector_store_refusals_total', help: 'Segments refused because the store is at its bound (RESOURCE_EXHAUSTED: the sidecar keeps them and retries)', registers: [registry] });
  return { prunedBatches, prunedRecords, full, failures, refusals };
}
