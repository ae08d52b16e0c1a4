import { unlinkSync } from 'node:fs';
import { move, transferableSymbol, valueSymbol, workerData } from 'piscina';
import { leafDigestAt, merkleRootOfDigests } from '../../../ledger/merkle.js';

/**
 * Piscina worker: computes a batch's leaf hashes and Merkle root from the bytes the journal
 * stores. Runs off the event loop, so the hot path never hashes.
 *
 * Input is the batch as the main thread encoded it (pool.ts, encodeRecords), transferred, not
 * copied: each record's canonical bytes (its UTF-8 JSON) preceded by a newline byte. JSON text
 * never holds a raw newline (JSON.stringify escapes control characters and adds no whitespace),
 * and no byte of a multi-byte UTF-8 sequence is 0x0A, so the newlines split the records exactly.
 */

/** Sealed output, or an expected failure as a value: piscina does not carry error codes back. */
export type SealOutcome =
  | {
      ok: true;
      /** The input bytes, transferred back; the separators now hold the leaf prefix (0x00). */
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

/** What the pool hands every worker at start (pool.ts): read once, here, never per batch. */
export interface SealWorkerData {
  /** Test-only fault injection (sealCrashFile in pool.ts); undefined in production. */
  crashFile?: string;
}

const CRASH_FILE = (workerData as SealWorkerData | null)?.crashFile;

/** An uncaught exception ends the worker thread while its task is still running. */
function crashMidBatch(): Promise<never> {
  setImmediate(() => {
    throw new Error('sealing worker crashed on purpose (a test asked for it)');
  });
  return new Promise<never>(() => {});
}

function crashClaimed(file: string): boolean {
  try {
    unlinkSync(file);
    return true;
  } catch {
    return false;
  }
}

/** The task handler. The pool receives a SealOutcome: piscina unwraps the movable wrapper. */
export default function sealBatch(input: ArrayBuffer): unknown {
  if (!(input instanceof ArrayBuffer) || input.byteLength < 2) return { ok: false, error: 'batch is not a buffer of records' };
  const bytes = Buffer.from(input);
  if (bytes[0] !== SEPARATOR) return { ok: false, error: 'batch does not start with a record separator' };
  const starts: number[] = [];
  for (let at = 0; at !== -1; at = bytes.indexOf(SEPARATOR, at + 1)) starts.push(at);
  const offsets = new Uint32Array(starts.length + 1);
  offsets.set(starts);
  offsets[starts.length] = bytes.length;
  if (CRASH_FILE !== undefined && crashClaimed(CRASH_FILE)) return crashMidBatch();
  const leaves = new Array<string>(starts.length);
  // Each record's separator byte is the spare byte its leaf hash's 0x00 prefix is written into.
  for (let i = 0; i < leaves.length; i++) leaves[i] = leafDigestAt(bytes, offsets[i], offsets[i + 1]);
  const outcome: SealOutcome = { ok: true, bytes: input, offsets, root: merkleRootOfDigests(leaves).toString('hex') };
  return move({ [transferableSymbol]: [input, offsets.buffer], [valueSymbol]: outcome });
}
