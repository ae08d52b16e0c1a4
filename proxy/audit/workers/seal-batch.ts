import { move, transferableSymbol, valueSymbol } from 'piscina';
import { leafHash, merkleRoot } from '../merkle.js';

/**
 * Piscina worker: turns one batch of records into the bytes the journal stores and the batch's
 * Merkle root. Runs off the event loop, so the hot path never encodes or hashes.
 *
 * Input is the JSON text of the record array (one JSON.stringify per batch on the main thread,
 * cheaper to post than a structured clone of many small objects).
 */

/** Sealed output, or an expected failure as a value: piscina does not carry error codes back. */
export type SealOutcome =
  | {
      ok: true;
      /** Every record's canonical bytes, back to back; transferred, not copied. */
      bytes: ArrayBuffer;
      /** count + 1 byte offsets into `bytes`: record i is bytes[offsets[i], offsets[i + 1]). */
      offsets: Uint32Array;
      /** Merkle root (RFC 9162) over the records' leaf hashes, lowercase hex. */
      root: string;
    }
  | { ok: false; error: string };

function parseBatch(json: string): unknown[] | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(json);
  } catch (err) {
    return `batch is not JSON: ${(err as Error).message}`;
  }
  if (!Array.isArray(parsed) || parsed.length === 0) return 'batch is not a non-empty array';
  return parsed;
}

/**
 * Canonical bytes of a record: UTF-8 JSON of the object with keys in insertion order. JSON.parse
 * keeps insertion order and JSON.stringify is deterministic, so re-stringifying the parsed
 * record gives exactly the text the main thread produced for it.
 */
function encodeRecords(records: readonly unknown[]): { bytes: Buffer; offsets: Uint32Array } {
  const texts = records.map((rec) => JSON.stringify(rec));
  const offsets = new Uint32Array(texts.length + 1);
  for (let i = 0; i < texts.length; i++) offsets[i + 1] = offsets[i] + Buffer.byteLength(texts[i]);
  // allocUnsafeSlow: a dedicated ArrayBuffer (not the shared pool slab), so it can be transferred.
  const bytes = Buffer.allocUnsafeSlow(offsets[texts.length]);
  for (let i = 0; i < texts.length; i++) bytes.write(texts[i], offsets[i], 'utf8');
  return { bytes, offsets };
}

/** The task handler. The pool receives a SealOutcome: piscina unwraps the movable wrapper. */
export default function sealBatch(json: string): unknown {
  const records = parseBatch(json);
  if (typeof records === 'string') return { ok: false, error: records };
  const { bytes, offsets } = encodeRecords(records);
  const leaves = new Array<Buffer>(records.length);
  for (let i = 0; i < records.length; i++) leaves[i] = leafHash(bytes.subarray(offsets[i], offsets[i + 1]));
  const outcome: SealOutcome = { ok: true, bytes: bytes.buffer as ArrayBuffer, offsets, root: merkleRoot(leaves).toString('hex') };
  return move({ [transferableSymbol]: [outcome.bytes, offsets.buffer], [valueSymbol]: outcome });
}
