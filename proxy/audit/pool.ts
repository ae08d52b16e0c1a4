import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { SealOutcome, SealWorkerData } from './workers/seal-batch.js';

/**
 * The hashing pool: piscina workers that seal batches (canonical bytes, leaf hashes, Merkle
 * root). One task per batch, never per record: a task round trip costs tens of microseconds of
 * main-thread time (bench/README.md, "Figures behind the code").
 */

/** A batch as the journal stores it. */
export interface SealedBatch {
  /** Each record's canonical bytes (UTF-8 JSON), views into one transferred buffer. */
  readonly records: Buffer[];
  /** Merkle root over the records' leaf hashes, lowercase hex. */
  readonly root: string;
}

export interface SealPool {
  /**
   * Seals a batch encoded by encodeRecords. The buffer is transferred to the worker: it is
   * unusable here afterwards. Rejects, with code AUDITMESH_SEAL_FAILED, if it cannot.
   */
  seal(records: Buffer): Promise<SealedBatch>;
  /** Batches waiting for a worker. */
  readonly queueSize: number;
  /** Lets running tasks finish, then stops the workers. Idempotent. */
  close(): Promise<void>;
}

export interface SealPoolOptions {
  threads: number;
  /**
   * Test-only fault injection (test/faults.test.ts): while this file exists, the first worker to
   * delete it dies mid-batch, as a worker would on a crash. Undefined in production.
   */
  sealCrashFile?: string;
}

/**
 * Piscina only finds a TypeScript worker by a path that exists, so the worker gets the calling
 * module's own extension: `.ts` under tsx (tests, whose workers inherit `--import=tsx` through
 * execArgv), `.js` when running from build/.
 */
function workerFilename(): string {
  const ext = extname(fileURLToPath(import.meta.url));
  return fileURLToPath(new URL(`./workers/seal-batch${ext}`, import.meta.url));
}

function sealError(message: string, cause?: unknown): Error {
  return Object.assign(new Error(message, { cause }), { code: 'AUDITMESH_SEAL_FAILED' });
}

/** Rebuilds per-record views over the transferred buffer: no copy on the main thread. */
function toSealedBatch(outcome: SealOutcome): SealedBatch {
  if (!outcome.ok) throw sealError(`sealing worker refused the batch: ${outcome.error}`);
  const { bytes, offsets, root } = outcome;
  const records = new Array<Buffer>(offsets.length - 1);
  // Each record starts after its separator byte (seal-batch.ts).
  for (let i = 0; i < records.length; i++) records[i] = Buffer.from(bytes, offsets[i] + 1, offsets[i + 1] - offsets[i] - 1);
  return { records, root };
}

/**
 * A batch as the sealing worker takes it: each record's canonical bytes (JSON.stringify, keys in
 * insertion order, UTF-8) preceded by a newline byte, in one buffer of its own that can be
 * transferred rather than copied. A record that cannot be encoded (a BigInt, a cycle: a bug
 * upstream) is left out alone and reported in `dropped`.
 */
export function encodeRecords<T>(records: readonly T[]): { bytes: Buffer; kept: T[]; dropped: unknown[] } {
  const texts: string[] = [];
  const kept: T[] = [];
  const dropped: unknown[] = [];
  let size = 0;
  for (const rec of records) {
    try {
      const text = JSON.stringify(rec);
      size += 1 + Buffer.byteLength(text);
      texts.push(text);
      kept.push(rec);
    } catch (err) {
      dropped.push(err);
    }
  }
  // allocUnsafeSlow: a dedicated ArrayBuffer (not the shared pool slab), so it can be transferred.
  const bytes = Buffer.allocUnsafeSlow(size);
  let at = 0;
  for (const text of texts) {
    bytes[at++] = 0x0a;
    at += bytes.write(text, at, 'utf8');
  }
  return { bytes, kept, dropped };
}

export function createSealPool(opts: SealPoolOptions): SealPool {
  const pool = new Piscina<ArrayBuffer, SealOutcome>({
    filename: workerFilename(),
    workerData: { crashFile: opts.sealCrashFile } satisfies SealWorkerData,
    minThreads: opts.threads,
    maxThreads: opts.threads,
    // Workers stay up for the life of the sidecar: starting one costs tens of milliseconds.
    idleTimeout: Number.POSITIVE_INFINITY,
  });
  let closing: Promise<void> | undefined;
  return {
    seal(records) {
      if (closing !== undefined) return Promise.reject(sealError('sealing pool is closed'));
      // Transferred, not cloned: posting a copy of every batch cost the event loop more than encoding it.
      const buffer = records.buffer as ArrayBuffer;
      if (records.byteOffset !== 0 || records.length !== buffer.byteLength) return Promise.reject(sealError('a batch must own its whole buffer (encodeRecords)'));
      // The one place anything thrown in a worker is wrapped (STYLE.md: errors at the pool boundary).
      return pool.run(buffer, { transferList: [buffer] }).then(toSealedBatch, (err: unknown) => {
        throw sealError('sealing worker failed', err);
      });
    },
    get queueSize() {
      return pool.queueSize;
    },
    close() {
      closing ??= pool.close();
      return closing;
    },
  };
}
