/**
 * One records batch as the collector stores it: one LMDB value for all its records, so a batch of
 * 256 records is one put and one overflow-page run to write, not 256 B-tree entries. Each
 * record's bytes are kept exactly as hashed (the store is verified against its leaf hashes and
 * Merkle root), and its start time rides along so a time-ordered scan needs no JSON parse:
 *
 *   u32 count | f64 first_seq | count x f64 start_unix_ms | count x u32 end of each record's bytes | record bytes
 *
 * Little-endian; ends are offsets into the record bytes (record i runs from end[i-1], or 0, to end[i]).
 */

export interface BlobRecord {
  bytes: Uint8Array;
  /** audit.start_unix_ms as indexed (0 when the record has none). */
  start: number;
}

const HEAD = 12;

export function encodeBatchBlob(firstSeq: number, records: readonly BlobRecord[]): Buffer {
  const n = records.length;
  const head = HEAD + n * 12;
  let size = head;
  for (const r of records) size += r.bytes.length;
  // Its own memory, never the shared pool's: a hashing worker transfers it to the event loop.
  const blob = Buffer.allocUnsafeSlow(size);
  blob.writeUInt32LE(n, 0);
  blob.writeDoubleLE(firstSeq, 4);
  let end = 0;
  for (let i = 0; i < n; i++) {
    const { bytes, start } = records[i];
    blob.writeDoubleLE(start, HEAD + i * 8);
    blob.set(bytes, head + end);
    end += bytes.length;
    blob.writeUInt32LE(end, HEAD + n * 8 + i * 4);
  }
  return blob;
}

/** A stored batch, read in place: malformed blobs (a store altered by hand) throw BlobError. */
export class BatchBlob {
  readonly count: number;
  /** The sequence number of its first record. */
  readonly firstSeq: number;
  #blob: Buffer;
  #data: number;

  constructor(blob: Buffer) {
    if (blob.length < HEAD) throw new BlobError(`a stored batch of ${blob.length} bytes has no header`);
    this.count = blob.readUInt32LE(0);
    this.firstSeq = blob.readDoubleLE(4);
    this.#data = HEAD + this.count * 12;
    if (this.#data > blob.length) throw new BlobError(`a stored batch of ${blob.length} bytes cannot hold the ${this.count} records it says it has`);
    const last = this.count === 0 ? 0 : blob.readUInt32LE(HEAD + this.count * 8 + (this.count - 1) * 4);
    if (this.#data + last !== blob.length) throw new BlobError(`a stored batch says its records end at byte ${last} of ${blob.length - this.#data}`);
    this.#blob = blob;
  }

  start(i: number): number {
    return this.#blob.readDoubleLE(HEAD + i * 8);
  }

  /** Record i's bytes (a view into the blob). */
  bytes(i: number): Buffer {
    const ends = HEAD + this.count * 8;
    const from = i === 0 ? 0 : this.#blob.readUInt32LE(ends + (i - 1) * 4);
    const to = this.#blob.readUInt32LE(ends + i * 4);
    if (to < from) throw new BlobError(`record ${i} of a stored batch ends (${to}) before it starts (${from})`);
    return this.#blob.subarray(this.#data + from, this.#data + to);
  }

  /** Every record's bytes, in order. */
  all(): Buffer[] {
    return Array.from({ length: this.count }, (_, i) => this.bytes(i));
  }

  /** Where record i's bytes are in the whole blob (so a test can alter one in place). */
  offsetOf(i: number): number {
    return this.#data + (i === 0 ? 0 : this.#blob.readUInt32LE(HEAD + this.count * 8 + (i - 1) * 4));
  }
}

export class BlobError extends Error {}
