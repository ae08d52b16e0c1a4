import { mkdirSync, realpathSync } from 'node:fs';
import { open } from 'lmdb';
import { ProxyError } from '../errors.js';
import type { SidecarMetrics } from '../metrics/metrics.js';
import type { SealedBatch } from '../audit/pool.js';
import type { JournalRecord } from '../audit/record.js';
import { HEAD_KEY, openJournalStores, readHeadFrom, readHeadersFrom, readRecordsFrom, registerWriter, unregisterWriter, writerFor } from './read-journal.js';
import type { BatchHeader, BatchReadOptions, JournalHead, JournalStores, RecordReadOptions } from './read-journal.js';

/**
 * The LMDB journal, single writer. Batches commit strictly in the order they were sealed, a
 * batch's records, its header and the new head in one transaction, so a batch is all there or
 * not at all. One commit at a time; batches that become ready meanwhile share the next one (group
 * commit). Sequence numbers are assigned at commit, so they stay contiguous across failed
 * commits and restarts.
 */

/** lmdb-js settles a failed commit's `commitError` right after the rejection; bounded anyway. */
const COMMIT_ERROR_WAIT_MS = 100;

export interface JournalOptions {
  metrics?: SidecarMetrics;
  log?: (line: Record<string, unknown>) => void;
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

/** Resolves with the promise's rejection reason, or `fallback` if it has none within waitMs. */
function rejectionOf(promise: PromiseLike<unknown> | undefined, fallback: unknown, waitMs: number): Promise<unknown> {
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

export class Journal {
  #stores: JournalStores;
  #realDir: string;
  #opts: JournalOptions;
  #head: JournalHead;
  #queue: Entry[] = [];
  #writing = false;
  #writable = true;
  #failing = new Set<FailureReason>();
  #tail: Promise<unknown> = Promise.resolve();
  #closing: Promise<void> | undefined;
  #closed = false;

  private constructor(stores: JournalStores, realDir: string, opts: JournalOptions) {
    this.#stores = stores;
    this.#realDir = realDir;
    this.#opts = opts;
    this.#head = readHeadFrom(stores);
  }

  /** Opens (creating if absent) the journal in `dir`. Throws AUDITMESH_JOURNAL_OPEN if it cannot. */
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
    // eventTurnBatching off: with it on, lmdb-js 3.5 drops a promise it created for the event
    // turn, and a failed commit surfaces as an unhandled rejection that kills the process. Each
    // commit here is one explicit batch() instead. separateFlushed: each commit carries its own
    // `flushed`, because db.flushed never settles once any later commit fails.
    let stores: JournalStores;
    try {
      stores = openJournalStores(open({ path: realDir, eventTurnBatching: false, separateFlushed: true }));
    } catch (err) {
      throw openError(`cannot open journal ${realDir}`, err);
    }
    registerWriter(realDir, stores);
    return new Journal(stores, realDir, opts);
  }

  /** false while the journal cannot be written: the last commit failed. */
  get writable(): boolean {
    return this.#writable;
  }

  /** The last committed sequence and batch numbers. */
  get head(): JournalHead {
    return this.#head;
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
      await this.#stores.env.close();
      this.#closed = true;
      unregisterWriter(this.#realDir);
    })();
    return this.#closing;
  }

  /** Commits the ready prefix of the queue as one group, one commit at a time (FIFO). */
  #pump(): void {
    if (this.#writing) return;
    let n = 0;
    while (n < this.#queue.length && this.#queue[n].ready) n++;
    if (n === 0) return;
    const group = this.#queue.splice(0, n);
    this.#writing = true;
    this.#commitGroup(group)
      .catch((err: unknown) => {
        // A bug, not a disk failure: still settle every waiter (settling twice is a no-op).
        this.#opts.log?.({ level: 'error', msg: 'journal commit crashed', err: (err as Error)?.message });
        for (const entry of group) entry.reject(journalError('journal commit crashed', err));
      })
      .finally(() => {
        this.#writing = false;
        this.#pump();
      });
  }

  async #commitGroup(group: Entry[]): Promise<void> {
    const entries: Sealed[] = [];
    for (const entry of group) {
      if (entry.sealed !== undefined) entries.push({ entry, sealed: entry.sealed });
      else this.#fail([entry], 'seal', entry.sealError);
    }
    if (entries.length === 0) return;
    const headers = this.#plan(entries);
    const last = headers[headers.length - 1];
    const head: JournalHead = { last_seq: last.first_seq + last.count - 1, last_batch: last.batch };
    let write: Promise<boolean> & { flushed?: PromiseLike<unknown> };
    try {
      write = this.#write(entries, headers, head);
      await write;
    } catch (err) {
      const cause = await rejectionOf((err as { commitError?: Promise<unknown> }).commitError, err, COMMIT_ERROR_WAIT_MS);
      this.#fail(entries.map((s) => s.entry), 'journal_write', cause);
      return;
    }
    this.#head = head;
    this.#succeeded(entries, headers, write.flushed ?? this.#stores.env.flushed);
  }

  /** Numbers the batches of a group, continuing from the last committed head. */
  #plan(entries: Sealed[]): BatchHeader[] {
    let seq = this.#head.last_seq;
    let batch = this.#head.last_batch;
    return entries.map(({ sealed, entry }) => {
      const count = sealed.records.length;
      const header: BatchHeader = { batch: ++batch, first_seq: seq + 1, count, root: sealed.root, sealed_unix_ms: entry.info.sealedUnixMs };
      seq += count;
      return header;
    });
  }

  /** One lmdb-js batch(): every put in the callback lands in the same LMDB transaction. */
  #write(entries: Sealed[], headers: BatchHeader[], head: JournalHead): Promise<boolean> {
    const { env, records, batches, meta } = this.#stores;
    return env.batch(() => {
      for (let b = 0; b < entries.length; b++) {
        const bytes = entries[b].sealed.records;
        const first = headers[b].first_seq;
        for (let i = 0; i < bytes.length; i++) void records.put(first + i, bytes[i]);
        void batches.put(headers[b].batch, headers[b]);
      }
      void meta.put(HEAD_KEY, head);
    });
  }

  #succeeded(entries: Sealed[], headers: BatchHeader[], flushed: PromiseLike<unknown>): void {
    const { metrics, log } = this.#opts;
    const now = performance.now();
    if (!this.#writable) log?.({ level: 'info', msg: 'journal writable again', last_seq: this.#head.last_seq });
    this.#writable = true;
    this.#failing.clear();
    for (let b = 0; b < entries.length; b++) {
      const { count, first_seq, batch } = headers[b];
      metrics?.journalRecords.inc({ result: 'written' }, count);
      metrics?.journalCommitDuration.observe((now - entries[b].entry.info.sealedAtMs) / 1000);
      entries[b].entry.resolve({ batch, firstSeq: first_seq, count, flushed });
    }
  }

  #fail(entries: Entry[], reason: FailureReason, cause: unknown): void {
    const { metrics, log } = this.#opts;
    if (reason === 'journal_write') this.#writable = false;
    if (!this.#failing.has(reason)) {
      this.#failing.add(reason);
      const err = cause as { message?: string; code?: unknown } | undefined;
      // Once per failure streak: a broken disk must not turn into a log flood at the record rate.
      log?.({ level: 'error', msg: 'audit records lost: journal batch not written', reason, err: err?.message, code: err?.code });
    }
    for (const entry of entries) {
      metrics?.journalRecords.inc({ result: 'failed' }, entry.info.count);
      metrics?.journalUnrecorded.inc({ reason }, entry.info.count);
      entry.reject(journalError(reason === 'seal' ? 'audit batch could not be sealed' : 'audit journal write failed', cause));
    }
  }
}
