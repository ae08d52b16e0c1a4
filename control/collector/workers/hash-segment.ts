import { move, transferableSymbol, valueSymbol } from 'piscina';
import { leafHashAt, merkleRoot } from '../../../proxy/audit/merkle.js';
import { indexRecord, type RecordIndex } from '../record-index.js';

/**
 * Piscina worker: the per-record work of ingest, off the event loop: every record's leaf hash,
 * each link's Merkle root, and each record's index entry (one JSON.parse). The main thread then
 * only compares roots and heads, checks signatures and writes.
 *
 * Input (hash-pool.ts, packRecords): the segment's records, each preceded by one spare byte that
 * the leaf hash's 0x00 prefix is written into, in one transferred buffer; `offsets` (n + 1) the
 * position of each record's spare byte and the end; `counts` the records of each records link,
 * in order. Wire bytes may be anything, so records are cut by offsets, never by a separator.
 */
export interface HashTask {
  bytes: ArrayBuffer;
  offsets: Uint32Array;
  counts: number[];
}

export type HashOutcome =
  | {
      ok: true;
      /** Per records link, the Merkle root over its records, lowercase hex. */
      roots: string[];
      /** Every record's leaf hash, 32 bytes each, in order. */
      leaves: ArrayBuffer;
      index: (RecordIndex | null)[];
    }
  | { ok: false; error: string };

export default function hashSegment(task: HashTask): unknown {
  const { offsets, counts } = task;
  if (!(task.bytes instanceof ArrayBuffer) || !(offsets instanceof Uint32Array) || !Array.isArray(counts)) return { ok: false, error: 'not a hash task' };
  const n = offsets.length - 1;
  if (counts.reduce((a, b) => a + b, 0) !== n || offsets[n] !== task.bytes.byteLength) return { ok: false, error: 'counts and offsets disagree' };
  const bytes = Buffer.from(task.bytes);
  const leaves = Buffer.allocUnsafeSlow(n * 32);
  const index = new Array<RecordIndex | null>(n);
  const all: Buffer[] = new Array(n);
  for (let i = 0; i < n; i++) {
    index[i] = indexRecord(bytes.subarray(offsets[i] + 1, offsets[i + 1]));
    all[i] = leafHashAt(bytes, offsets[i], offsets[i + 1]);
    all[i].copy(leaves, i * 32);
  }
  const roots: string[] = [];
  for (let at = 0, k = 0; k < counts.length; at += counts[k++]) roots.push(merkleRoot(all.slice(at, at + counts[k])).toString('hex'));
  const outcome: HashOutcome = { ok: true, roots, leaves: leaves.buffer as ArrayBuffer, index };
  return move({ [transferableSymbol]: [leaves.buffer], [valueSymbol]: outcome });
}
