import { availableParallelism } from 'node:os';
import { extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { BatchBlob } from '../store/batch-blob.js';
import { received, type EncodedBatch } from '../store/encoded-batch.js';
import type { HashOutcome, HashTask } from './workers/hash-segment.js';

/**
 * The collector's hashing pool: piscina workers that hash and index a segment's records and
 * encode each batch for the store (workers/hash-segment.ts). One task per segment, so a task's
 * round trip is shared by thousands of records; the records go over in one transferred buffer:
 * the received message's own when they are views into it (inPlace), else a copy.
 */

/** What the worker computed for a segment's records links, in order. */
export interface HashedSegment {
  /** Per records link, its Merkle root. */
  roots: string[];
  /** Per records link, its records' leaf hashes (32 bytes each, concatenated). */
  leaves: Buffer[];
  /** Per records link, its batch encoded for the store. */
  batches: EncodedBatch[];
  /** Makes the records given to hash() readable again (hashing may have taken their bytes away): for evidence of a refusal. */
  restore(): void;
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
 * the next segment meanwhile, which measured faster even on 2 CPUs (bench/README.md, "Figures behind the code").
 */
export function defaultHashThreads(): number {
  return Math.max(2, Math.min(4, availableParallelism()));
}

/** Same extension as this module: `.ts` under tsx (tests), `.js` from build/ (piscina needs a path that exists). */
function workerFilename(): string {
  const ext = extname(fileURLToPath(import.meta.url));
  return fileURLToPath(new URL(`./workers/hash-segment${ext}`, import.meta.url));
}

/** The records in one new buffer, a spare byte before each (the leaf prefix goes there). */
function packRecords(sidecar: string, links: readonly LinkToHash[]): HashTask {
  let n = 0;
  let size = 0;
  for (const { records } of links) {
    n += records.length;
    for (const r of records) size += 1 + r.length;
  }
  const bytes = Buffer.allocUnsafeSlow(size);
  const slots = new Uint32Array(n);
  const ends = new Uint32Array(n);
  let at = 0;
  let i = 0;
  for (const { records } of links) {
    for (const r of records) {
      slots[i] = at;
      bytes.set(r, at + 1);
      ends[i++] = at += 1 + r.length;
    }
  }
  return { bytes: bytes.buffer as ArrayBuffer, slots, ends, sidecar, links: linksOf(links) };
}

const linksOf = (links: readonly LinkToHash[]): HashTask['links'] => links.map((l) => ({ batch: l.batch, firstSeq: l.firstSeq, count: l.records.length }));

/**
 * The records where they already are, when every one is a view into the same received message
 * (grpc-js gathers each message into a buffer of its own, and the protobuf decoder cuts bytes
 * fields out of it as views): the message's buffer is handed to the worker as it is, and each
 * record's spare byte is the last byte of the length that precedes it in the message. Null when
 * the records are not laid out so (then they are packed): in the shared pool of small buffers, or
 * out of order.
 */
function inPlace(sidecar: string, links: readonly LinkToHash[]): HashTask | null {
  const buffer = links.find((l) => l.records.length > 0)?.records[0].buffer;
  // Pool slices are exactly Buffer.poolSize; a message of its own larger than that is not one.
  if (!(buffer instanceof ArrayBuffer) || buffer.byteLength <= Buffer.poolSize) return null;
  const n = links.reduce((a, l) => a + l.records.length, 0);
  const slots = new Uint32Array(n);
  const ends = new Uint32Array(n);
  let i = 0;
  let end = 0;
  for (const { records } of links) {
    for (const r of records) {
      if (r.buffer !== buffer || r.byteOffset < end + 1) return null;
      slots[i] = r.byteOffset - 1;
      ends[i++] = end = r.byteOffset + r.byteLength;
    }
  }
  return { bytes: buffer, slots, ends, sidecar, links: linksOf(links) };
}

export function createHashPool(threads = defaultHashThreads()): HashPool {
  const pool = new Piscina<HashTask, HashOutcome>({ filename: workerFilename(), minThreads: threads, maxThreads: threads, idleTimeout: Number.POSITIVE_INFINITY });
  return {
    async hash(sidecar, links) {
      const shared = inPlace(sidecar, links);
      const task = shared ?? packRecords(sidecar, links);
      const out = await pool.run(task, { transferList: [task.bytes, task.slots.buffer, task.ends.buffer] as ArrayBuffer[] });
      // A refusal here is the collector's fault, not the segment's: no evidence is kept of it.
      if (!out.ok) throw new Error(`hashing worker refused the segment: ${out.error}`);
      const batches = out.batches.map(received);
      // Handing the message's buffer over emptied the records' views. A refused segment is kept as
      // evidence, records included: they are read back from the batch values, which hold them as hashed.
      const restore = (): void => {
        if (shared === null) return;
        links.forEach(({ records }, k) => {
          const blob = new BatchBlob(batches[k].blob);
          for (let j = 0; j < records.length; j++) (records as Uint8Array[])[j] = blob.bytes(j);
        });
      };
      const all = Buffer.from(out.leaves);
      const leaves: Buffer[] = [];
      for (let at = 0, k = 0; k < links.length; at += links[k++].records.length) leaves.push(all.subarray(at * 32, (at + links[k].records.length) * 32));
      return { roots: out.roots, leaves, batches, restore };
    },
    close: () => pool.close(),
  };
}
