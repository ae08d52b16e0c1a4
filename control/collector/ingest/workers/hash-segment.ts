import { move, transferableSymbol, valueSymbol } from 'piscina';
import { leafDigestAt, merkleRootOfDigests } from '../../../../ledger/merkle.js';
import { encodeBatch, transferables, type EncodedBatch, type IndexedRecord } from '../../store/encoded-batch.js';
import { indexRecord } from '../../store/record-index.js';

/**
 * Piscina worker: the per-record work of ingest, off the event loop: every record's leaf hash,
 * each link's Merkle root, each record's index entry (one JSON.parse), and each batch encoded for
 * the store (store/encoded-batch.ts: its value and its index keys). The main thread then only compares
 * roots and heads, checks signatures and puts buffers.
 *
 * Input (hash-pool.ts): the segment's records in one transferred buffer, each preceded by one
 * spare byte that the leaf hash's 0x00 prefix is written into; record i runs from slots[i] + 1
 * to ends[i], in order, never overlapping; `links` each records link's batch number,
 * first sequence number and record count, in order, and `sidecar` whose they are (index keys name
 * it). Wire bytes may be anything, so records are cut by offsets, never by a separator.
 */
export interface HashTask {
  bytes: ArrayBuffer;
  slots: Uint32Array;
  ends: Uint32Array;
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
  const { slots, ends, links, sidecar } = task;
  if (!(task.bytes instanceof ArrayBuffer) || !(slots instanceof Uint32Array) || !(ends instanceof Uint32Array) || !Array.isArray(links) || typeof sidecar !== 'string') return { ok: false, error: 'not a hash task' };
  const n = slots.length;
  if (ends.length !== n || links.reduce((a, l) => a + l.count, 0) !== n) return { ok: false, error: 'counts, slots and ends disagree' };
  for (let i = 0; i < n; i++) {
    if (!(slots[i] < ends[i] && ends[i] <= task.bytes.byteLength && (i === 0 || slots[i] >= ends[i - 1]))) return { ok: false, error: `record ${i} is out of its buffer or overlaps the one before` };
  }
  const bytes = Buffer.from(task.bytes);
  const leaves = Buffer.allocUnsafeSlow(n * 32);
  const roots: string[] = [];
  const batches: EncodedBatch[] = [];
  for (let at = 0, k = 0; k < links.length; at += links[k++].count) {
    const { batch, firstSeq, count } = links[k];
    const records: IndexedRecord[] = new Array(count);
    const digests: string[] = new Array(count);
    for (let j = 0; j < count; j++) {
      const i = at + j;
      const record = bytes.subarray(slots[i] + 1, ends[i]);
      records[j] = { bytes: record, index: indexRecord(record) };
      digests[j] = leafDigestAt(bytes, slots[i], ends[i]);
      leaves.write(digests[j], i * 32, 'latin1');
    }
    roots.push(merkleRootOfDigests(digests).toString('hex'));
    batches.push(encodeBatch(sidecar, batch, firstSeq, records));
  }
  // The task's buffer stays here: the batch values hold every record, so it dies in this thread.
  const outcome: HashOutcome = { ok: true, roots, leaves: leaves.buffer as ArrayBuffer, batches };
  return move({ [transferableSymbol]: [leaves.buffer, ...batches.flatMap(transferables)], [valueSymbol]: outcome });
}
