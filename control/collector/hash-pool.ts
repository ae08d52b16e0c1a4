import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { received, type EncodedBatch } from './encoded-batch.js';
import type { HashOutcome, HashTask } from './workers/hash-segment.js';

/**
 * The collector's hashing pool: piscina workers that hash and index a segment's records
 * (workers/hash-segment.ts), and encode each batch for the store. One task per segment, so a task's round trip is shared by thousands
 * of records; the records go over in one transferred buffer, one copy each on the main thread.
 */

/** What the worker computed for a segment's records links, in order. */
export interface HashedSegment {
  /** Per records link, its Merkle root. */
  roots: string[];
  /** Per records link, its records' leaf hashes (32 bytes each, concatenated). */
  leaves: Buffer[];
  /** Per records link, its batch encoded for the store. */
  batches: EncodedBatch[];
}

/** A records link to hash: its place in the chain and its records' canonical bytes. */
export interface LinkToHash {
  batch: number;
  firstSeq: number;
  records: readonly Uint8Array[];
}

export interface HashPool {
  /** Hashes, indexes and encodes the records of each records link of sidecar `sidecar`. */
  hash(sidecar: string, links: readonly LinkToHash[]): Promise<HashedSegment>;
  close(): Promise<void>;
}

/**
 * Workers by default: one per core, at least two, at most four. A worker sits idle while its
 * segment's results travel back and the event loop verifies and writes them; a second one hashes
 * the next segment meanwhile. On 2 CPUs (bench/ingest.ts, 2 interleaved rounds) two workers took
 * ingest from 78,924 / 81,824 to 90,783 / 85,413 records/s.
 */
export function defaultHashThreads(): number {
  return Math.max(2, Math.min(4, availableParallelism()));
}

/** Same extension as this module: `.ts` under tsx (tests), `.js` from build/ (piscina needs a path that exists). */
function workerFilename(): string {
  const ext = extname(fileURLToPath(import.meta.url));
  return fileURLToPath(new URL(`./workers/hash-segment${ext}`, import.meta.url));
}

/** One buffer: a spare byte before each record (the leaf prefix goes there), and the offsets of those bytes. */
function packRecords(sidecar: string, links: readonly LinkToHash[]): HashTask {
  let n = 0;
  let size = 0;
  for (const { records } of links) {
    n += records.length;
    for (const r of records) size += 1 + r.length;
  }
  const bytes = Buffer.allocUnsafeSlow(size);
  const offsets = new Uint32Array(n + 1);
  let at = 0;
  let i = 0;
  for (const { records } of links) {
    for (const r of records) {
      offsets[i++] = at;
      bytes.set(r, at + 1);
      at += 1 + r.length;
    }
  }
  offsets[n] = at;
  return { bytes: bytes.buffer as ArrayBuffer, offsets, sidecar, links: links.map((l) => ({ batch: l.batch, firstSeq: l.firstSeq, count: l.records.length })) };
}

export function createHashPool(threads = defaultHashThreads()): HashPool {
  const pool = new Piscina<HashTask, HashOutcome>({ filename: workerFilename(), minThreads: threads, maxThreads: threads, idleTimeout: Number.POSITIVE_INFINITY });
  return {
    async hash(sidecar, links) {
      const task = packRecords(sidecar, links);
      const out = await pool.run(task, { transferList: [task.bytes, task.offsets.buffer as ArrayBuffer] });
      if (!out.ok) throw new Error(`hashing worker refused the segment: ${out.error}`);
      const all = Buffer.from(out.leaves);
      const leaves: Buffer[] = [];
      for (let at = 0, k = 0; k < links.length; at += links[k++].records.length) leaves.push(all.subarray(at * 32, (at + links[k].records.length) * 32));
      return { roots: out.roots, leaves, batches: out.batches.map(received) };
    },
    close: () => pool.close(),
  };
}
