import { chainKeyOf } from '../store/chain-key.js';
import type { Database } from 'lmdb';
import { Counter, Gauge, type Registry } from 'prom-client';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { Logger } from '../../../command/log.js';
import { initialiseLabels } from '../../../command/label-values.js';
import type { SidecarState, StoredLink } from '../collector-store.js';
import type { CollectorStores } from '../store/store-layout.js';
import type { OtlpTransportConfig } from './otlp-transport.js';
import type { ExportChunkOutcome, ExportChunkTask } from './workers/export-chunk.js';

/**
 * `--export-otlp`: the stored records, exported as OpenTelemetry logs, at least once. The store
 * is the buffer: the exporter reads each sidecar's chain from its cursor (the last batch the
 * receiver accepted, kept in the store's `export_cursor` database and advanced only after an
 * accepted export), so a restart or a receiver away for hours resumes where it stopped and
 * loses nothing. Ingest never waits for it: a stored run only wakes it. Retention prunes
 * nothing it has not exported (exportedThrough). A crash between an accepted export and its
 * cursor write sends those records again (`log.record.uid` tells them apart).
 *
 * Mapping a record to a log record and encoding it costs tens of microseconds; at full ingest
 * that would take the event loop from ingest, so worker threads (workers/export-chunk.ts) each hold
 * the official exporter and do both, and the event loop only reads stored batches and moves
 * cursors. While a worker maps and sends one chunk, the event loop reads the next one.
 */

/** Records per export request at most (a batch is never split: one larger batch goes alone). */
export const MAX_EXPORT_RECORDS = 4096;
/** Export workers: two, so that the mapping of one chunk is not the limit (it uses CPU the event loop and the hashing pool leave idle). */
export const EXPORT_THREADS = 2;
/** Chunks with the workers at once: per worker, one mapped while the one before is on the wire. */
export const EXPORT_CHUNKS_IN_FLIGHT = 2 * EXPORT_THREADS;
/** Without a wake-up, the exporter looks for new records this often. */
export const EXPORT_POLL_MS = 1_000;
/** Retry after a failed export: doubling from the first to the last. */
export const EXPORT_RETRY_MIN_MS = 250;
export const EXPORT_RETRY_MAX_MS = 30_000;

export const EXPORT_FAILURE_REASONS = ['export', 'store'] as const;

/** How far a sidecar's chain is exported: its last batch and the last sequence number in it or before. */
export interface ExportCursor {
  batch: number;
  seq: number;
}

export interface OtlpExportOptions {
  transport: OtlpTransportConfig;
  registry: Registry;
  log: Logger;
  pollMs?: number;
  retryMaxMs?: number;
  /** Told when a cursor moved (so retention may prune what is now exported). */
  onExported?(): void;
}

export interface OtlpExport {
  /** The last batch of the sidecar the receiver accepted (0: none yet). */
  exportedThrough(sidecar: string): number;
  /** New records were stored: look now. */
  wake(): void;
  /** Records stored and not yet exported, over every sidecar. */
  lagRecords(): number;
  close(): Promise<void>;
}

export function createOtlpExport(stores: CollectorStores, opts: OtlpExportOptions): OtlpExport {
  const cursors: Database<ExportCursor, string> = stores.env.openDB<ExportCursor, string>('export_cursor', { encoding: 'msgpack' });
  const worker = new Piscina<ExportChunkTask, ExportChunkOutcome>({ filename: workerFilename(), workerData: opts.transport, minThreads: EXPORT_THREADS, maxThreads: EXPORT_THREADS, concurrentTasksPerWorker: EXPORT_CHUNKS_IN_FLIGHT / EXPORT_THREADS, idleTimeout: Number.POSITIVE_INFINITY });
  const through = new Map<string, number>(Array.from(cursors.getRange(), ({ key, value }) => [key, value.batch]));
  let closed = false;
  let wakeUp: (() => void) | undefined;
  let woken = false;

  const cursorOf = (id: string): ExportCursor => {
    const c = cursors.get(id);
    if (c !== undefined) return c;
    // Never exported: from the first link held (after any pruning), whose first seq tells where the count starts.
    for (const { value } of stores.links.getRange({ start: [id, 0], end: [id, Number.MAX_SAFE_INTEGER], limit: 1 })) return { batch: value.batch - 1, seq: value.first_seq - 1 };
    return { batch: 0, seq: 0 };
  };

  const lagOf = (state: SidecarState): { records: number; oldestUnixMs: number | undefined } => {
    const c = cursorOf(chainKeyOf(state));
    if (c.batch >= state.position.last_batch) return { records: 0, oldestUnixMs: undefined };
    let oldestUnixMs: number | undefined;
    for (const { value } of stores.links.getRange({ start: [chainKeyOf(state), c.batch + 1], end: [chainKeyOf(state), Number.MAX_SAFE_INTEGER], limit: 1 })) oldestUnixMs = value.sealed_unix_ms;
    return { records: Math.max(0, (state.position.last_seq ?? c.seq) - c.seq), oldestUnixMs };
  };
  const lag = (): { records: number; seconds: number } => {
    let records = 0;
    let oldest = Number.POSITIVE_INFINITY;
    for (const { value } of stores.sidecars.getRange()) {
      const l = lagOf(value);
      records += l.records;
      if (l.oldestUnixMs !== undefined) oldest = Math.min(oldest, l.oldestUnixMs);
    }
    return { records, seconds: Number.isFinite(oldest) ? Math.max(0, (Date.now() - oldest) / 1000) : 0 };
  };
  const metrics = createExportMetrics(opts.registry, lag);

  /**
   * The next links of a sidecar after its cursor, up to MAX_EXPORT_RECORDS records, and a task
   * for the worker holding their stored batches as they are (the worker maps and sends them).
   */
  const nextChunk = (state: SidecarState, c: ExportCursor): { last: StoredLink | undefined; seq: number; task: ExportChunkTask | undefined } => {
    const key = chainKeyOf(state);
    const values: Buffer[] = [];
    const batches: ExportChunkTask['batches'] = [];
    let records = 0;
    let size = 0;
    let last: StoredLink | undefined;
    let seq = c.seq;
    for (const { value: l } of stores.links.getRange({ start: [key, c.batch + 1], end: [key, Number.MAX_SAFE_INTEGER] })) {
      if (l.kind === 'records') {
        if (records > 0 && records + l.count > MAX_EXPORT_RECORDS) break;
        const bytes = stores.batches.get([key, l.batch]);
        if (bytes === undefined) throw new Error(`batch ${l.batch} of sidecar ${key} has a link but no records`);
        values.push(bytes);
        size += bytes.length;
        const identity = stores.identities.get([key, l.batch]);
        batches.push({ end: size, sealedUnixMs: l.sealed_unix_ms, ...(identity === undefined ? {} : { identity }) });
        records += l.count;
        seq = l.first_seq + l.count - 1;
      }
      last = l;
    }
    if (batches.length === 0) return { last, seq, task: undefined };
    const blobs = Buffer.allocUnsafeSlow(size);
    let at = 0;
    for (const v of values) at += v.copy(blobs, at);
    return { last, seq, task: { sidecar: { id: state.id, incarnation: state.incarnation ?? '', service: state.service, key_id: state.key_id }, blobs: blobs.buffer as ArrayBuffer, batches } };
  };

  /** The worker's outcome for a chunk; never rejects (a worker that died is a failed export, sent again from the cursor). */
  const send = (task: ExportChunkTask | undefined): Promise<ExportChunkOutcome> =>
    task === undefined
      ? Promise.resolve({ ok: true, exported: 0 })
      : worker.run(task, { transferList: [task.blobs] }).catch((err: unknown) => ({ ok: false as const, error: (err as Error)?.message ?? String(err), stage: 'export' as const }));

  /**
   * One pass over every sidecar, each up to where its chain ended when the pass reached it; true
   * if anything moved. Up to EXPORT_CHUNKS_IN_FLIGHT chunks are with the worker at once (it maps
   * one while another is on the wire), and cursors move in order, each only once its chunk and
   * every one before it were accepted. Throws, tagged, on the first failure.
   */
  const pass = async (): Promise<boolean> => {
    let moved = false;
    const inFlight: Array<{ key: string; cursor: ExportCursor; outcome: Promise<ExportChunkOutcome> }> = [];
    const settle = async (): Promise<void> => {
      const { key, cursor, outcome } = inFlight.shift()!;
      const out = await outcome;
      if (!out.ok) throw Object.assign(new Error(out.error), { reason: out.stage });
      metrics.exported.inc(out.exported);
      await tagged('store', () => cursors.put(key, cursor));
      through.set(key, cursor.batch);
      moved = true;
    };
    try {
      for (const { value: state } of stores.sidecars.getRange()) {
        const key = chainKeyOf(state);
        let c = cursorOf(key);
        while (!closed && c.batch < state.position.last_batch) {
          const { last, seq, task } = tagged('store', () => nextChunk(state, c));
          if (last === undefined) break;
          c = { batch: last.batch, seq };
          inFlight.push({ key, cursor: c, outcome: send(task) });
          if (inFlight.length >= EXPORT_CHUNKS_IN_FLIGHT) await settle();
        }
        if (closed) break;
      }
      while (inFlight.length > 0) await settle();
    } finally {
      // After a failure the chunks still out are not waited for: their records are sent again from the cursor.
      if (moved) opts.onExported?.();
    }
    return moved;
  };

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      if (woken || closed) return resolve();
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        wakeUp = undefined;
        resolve();
      }
      wakeUp = done;
    });

  const loop = (async () => {
    let retryMs = EXPORT_RETRY_MIN_MS;
    let failing = false;
    while (!closed) {
      woken = false;
      try {
        if (await pass()) continue;
        if (failing) opts.log('info', 'OTLP export resumed', {});
        failing = false;
        retryMs = EXPORT_RETRY_MIN_MS;
        await sleep(opts.pollMs ?? EXPORT_POLL_MS);
      } catch (err) {
        const reason = (err as { reason?: (typeof EXPORT_FAILURE_REASONS)[number] }).reason ?? 'export';
        metrics.failures.inc({ reason });
        if (!failing) opts.log('warn', 'OTLP export failed: the records stay in the store and are sent again', { reason, err: (err as Error)?.message, retry_ms: retryMs });
        failing = true;
        woken = false;
        await sleep(retryMs);
        retryMs = Math.min(retryMs * 2, opts.retryMaxMs ?? EXPORT_RETRY_MAX_MS);
      }
    }
  })();

  return {
    exportedThrough: (sidecar) => through.get(sidecar) ?? 0,
    wake() {
      woken = true;
      wakeUp?.();
    },
    lagRecords: () => lag().records,
    async close() {
      closed = true;
      wakeUp?.();
      await loop;
      // Every export was awaited: nothing is buffered in a worker, and ending the threads closes their connections.
      await worker.close();
    },
  };
}

/** Same extension as this module: `.ts` under tsx (tests), `.js` from build/ (piscina needs a path that exists). */
function workerFilename(): string {
  const ext = extname(fileURLToPath(import.meta.url));
  return fileURLToPath(new URL(`./workers/export-chunk${ext}`, import.meta.url));
}

function tagged<T>(reason: 'store', f: () => T): T {
  try {
    const out = f();
    if (out instanceof Promise) return out.catch((err: unknown) => Promise.reject(Object.assign(err as Error, { reason }))) as T;
    return out;
  } catch (err) {
    throw Object.assign(err as Error, { reason });
  }
}

function createExportMetrics(registry: Registry, lag: () => { records: number; seconds: number }) {
  const failures = new Counter({ name: 'auditmesh_collector_export_failures_total', help: 'OTLP exports that failed, by reason: export (the receiver refused or was out of reach), store (reading the store or writing the cursor failed); retried from the cursor', labelNames: ['reason'], registers: [registry] });
  initialiseLabels(failures, 'reason', EXPORT_FAILURE_REASONS);
  new Gauge({
    name: 'auditmesh_collector_export_lag_records',
    help: 'Records stored and not yet accepted by the OTLP receiver',
    registers: [registry],
    collect() {
      this.set(lag().records);
    },
  });
  new Gauge({
    name: 'auditmesh_collector_export_lag_seconds',
    help: 'Age of the oldest batch stored and not yet accepted by the OTLP receiver (by when its sidecar sealed it); 0 when none waits',
    registers: [registry],
    collect() {
      this.set(lag().seconds);
    },
  });
  return { failures, exported: new Counter({ name: 'auditmesh_collector_exported_records_total', help: 'Records the OTLP receiver accepted (at least once: a record may be sent again after a restart)', registers: [registry] }) };
}
