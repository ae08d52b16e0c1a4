import { move, transferableSymbol, valueSymbol } from 'piscina';
import { leafHashAt, merkleRoot } from '../merkle.js';

/**
 * Piscina worker: turns one batch of records into the bytes the journal stores and the batch's
 * Merkle root. Runs off the event loop, so the hot path never hashes.
 *
 * Input is the batch's records as the main thread encoded them, each record's canonical bytes
 * (its UTF-8 JSON text) preceded by a newline: "\n{...}\n{...}". JSON text never holds a raw
 * newline (JSON.stringify escapes control characters and adds no whitespace), and no byte of a
 * multi-byte UTF-8 sequence is 0x0A, so the newlines split the records exactly, with no parse.
 */

/** Sealed output, or an expected failure as a value: piscina does not carry error codes back. */
export type SealOutcome =
  | {
      ok: true;
      /** The input's UTF-8 bytes, separators included; transferred, not copied. */
      bytes: ArrayBuffer;
      /**
       * count + 1 byte positions: offsets[i] is the separator before record i, offsets[count]
       * the end. Record i is bytes(offsets[i], offsets[i + 1]), both ends exclusive.
       */
      offsets: Uint32Array;
      /** Merkle root (RFC 9162) over the records' leaf hashes, lowercase hex. */
      root: string;
    }
  | { ok: false; error: string };

const SEPARATOR = 0x0a;

/** The task handler. The pool receives a SealOutcome: piscina unwraps the movable wrapper. */
export default function sealBatch(text: string): unknown {
  if (typeof text !== 'string' || text.length < 2 || text.charCodeAt(0) !== SEPARATOR) return { ok: false, error: 'batch is not newline-separated records' };
  // allocUnsafeSlow: a dedicated ArrayBuffer (not the shared pool slab), so it can be transferred.
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  bytes.write(text, 0, 'utf8');
  const starts: number[] = [];
  for (let at = 0; at !== -1; at = bytes.indexOf(SEPARATOR, at + 1)) starts.push(at);
  const offsets = new Uint32Array(starts.length + 1);
  offsets.set(starts);
  offsets[starts.length] = bytes.length;
  const leaves = new Array<Buffer>(starts.length);
  // Each record's separator byte is the spare byte its leaf hash's 0x00 prefix is written into.
  for (let i = 0; i < leaves.length; i++) leaves[i] = leafHashAt(bytes, offsets[i], offsets[i + 1]);
  const outcome: SealOutcome = { ok: true, bytes: bytes.buffer as ArrayBuffer, offsets, root: merkleRoot(leaves).toString('hex') };
  return move({ [transferableSymbol]: [outcome.bytes, offsets.buffer], [valueSymbol]: outcome });
}
