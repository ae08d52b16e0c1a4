import type { AuditRecord } from '../../ledger/record.js';
import { MAX_BATCH_RECORDS } from '../config.js';

/**
 * The batcher: collects records on the event loop and seals a batch at MAX_BATCH_RECORDS or
 * after the batch delay, whichever comes first. The per-record cost is one array push; all
 * encoding and hashing happen per batch, after sealing.
 */

export const MAX_BATCH_DELAY_MS = 20;
/**
 * A batch holding a strict (durable) record seals this soon: long enough for concurrent strict
 * requests to share one commit and one flush (group commit), short enough not to add latency.
 */
export const STRICT_BATCH_DELAY_MS = 1;

/** A promise with its settle functions, shared by every strict record of one batch. */
export interface Durability {
  readonly promise: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
}

/** A sealed batch, handed to the next stage. */
export interface RecordBatch {
  readonly records: AuditRecord[];
  readonly sealedUnixMs: number;
  /** Monotonic clock at sealing (performance.now()), for the seal-to-commit duration. */
  readonly sealedAtMs: number;
  /** Set when the batch holds strict records: settle it once the batch is durable, or not. */
  readonly durability: Durability | null;
}

export interface BatcherOptions {
  maxRecords?: number;
  maxDelayMs?: number;
  onSeal(batch: RecordBatch): void;
}

export interface Batcher {
  add(rec: AuditRecord): void;
  /** Adds a strict record: the returned promise is the batch's durability, shared. */
  addDurable(rec: AuditRecord): Promise<void>;
  /** Seals the open batch now, if it holds anything. */
  flush(): void;
  /** Records in the open batch. */
  readonly pending: number;
}

function createDurability(): Durability {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export function createBatcher(opts: BatcherOptions): Batcher {
  const maxRecords = opts.maxRecords ?? MAX_BATCH_RECORDS;
  const maxDelayMs = opts.maxDelayMs ?? MAX_BATCH_DELAY_MS;
  if (!Number.isInteger(maxRecords) || maxRecords < 1) throw new RangeError(`maxBatchRecords must be a positive integer, not ${maxRecords}`);
  if (!Number.isFinite(maxDelayMs) || maxDelayMs < 0) throw new RangeError(`maxBatchDelayMs must be a finite number >= 0, not ${maxDelayMs}`);
  let records: AuditRecord[] = [];
  let durability: Durability | null = null;
  let timer: NodeJS.Timeout | null = null;
  // When the running timer fires, to know whether a strict record must cut it short.
  let timerDueMs = 0;

  function flush(): void {
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    if (records.length === 0) return;
    const batch: RecordBatch = { records, sealedUnixMs: Date.now(), sealedAtMs: performance.now(), durability };
    records = [];
    durability = null;
    opts.onSeal(batch);
  }

  function arm(delayMs: number): void {
    const dueMs = performance.now() + delayMs;
    if (timer !== null) {
      if (timerDueMs <= dueMs) return;
      clearTimeout(timer);
    }
    timerDueMs = dueMs;
    timer = setTimeout(flush, delayMs);
  }

  function add(rec: AuditRecord): void {
    records.push(rec);
    if (records.length >= maxRecords) flush();
    else if (timer === null) arm(maxDelayMs);
  }

  return {
    add,
    addDurable(rec) {
      durability ??= createDurability();
      const { promise } = durability;
      records.push(rec);
      if (records.length >= maxRecords) flush();
      else arm(Math.min(STRICT_BATCH_DELAY_MS, maxDelayMs));
      return promise;
    },
    flush,
    get pending() {
      return records.length;
    },
  };
}
