import { mkdirSync, realpathSync } from 'node:fs';
import { open } from 'lmdb';
import { ProxyError } from '../errors.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { SealedBatch } from '../audit/pool.js';
import type { JournalRecord } from '../../ledger/record.js';
import { CHECKPOINT_INTERVAL_MS } from '../../ledger/chain.js';
import { ephemeralSigningKey, type SigningKey } from '../../ledger/keys.js';
import { LMDB_WRITER_OPTIONS, rejectionOf } from '../../ledger/lmdb-writer.js';
import { readHeadFrom, readHeadersFrom, readRecordsFrom, readShippedFrom } from '../../ledger/read-journal.js';
import { HEAD_KEY, PRUNED_KEY, SHIPPED_KEY, openJournalStores } from '../../ledger/journal-layout.js';
import { registerWriter, unregisterWriter, writerFor } from '../../ledger/journal-writers.js';
import type { BatchReadOptions, RecordReadOptions } from '../../ledger/read-journal.js';
import type { BatchHeader, JournalHead, JournalSnapshot, JournalStores } from '../../ledger/journal-layout.js';
import { planCommit, type CommitPlan } from './plan-commit.js';
import { applyPrune, planPressurePrune, planPrune, retentionClock, type PrunePlan } from './retention.js';
import { createJournalSize, type JournalSize } from './journal-size.js';
import { lockJournal, type ReleaseLock } from './journal-lock.js';
import { endorserFor, signPruneMark } from '../../ledger/key-endorsement.js';

/**
 * The LMDB journal, single writer. Batches commit strictly in the order they were sealed, a
 * batch's records, its header and the new head in one transaction, so a batch is all there or
 * not at all. One commit at a time; batches that become ready meanwhile share the next one (group
 * commit). Sequence numbers are assigned at commit, so they stay contiguous across failed
 * commits and restarts.
 *
 * Each commit links its batches into the hash chain and signs the last head (plan-commit.ts,
 * ledger/chain.ts): one hash per batch and one signature per commit, on this thread. Every open starts
 * a boot epoch whose link is the first of its commits. maintain(), called every
 * maintenanceTickMs(), prunes by retention, samples the journal's size and, when nothing was
 * signed for a checkpoint interval, commits a signed checkpoint link.
 *
 * The shipper's cursor (markShipped) is written here too, by the one writer: it rides on the next
 * commit, or on a commit of its own (no link) at the next maintenance tick, so acknowledgements
 * never cost a transaction each and never add links that would themselves need shipping.
 */

/** lmdb-js settles a failed commit's `commitError` right after the rejection; bounded anyway. */
const COMMIT_ERROR_WAIT_MS = 100;
/** maintain() runs at least this often: it is also how an unwritable journal is probed. */
const MAX_MAINTENANCE_TICK_MS = 1_000;
/** Pruning deletes at most about this many records per commit, so no one commit stalls the rest. */
export const PRUNE_MAX_RECORDS_PER_COMMIT = 20_000;

export interface JournalOptions {
  /** Signs the last head of every commit. Default: a key in memory only (tests, benchmarks). */
  signer?: SigningKey;
  /** The key the journal was signed with before `signer` (a rotation): it endorses this boot's epoch. */
  previousSigner?: SigningKey;
  /** The boot's epoch link is committed; `endorsedBy` names the previous key if it endorsed a key change. */
  onEpochLinked?: (endorsedBy: string | undefined) => void;
  /** Longest time between signed heads; default CHECKPOINT_INTERVAL_MS. */
  checkpointIntervalMs?: number;
  /** In-use bytes (retention.ts, usedBytes) at which the journal counts as full; default none. */
  limitBytes?: number;
  /** Links sealed longer ago than this are pruned; default never. */
  retentionMs?: number;
  /** A collector is configured: retention prunes only links it has acknowledged (markShipped). */
  pruneOnlyShipped?: boolean;
  metrics?: SidecarMetrics;
  log?: (line: Record<string, unknown>) => void;
}

/** How often the journal's owner calls maintain() for a given checkpoint interval. */
export function maintenanceTickMs(checkpointIntervalMs: number): number {
  return Math.max(1, Math.min(MAX_MAINTENANCE_TICK_MS, Math.floor(checkpointIntervalMs / 2)));
}

/** Facts about a sealed batch that are known before the worker is done with it. */
export interface BatchInfo {
  count: number;
  sealedUnixMs: number;
  /** performance.now() at sealing. */
  sealedAtMs: number;
}

export interface CommittedBatch {
  batch: number;
  firstSeq: number;
  count: number;
  /** Settles when the commit is on disk (lmdb-js separateFlushed): committed is not flushed. */
  flushed: PromiseLike<unknown>;
}

interface Entry {
  info: BatchInfo;
  sealed: SealedBatch | undefined;
  sealError: unknown;
  ready: boolean;
  resolve(done: CommittedBatch): void;
  reject(err: Error): void;
}

interface Sealed {
  entry: Entry;
  sealed: SealedBatch;
}

type FailureReason = 'journal_write' | 'seal';

const noop = (): void => {};

/** The error strict waiters get: the proxy's rescue table turns it into a 503. */
export function journalError(message: string, cause?: unknown): ProxyError {
  return new ProxyError('AUDITMESH_JOURNAL_WRITE', message, { cause });
}

function openError(message: string, cause?: unknown): Error {
  return Object.assign(new Error(message, { cause }), { code: 'AUDITMESH_JOURNAL_OPEN' });
}

export class Journal {
  #stores: JournalStores;
  #realDir: string;
  #opts: JournalOptions;
  #signer: SigningKey;
  #endorser: SigningKey | undefined;
  #checkpointIntervalMs: number;
  #head: JournalHead;
  /** This boot's epoch, and whether its link is committed yet. */
  #epoch: number;
  #epochLinked = false;
  #queue: Entry[] = [];
  #writing: Promise<void> | undefined;
  /** A commit is wanted even with no batch ready: the epoch link, a checkpoint, a probe. */
  #linkWanted = false;
  /**
   * When the last signature was committed, or (from open until the epoch link lands) requested:
   * a tick while the epoch link is still committing must not queue a checkpoint behind it.
   */
  #lastSignedAtMs = performance.now();
  #announcedAtMs = Number.NEGATIVE_INFINITY;
  #prune: PrunePlan | null = null;
  #retentionClock = retentionClock();
  /** The wall clock was last seen stepped ahead of elapsed time (logged once per step). */
  #clockAhead = false;
  #size: JournalSize;
  #writable = true;
  #failing = new Set<FailureReason>();
  #tail: Promise<unknown> = Promise.resolve();
  /** The collector's acknowledged batch, and whether it changed since it was last written. */
  #shipped: number;
  #shippedDirty = false;
  /** maintain() asked for a commit that carries only the cursor (at most one per tick). */
  #shippedWanted = false;
  #commitListeners = new Set<(head: JournalHead) => void>();
  #closing: Promise<void> | undefined;
  #closed = false;
  #releaseLock: ReleaseLock;

  private constructor(stores: JournalStores, realDir: string, releaseLock: ReleaseLock, opts: JournalOptions) {
    this.#stores = stores;
    this.#releaseLock = releaseLock;
    this.#realDir = realDir;
    this.#opts = opts;
    this.#signer = opts.signer ?? ephemeralSigningKey();
    this.#checkpointIntervalMs = opts.checkpointIntervalMs ?? CHECKPOINT_INTERVAL_MS;
    this.#head = readHeadFrom(stores);
    this.#epoch = (this.#head.epoch ?? 0) + 1;
    this.#endorser = endorserFor(stores.batches.get(this.#head.last_batch), this.#signer, opts.previousSigner, opts.log);
    this.#shipped = readShippedFrom(stores)?.batch ?? 0;
    this.#size = createJournalSize(stores, realDir, opts);
  }

  /**
   * Opens (creating if absent) the journal in `dir` and starts a boot epoch: its link, chained to
   * the last committed head, is committed at once. Throws AUDITMESH_JOURNAL_OPEN if it cannot open,
   * AUDITMESH_JOURNAL_LOCKED (naming the pid) if another process has it open for writing.
   */
  static open(dir: string, opts: JournalOptions = {}): Journal {
    let realDir: string;
    try {
      mkdirSync(dir, { recursive: true });
      realDir = realpathSync(dir);
    } catch (err) {
      throw openError(`cannot create journal folder ${dir}`, err);
    }
    // lmdb-js#164: a second environment on the same files in one process misbehaves.
    if (writerFor(realDir) !== undefined) throw openError(`journal ${realDir} is already open in this process`);
    // Before LMDB: a second writer process must not even open the environment for writing.
    const releaseLock = lockJournal(realDir);
    let stores: JournalStores;
    try {
      stores = openJournalStores(open({ path: realDir, ...LMDB_WRITER_OPTIONS }));
    } catch (err) {
      releaseLock();
      throw openError(`cannot open journal ${realDir}`, err);
    }
    registerWriter(realDir, stores);
    const journal = new Journal(stores, realDir, releaseLock, opts);
    journal.#requestLink();
    return journal;
  }

  /** false while the journal cannot be written: the last commit failed. */
  get writable(): boolean {
    return this.#writable;
  }

  /** true while the in-use size is at or over the limit. */
  get full(): boolean {
    return this.#size.full;
  }

  /** In-use bytes at the last sample. */
  get usedBytes(): number {
    return this.#size.usedBytes;
  }

  /** The last committed sequence and batch numbers, chain head and epoch. */
  get head(): JournalHead {
    return this.#head;
  }

  get keyId(): string {
    return this.#signer.keyId;
  }

  /** The key the journal's heads are signed with: the shipper signs its heartbeats with it too. */
  get signer(): SigningKey {
    return this.#signer;
  }

  /**
   * Stores the mesh CA's certificate (DER) of the journal key with the key: with `--ca-file`,
   * `verify` takes a certificate of the new key, for the previous key's identity, as endorsing a key change.
   */
  async recordCertificate(der: Uint8Array): Promise<void> {
    const { keys } = this.#stores;
    await keys.put(this.#signer.keyId, { ...keys.get(this.#signer.keyId), public_key: this.#signer.publicKeySpki.toString('base64'), certificate: Buffer.from(der).toString('base64') });
  }

  /** The last batch the collector acknowledged (0: none), as the shipper last reported it. */
  get shippedBatch(): number {
    return this.#shipped;
  }

  /**
   * The shipper's cursor: the collector holds every link through `batch`. It may move back (a
   * collector that lost data says so in its Welcome). Written with the next commit.
   */
  markShipped(batch: number): void {
    if (batch === this.#shipped) return;
    this.#shipped = batch;
    this.#shippedDirty = true;
  }

  /** Calls `listener` after every commit that moved the chain; returns the unsubscribe function. */
  onCommit(listener: (head: JournalHead) => void): () => void {
    this.#commitListeners.add(listener);
    return () => this.#commitListeners.delete(listener);
  }

  /** Runs a synchronous `read` over one read transaction of this environment (the in-process reader). */
  snapshot<T>(read: (snapshot: JournalSnapshot) => T): T {
    const stores = this.#openStores();
    const transaction = stores.env.useReadTransaction();
    try {
      return read({ stores, transaction });
    } finally {
      transaction.done();
    }
  }

  /**
   * Queues a batch, in sealing order, while its worker may still be busy with it. Resolves once
   * committed; rejects with AUDITMESH_JOURNAL_WRITE if the batch could not be sealed or written.
   */
  append(sealed: Promise<SealedBatch>, info: BatchInfo): Promise<CommittedBatch> {
    if (this.#closing !== undefined) return Promise.reject(journalError('journal is closed'));
    const committed = new Promise<CommittedBatch>((resolve, reject) => {
      const entry: Entry = { info, sealed: undefined, sealError: undefined, ready: false, resolve, reject };
      this.#queue.push(entry);
      sealed
        .then(
          (value) => (entry.sealed = value),
          (err: unknown) => (entry.sealError = err),
        )
        .finally(() => {
          entry.ready = true;
          this.#pump();
        });
    });
    // Entries settle in queue order, so the last one settling means everything before it has.
    this.#tail = committed.then(noop, noop);
    return committed;
  }

  /**
   * Upkeep, every maintenanceTickMs(checkpoint interval): samples the size, plans a retention
   * prune or, near the bound, a pressure prune of acknowledged links (it rides on the next commit), and commits a signed checkpoint when the interval would
   * otherwise pass without one, or a prune is due, or the journal is unwritable (the probe that
   * finds out it can be written again).
   */
  maintain(): void {
    if (this.#closing !== undefined) return;
    const { retentionMs, pruneOnlyShipped } = this.#opts;
    const { nowUnixMs, aheadMs } = this.#retentionClock.read();
    if (aheadMs > 0 !== this.#clockAhead) {
      this.#clockAhead = !this.#clockAhead;
      this.#opts.log?.(
        this.#clockAhead
          ? { level: 'warn', msg: 'wall clock stepped forward: retention ages records by elapsed time instead, so the step prunes nothing', ahead_ms: Math.round(aheadMs) }
          : { level: 'info', msg: 'wall clock back in step with elapsed time' },
      );
    }
    const through = pruneOnlyShipped === true ? this.#shipped : Number.POSITIVE_INFINITY;
    this.#size.sample(true);
    if (retentionMs !== undefined && this.#prune === null) this.#prune = planPrune(this.#stores, nowUnixMs - retentionMs, PRUNE_MAX_RECORDS_PER_COMMIT, through);
    // Only with a collector: without one nothing is acknowledged, and the journal is the only copy.
    const { limitBytes } = this.#opts;
    if (pruneOnlyShipped === true && limitBytes !== undefined && this.#prune === null) this.#prune = planPressurePrune(this.#stores, this.#size.usedBytes, limitBytes, this.#shipped, PRUNE_MAX_RECORDS_PER_COMMIT);
    const now = performance.now();
    const dueMs = this.#checkpointIntervalMs - maintenanceTickMs(this.#checkpointIntervalMs);
    if (!this.#writable || this.#prune !== null || now - this.#lastSignedAtMs >= dueMs) this.#requestLink();
    else if (this.#shippedDirty) {
      this.#shippedWanted = true;
      this.#pump();
    }
    if (now - this.#announcedAtMs >= dueMs) {
      this.#announcedAtMs = now;
      const { last_batch, last_seq, head } = this.#head;
      // The signed head, once per interval, where logs take it away from the journal: a later
      // checkpoint to verify against (`auditmesh verify --expect-head`) should the tail be cut.
      this.#opts.log?.({ level: 'info', msg: 'journal checkpoint', batch: last_batch, seq: last_seq, head, key: this.#signer.keyId });
    }
  }

  /** Reads through this environment: use this (or readJournal, which detects it) in-process. */
  read(opts?: RecordReadOptions): JournalRecord[] {
    return readRecordsFrom(this.#openStores(), opts);
  }

  readBatches(opts?: BatchReadOptions): BatchHeader[] {
    return readHeadersFrom(this.#openStores(), opts);
  }

  #openStores(): JournalStores {
    if (this.#closed) throw new Error(`journal ${this.#realDir} is closed: read it with readJournal(dir)`);
    return this.#stores;
  }

  /** Commits what is queued, then closes the environment. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await this.#tail;
      while (this.#writing !== undefined) await this.#writing;
      // The last acknowledgements, so the next start does not ship them again (never on a failing disk).
      if (this.#writable) await this.#writeShipped();
      await this.#stores.env.close();
      this.#closed = true;
      unregisterWriter(this.#realDir);
      this.#releaseLock();
    })();
    return this.#closing;
  }

  #requestLink(): void {
    this.#linkWanted = true;
    this.#pump();
  }

  /** Commits the ready prefix of the queue as one group, one commit at a time (FIFO). */
  #pump(): void {
    if (this.#writing !== undefined) return;
    let n = 0;
    while (n < this.#queue.length && this.#queue[n].ready) n++;
    if (n === 0 && !this.#linkWanted && !this.#shippedWanted) return;
    this.#shippedWanted = false;
    const wanted = this.#linkWanted;
    this.#linkWanted = false;
    const group = this.#queue.splice(0, n);
    this.#writing = this.#commitGroup(group, wanted)
      .catch((err: unknown) => {
        // A bug, not a disk failure: still settle every waiter (settling twice is a no-op).
        this.#opts.log?.({ level: 'error', msg: 'journal commit crashed', err: (err as Error)?.message });
        for (const entry of group) entry.reject(journalError('journal commit crashed', err));
      })
      .finally(() => {
        this.#writing = undefined;
        this.#pump();
      });
  }

  async #commitGroup(group: Entry[], linkWanted: boolean): Promise<void> {
    const entries: Sealed[] = [];
    for (const entry of group) {
      if (entry.sealed !== undefined) entries.push({ entry, sealed: entry.sealed });
      else this.#fail([entry], 'seal', entry.sealError);
    }
    if (entries.length === 0 && !linkWanted) return this.#writeShipped();
    const plan = planCommit({
      head: this.#head,
      epoch: this.#epoch,
      openEpoch: !this.#epochLinked,
      sealed: entries.map(({ sealed, entry }) => ({ count: sealed.records.length, root: sealed.root, sealedUnixMs: entry.info.sealedUnixMs })),
      nowUnixMs: Date.now(),
      signer: this.#signer,
      endorser: this.#epochLinked ? undefined : this.#endorser,
    });
    let prune = this.#prune;
    // The cursor moved back since the plan (a collector that lost data): keep what it lacks.
    if (prune !== null && this.#opts.pruneOnlyShipped === true && prune.mark.last_batch > this.#shipped) prune = this.#prune = null;
    let write: Promise<boolean> & { flushed?: PromiseLike<unknown> };
    try {
      write = this.#write(entries, plan, prune);
      await write;
    } catch (err) {
      // The cursor may have gone down with the failed commit: write it again later.
      this.#shippedDirty ||= this.#shipped !== (readShippedFrom(this.#stores)?.batch ?? 0);
      const cause = await rejectionOf((err as { commitError?: Promise<unknown> }).commitError, err, COMMIT_ERROR_WAIT_MS);
      this.#fail(entries.map((s) => s.entry), 'journal_write', cause);
      return;
    }
    this.#linked(plan, prune);
    this.#succeeded(entries, plan.headers.filter((h) => h.kind === 'records'), write.flushed ?? this.#stores.env.flushed);
  }

  /** One lmdb-js batch(): every put in the callback lands in the same LMDB transaction. */
  #write(entries: Sealed[], plan: CommitPlan, prune: PrunePlan | null): Promise<boolean> {
    const stores = this.#stores;
    return stores.env.batch(() => {
      let b = 0;
      for (const header of plan.headers) {
        if (header.kind === 'records') {
          const bytes = entries[b++].sealed.records;
          for (let i = 0; i < bytes.length; i++) void stores.records.put(header.first_seq + i, bytes[i]);
        } else if (header.kind === 'epoch') {
          // A certificate stored before the epoch link landed (recordCertificate) stays.
          void stores.keys.put(this.#signer.keyId, { ...stores.keys.get(this.#signer.keyId), public_key: this.#signer.publicKeySpki.toString('base64') });
        }
        void stores.batches.put(header.batch, header);
      }
      void stores.meta.put(HEAD_KEY, plan.head);
      this.#putShipped();
      if (prune !== null) {
        applyPrune(stores, prune);
        void stores.meta.put(PRUNED_KEY, signPruneMark(prune.mark, this.#signer));
      }
    });
  }

  /** Puts the shipper's cursor if it changed; inside a write transaction (before it commits). */
  #putShipped(): void {
    if (!this.#shippedDirty) return;
    this.#shippedDirty = false;
    void this.#stores.meta.put(SHIPPED_KEY, { batch: this.#shipped });
  }

  /** A commit that carries only the shipper's cursor: no link, so nothing new to ship. */
  async #writeShipped(): Promise<void> {
    if (!this.#shippedDirty) return;
    try {
      await this.#stores.env.batch(() => this.#putShipped());
    } catch (err) {
      // The cursor only spares re-shipping after a restart; the collector's Welcome is authoritative.
      // Tried again at the next maintenance tick, not at once: a failing disk must not spin.
      this.#shippedDirty = true;
      this.#opts.log?.({ level: 'warn', msg: 'journal could not write the shipped cursor', err: (err as Error)?.message });
    }
  }

  /** The chain moved on: new head, epoch linked, prune done, a fresh signature. */
  #linked(plan: CommitPlan, prune: PrunePlan | null): void {
    const { metrics, log } = this.#opts;
    this.#head = plan.head;
    this.#lastSignedAtMs = performance.now();
    if (!this.#epochLinked) {
      this.#epochLinked = true;
      const endorsedBy = plan.headers[0].endorsed_by;
      log?.({ level: 'info', msg: 'journal epoch opened', epoch: this.#epoch, key: this.#signer.keyId, batch: plan.headers[0].batch, next_seq: plan.headers[0].first_seq, ...(endorsedBy === undefined ? {} : { endorsed_by: endorsedBy }) });
      this.#opts.onEpochLinked?.(endorsedBy);
    }
    for (const listener of this.#commitListeners) {
      try {
        listener(plan.head);
      } catch (err) {
        log?.({ level: 'error', msg: 'journal commit listener threw', err: (err as Error)?.message });
      }
    }
    if (prune !== null && prune === this.#prune) {
      this.#prune = null;
      metrics?.journalPrunedRecords.inc(prune.records);
      const msg = prune.cause === 'retention' ? 'journal pruned by retention' : 'journal near its bound: pruned the oldest acknowledged records';
      log?.({ level: 'info', msg, records: prune.records, through_batch: prune.mark.last_batch, through_seq: prune.mark.last_seq, used_bytes: this.#size.usedBytes });
      this.#size.sample(true);
    } else {
      this.#size.sample(false);
    }
  }

  #succeeded(entries: Sealed[], headers: BatchHeader[], flushed: PromiseLike<unknown>): void {
    const { metrics } = this.#opts;
    const now = performance.now();
    if (!this.#writable) this.#recover();
    else this.#failing.clear();
    for (let b = 0; b < entries.length; b++) {
      const { count, first_seq, batch } = headers[b];
      metrics?.journalRecords.inc({ result: 'written' }, count);
      metrics?.journalCommitDuration.observe((now - entries[b].entry.info.sealedAtMs) / 1000);
      entries[b].entry.resolve({ batch, firstSeq: first_seq, count, flushed });
    }
  }

  /** A commit landed after failures: writable again if there is room to stay so. */
  #recover(): void {
    if (!this.#size.hasRecoveryRoom()) return;
    this.#writable = true;
    this.#failing.clear();
    this.#opts.log?.({ level: 'info', msg: 'journal writable again', last_seq: this.#head.last_seq, used_bytes: this.#size.usedBytes });
  }

  #fail(entries: Entry[], reason: FailureReason, cause: unknown): void {
    const { metrics, log } = this.#opts;
    if (reason === 'journal_write') this.#writable = false;
    if (!this.#failing.has(reason)) {
      this.#failing.add(reason);
      const err = cause as { message?: string; code?: unknown } | undefined;
      // Once per failure streak: a broken disk must not turn into a log flood at the record rate.
      log?.({ level: 'error', msg: 'journal commit failed: audit records in it are lost', reason, err: err?.message, code: err?.code });
    }
    for (const entry of entries) {
      metrics?.journalRecords.inc({ result: 'failed' }, entry.info.count);
      metrics?.journalUnrecorded.inc({ reason }, entry.info.count);
      entry.reject(journalError(reason === 'seal' ? 'audit batch could not be sealed' : 'audit journal write failed', cause));
    }
  }
}
