import { availableParallelism } from 'node:os';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { SigningKey } from '../../ledger/keys.js';
import { CHECKPOINT_INTERVAL_MS } from '../../ledger/chain.js';
import { Journal, journalError, maintenanceTickMs, type CommittedBatch } from '../journal/journal.js';
import type { BatchReadOptions, RecordReadOptions } from '../../ledger/read-journal.js';
import type { BatchHeader } from '../../ledger/journal-layout.js';
import { createBatcher, MAX_BATCH_DELAY_MS, type Batcher, type RecordBatch } from './batcher.js';
import { MAX_BATCH_RECORDS } from '../config.js';
import { createFullPolicy, type JournalFullPolicy } from './full-policy.js';
import { createGapTracker, type GapTracker } from './gap-tracker.js';
import { createLiveFeed, type LiveFeed } from '../../command/live-feed.js';
import { createSealPool, encodeRecords, type SealedBatch, type SealPool } from './pool.js';
import type { AuditRecord, JournalRecord } from '../../ledger/record.js';

/**
 * The audit pipeline, in the order a record travels it:
 *   record() -> full policy -> batcher (event loop) -> seal pool (worker: bytes, hashes, root)
 *            -> journal (LMDB, FIFO commit, chain, signature) -> live feed and strict waiters.
 * A maintenance tick writes gap records for what went unrecorded and keeps the journal's upkeep
 * (signed checkpoints, retention, size, probing an unwritable journal).
 */

export interface AuditPipelineOptions {
  /** LMDB folder, created if absent. */
  journalDir: string;
  /** Default MAX_BATCH_RECORDS (256). */
  maxBatchRecords?: number;
  /** Default MAX_BATCH_DELAY_MS (20): async records are committed well within 100 ms. */
  maxBatchDelayMs?: number;
  /** Sealing workers; default one per spare core, at most 2. */
  poolThreads?: number;
  /** Test-only: see SealPoolOptions.sealCrashFile. */
  sealCrashFile?: string;
  /** Records handed over and not yet committed, at most; beyond, the full policy applies. Default MAX_PENDING_RECORDS. */
  maxPendingRecords?: number;
  /** Signs the journal's heads; default a key in memory only (tests, benchmarks). */
  signingKey?: SigningKey;
  /** A key rotation: the key the journal was signed with before, to endorse the new one (Journal's previousSigner). */
  previousSigningKey?: SigningKey;
  /** The boot epoch's link is committed (Journal's onEpochLinked). */
  onEpochLinked?: (endorsedBy: string | undefined) => void;
  /** Longest time between signed checkpoints, traffic or not; default CHECKPOINT_INTERVAL_MS. */
  checkpointIntervalMs?: number;
  /** Journal bound, bytes of LMDB pages in use; default none. */
  journalLimitBytes?: number;
  /** At the bound, while commits fail, or with maxPendingRecords waiting; default `reject`. */
  onJournalFull?: JournalFullPolicy;
  /** Links older than this are pruned; default never. */
  retentionMs?: number;
  /** A collector is configured: only links it acknowledged are pruned (journal.ts). */
  pruneOnlyShipped?: boolean;
  /** The service stamped on gap records. */
  service?: string;
  metrics?: SidecarMetrics;
  /** Structured log line sink; default no-op. */
  log?: (line: Record<string, unknown>) => void;
}

export interface AuditPipeline {
  /** Hot path: hands over a record. Never throws, never awaits, does no encoding, hashing or I/O. */
  record(rec: AuditRecord): void;
  /**
   * Strict mode: resolves once the record's batch is committed and flushed to disk; rejects with
   * code AUDITMESH_JOURNAL_WRITE if it cannot be. Concurrent strict records share one commit and
   * one flush, and a strict record seals its batch after STRICT_BATCH_DELAY_MS, not the full delay.
   * Under `pass` it resolves instead of rejecting, at once while the journal cannot take records:
   * the request goes through, and its exchange is counted in a gap record if its final record
   * cannot be written either.
   */
  recordDurable(rec: AuditRecord): Promise<void>;
  /** Committed records with their sequence numbers, in order. Returns the unsubscribe function. */
  subscribe(listener: (rec: JournalRecord) => void): () => void;
  /** false while the journal cannot be written (the last commit failed). */
  readonly writable: boolean;
  /** false when a new exchange must be refused with 503: journal full or unwritable under `reject`. */
  admits(): boolean;
  /** For /readyz (full-policy.ts). */
  readiness(): { ok: boolean; reason?: string };
  /** Reads the journal through this pipeline's own environment: the in-process reader. */
  read(opts?: RecordReadOptions): JournalRecord[];
  readBatches(opts?: BatchReadOptions): BatchHeader[];
  /** The journal itself, for the shipper: its reads, cursor and commit notifications. */
  readonly journal: Journal;
  /** Seals what is pending, waits for it to commit, stops the pool, closes LMDB. Idempotent. */
  close(): Promise<void>;
}

/** How long a strict record waits for its committed batch to reach the disk before giving up. */
export const FLUSH_TIMEOUT_MS = 10_000;
/**
 * A journal that cannot keep up must not turn into memory without bound: with this many records
 * waiting (half a second at full speed, some 50-100 MB), the full policy applies as if the journal were full.
 */
export const MAX_PENDING_RECORDS = 50_000;

type Log = (line: Record<string, unknown>) => void;
const noop = (): void => {};

/** Committed is not flushed (REFERENCES.md, lmdb-js): strict waiters wait for the flush too. */
function flushedWithin(done: CommittedBatch, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(journalError(`journal flush took over ${timeoutMs} ms`)), timeoutMs);
    done.flushed.then(
      () => (clearTimeout(timer), resolve()),
      (err: unknown) => (clearTimeout(timer), reject(journalError('journal flush failed', err))),
    );
  });
}

function defaultThreads(): number {
  // The event loop and lmdb-js's write thread need cores too.
  return Math.max(1, Math.min(2, availableParallelism() - 1));
}

interface Stages {
  journal: Journal;
  pool: SealPool;
  feed: LiveFeed<JournalRecord>;
  metrics: SidecarMetrics | undefined;
  log: Log;
}

async function openStages(opts: AuditPipelineOptions, log: Log): Promise<Stages> {
  const { signingKey: signer, checkpointIntervalMs, journalLimitBytes: limitBytes, retentionMs, pruneOnlyShipped, metrics } = opts;
  const { previousSigningKey: previousSigner, onEpochLinked } = opts;
  const journal = Journal.open(opts.journalDir, { signer, previousSigner, onEpochLinked, checkpointIntervalMs, limitBytes, retentionMs, pruneOnlyShipped, metrics, log });
  const pool = createSealPool({ threads: opts.poolThreads ?? defaultThreads(), sealCrashFile: opts.sealCrashFile });
  try {
    // Fails at boot, not at the first batch, if the worker cannot load; and takes the worker's
    // start-up (~0.3 s under tsx) off the first real batch's commit latency.
    await pool.seal(encodeRecords([{}]).bytes);
  } catch (err) {
    await Promise.all([pool.close(), journal.close()]);
    throw err;
  }
  const feed = createLiveFeed<JournalRecord>({
    onListenerError: (err) => log({ level: 'warn', msg: 'live feed listener threw; it keeps its subscription', err: (err as Error)?.message }),
  });
  return { journal, pool, feed, metrics: opts.metrics, log };
}

/** A sealed batch's way on: pool, journal, then live feed and strict waiters; or the gap tracker. */
function createCommitStage({ journal, pool, feed, metrics, log }: Stages, batcherPending: () => number, gap: GapTracker) {
  const inFlight = new Set<Promise<void>>();
  let inFlightRecords = 0;

  function updateGauges(): void {
    metrics?.poolQueue.set(pool.queueSize);
    metrics?.batcherPending.set(batcherPending() + inFlightRecords);
  }

  function lose(count: number, reason: string, err: unknown): void {
    metrics?.journalRecords.inc({ result: 'failed' }, count);
    metrics?.journalUnrecorded.inc({ reason }, count);
    log({ level: 'error', msg: 'audit records lost before the journal', reason, count, err: (err as Error)?.message });
  }

  async function settle(batch: RecordBatch, kept: AuditRecord[], committed: Promise<CommittedBatch>): Promise<void> {
    let done: CommittedBatch;
    try {
      done = await committed;
    } catch (err) {
      for (const rec of kept) gap.lose(rec, 'journal_write');
      batch.durability?.reject(err as Error);
      return;
    } finally {
      // Before any waiter resumes: committed or failed, these records are no longer pending.
      inFlightRecords -= kept.length;
      updateGauges();
    }
    for (const rec of kept) if (rec['audit.kind'] === 'gap') gapWritten(rec);
    if (feed.size > 0) for (let i = 0; i < kept.length; i++) feed.publish({ 'audit.seq': done.firstSeq + i, ...kept[i] });
    if (batch.durability !== null) await flushedWithin(done, FLUSH_TIMEOUT_MS).then(batch.durability.resolve, batch.durability.reject);
  }

  function gapWritten(rec: AuditRecord): void {
    const reason = rec['audit.gap.reason'] ?? 'journal_write';
    metrics?.journalGapRecords.inc({ reason });
    log({ level: 'warn', msg: 'gap record written: exchanges went through unrecorded', reason, direction: rec['audit.direction'], exchanges: rec['audit.gap.exchanges'], since_unix_ms: rec['audit.start_unix_ms'] });
  }

  /**
   * A worker that dies mid-batch (a crash, out of memory) takes the transferred bytes with it;
   * piscina starts a replacement, and the batch is encoded again and sealed once more rather than
   * lost. Its place in the journal's queue is kept.
   */
  function sealOnce(bytes: Buffer, kept: AuditRecord[]): Promise<SealedBatch> {
    return pool.seal(bytes).catch((err: unknown) => {
      log({ level: 'warn', msg: 'sealing worker failed; sealing the batch again', records: kept.length, err: ((err as Error)?.cause as Error | undefined)?.message ?? (err as Error)?.message });
      return pool.seal(encodeRecords(kept).bytes);
    });
  }

  function seal(batch: RecordBatch): void {
    // A boundary: this runs from record() and from a timer, where a throw would be fatal.
    try {
      const { bytes, kept, dropped } = encodeRecords(batch.records);
      if (dropped.length > 0) {
        lose(dropped.length, 'encode', dropped[0]);
        // The batch's strict records share one answer, and the dropped record may be one of them.
        batch.durability?.reject(journalError('audit record could not be encoded', dropped[0]));
      }
      if (kept.length === 0) return;
      inFlightRecords += kept.length;
      const info = { count: kept.length, sealedUnixMs: batch.sealedUnixMs, sealedAtMs: batch.sealedAtMs };
      const task = settle(batch, kept, journal.append(sealOnce(bytes, kept), info)).finally(() => inFlight.delete(task));
      inFlight.add(task);
      updateGauges();
    } catch (err) {
      lose(batch.records.length, 'internal', err);
      batch.durability?.reject(journalError('audit batch failed', err));
    }
  }

  return { seal, drain: () => Promise.all(inFlight), pending: () => batcherPending() + inFlightRecords };
}

export async function createAuditPipeline(opts: AuditPipelineOptions): Promise<AuditPipeline> {
  const log: Log = opts.log ?? noop;
  // In the order a record travels. The batcher first: it checks its limits before anything opens.
  const batcher = createBatcher({
    maxRecords: opts.maxBatchRecords ?? MAX_BATCH_RECORDS,
    maxDelayMs: opts.maxBatchDelayMs ?? MAX_BATCH_DELAY_MS,
    onSeal: (batch) => commit.seal(batch),
  });
  const stages = await openStages(opts, log);
  const { journal } = stages;
  const gap = createGapTracker(opts.service ?? 'unknown', (n, reason) => opts.metrics?.journalGapExchanges.inc({ reason }, n));
  const commit = createCommitStage(stages, () => batcher.pending, gap);
  const backlog = { pending: commit.pending, maxPending: opts.maxPendingRecords ?? MAX_PENDING_RECORDS };
  const policy = createFullPolicy(opts.onJournalFull ?? 'reject', journal, opts.journalLimitBytes, backlog);
  const maintenance = startMaintenance(journal, batcher, gap, opts.checkpointIntervalMs ?? CHECKPOINT_INTERVAL_MS);
  let closing: Promise<void> | undefined;

  return {
    record(rec) {
      if (closing !== undefined) return void opts.metrics?.journalUnrecorded.inc({ reason: 'closed' });
      const shed = policy.shedding();
      if (shed === null) return batcher.add(rec);
      opts.metrics?.journalUnrecorded.inc({ reason: shed });
      gap.lose(rec, shed);
    },
    recordDurable(rec) {
      if (closing !== undefined) return Promise.reject(journalError('audit pipeline is closed'));
      if (policy.shedding() !== null) return Promise.resolve();
      const durable = batcher.addDurable(rec);
      return policy.name === 'pass' ? durable.catch(noop) : durable;
    },
    admits: () => policy.admits(),
    readiness: () => policy.readiness(),
    subscribe: (listener) => stages.feed.subscribe(listener),
    get writable() {
      return journal.writable;
    },
    read: (readOpts) => journal.read(readOpts),
    readBatches: (readOpts) => journal.readBatches(readOpts),
    journal,
    close() {
      closing ??= (async () => {
        maintenance.stop();
        batcher.flush();
        await commit.drain();
        if (gap.pending > 0) log({ level: 'error', msg: 'closing with unrecorded exchanges that no gap record could cover', exchanges: gap.pending });
        await journal.close();
        await stages.pool.close();
      })();
      return closing;
    },
  };
}

/**
 * The maintenance tick: first the gap records for what went unrecorded (they are signed with the
 * commit that carries them, and are written even at the bound), then the journal's own upkeep.
 * stop() clears the timer and hands over the last gap records, writable or not: one last try.
 */
function startMaintenance(journal: Journal, batcher: Batcher, gap: GapTracker, checkpointIntervalMs: number): { stop(): void } {
  const writeGaps = (): void => {
    for (const rec of gap.take()) batcher.add(rec);
  };
  const timer = setInterval(() => {
    // While the journal is unwritable, the journal's probe goes first; the gap records wait for it.
    if (journal.writable) writeGaps();
    journal.maintain();
  }, maintenanceTickMs(checkpointIntervalMs));
  // The journal's owner keeps the process alive; upkeep alone must not.
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
      writeGaps();
    },
  };
}
