import { move, transferableSymbol, valueSymbol } from 'piscina';
import { leafHashAt, merkleRoot } from '../../../proxy/audit/merkle.js';
import { encodeBatch, transferables, type EncodedBatch, type IndexedRecord } from '../encoded-batch.js';
import { indexRecord } from '../record-index.js';

/**
 * Piscina worker: the per-record work of ingest, off the event loop: every record's leaf hash,
 * each link's Merkle root, each record's index entry (one JSON.parse), and each batch encoded for
 * the store (encoded-batch.ts: its value and its index keys). The main thread then only compares
 * roots and heads, checks signatures and puts buffers.
 *
 * Input (hash-pool.ts, packRecords): the segment's records, each preceded by one spare byte that
 * the leaf hash's 0x00 prefix is written into, in one transferred buffer; `offsets` (n + 1) the
 * position of each record's spare byte and the end; `links` each records link's batch number,
 * first sequence number and record count, in order, and `sidecar` whose they are (index keys name
 * it). Wire bytes may be anything, so records are cut by offsets, never by a separator.
 */
export interface HashTask {
  bytes: ArrayBuffer;
  offsets: Uint32Array;
  sidecar: string;
  links: Array<{ batch: number; firstSeq: number; count: number }>;
}

export type HashOutcome =
  | {
      ok: true;
      /** Per records link, the Merkle root over its records, lowercase hex. */
      roots: string[];
      /** Every record's leaf hash, 32 bytes each, in order. */
      leaves: ArrayBuffer;
      /** Per records link, its batch for the store. */
      batches: EncodedBatch[];
    }
  | { ok: false; error: string };

export default function hashSegment(task: HashTask): unknown {
  const { offsets, links, sidecar } = task;
  if (!(task.bytes instanceof ArrayBuffer) || !(offsets instanceof Uint32Array) || !Array.isArray(links) || typeof sidecar !== 'string') return { ok: false, error: 'not a hash task' };
  const n = offsets.length - 1;
  if (links.reduce((a, l) => a + l.count, 0) !== n || offsets[n] !== task.bytes.byteLength) return { ok: false, error: 'counts and offsets disagree' };
  const bytes = Buffer.from(task.bytes);
  const leaves = Buffer.allocUnsafeSlow(n * 32);
  const all: Buffer[] = new Array(n);
  const roots: string[] = [];
  const batches: EncodedBatch[] = [];
  for (let at = 0, k = 0; k < links.length; at += links[k++].count) {
    const { batch, firstSeq, count } = links[k];
    const records: IndexedRecord[] = new Array(count);
    for (let j = 0; j < count; j++) {
      const i = at + j;
      const record = bytes.subarray(offsets[i] + 1, offsets[i + 1]);
      records[j] = { bytes: record, index: indexRecord(record) };
      all[i] = leafHashAt(bytes, offsets[i], offsets[i + 1]);
      all[i].copy(leaves, i * 32);
    }
    roots.push(merkleRoot(all.slice(at, at + count)).toString('hex'));
    batches.push(encodeBatch(sidecar, batch, firstSeq, records));
  }
  const outcome: HashOutcome = { ok: true, roots, leaves: leaves.buffer as ArrayBuffer, batches };
  return move({ [transferableSymbol]: [leaves.buffer, ...batches.flatMap(transferables)], [valueSymbol]: outcome });
}
