import type { EncodedBatch, ExchangeGroup } from '../store/encoded-batch.js';
import type { SidecarState, StoredLink } from '../collector-store.js';

/**
 * One message of the tier's stream: one verified link of one chain, with everything a replica
 * needs to index it without parsing a record again (its batch as the hashing workers encoded it:
 * blob, index keys, id entries, exchange groups) and the chain's state as of the segment that
 * carried it. The records' bytes are in the blob exactly as hashed, and the leaf hashes beside
 * them, so the stream alone verifies (verify-stream.ts).
 *
 *   u32 parts | parts x u32 length | part 0: JSON head | leaves | blob | keys | keyEnds | keyDbs | ids
 */

interface Head {
  sidecar: SidecarState;
  link: Omit<StoredLink, 'leaves'>;
  batch: { batch: number; firstSeq: number; count: number; span: number; newest: number; identity?: string; exchanges: Array<Omit<ExchangeGroup, 'ends'> & { ends: number[] }> } | null;
}

export interface LinkMessage {
  sidecar: SidecarState;
  link: StoredLink;
  /** Its records' batch: present exactly when the link is a records link. */
  batch: EncodedBatch | null;
}

const EMPTY = Buffer.alloc(0);

export function encodeLinkMessage({ sidecar, link, batch }: LinkMessage): Uint8Array {
  const { leaves, ...header } = link;
  const head: Head = {
    sidecar,
    link: header,
    batch: batch === null ? null : { batch: batch.batch, firstSeq: batch.firstSeq, count: batch.count, span: batch.span, newest: batch.newest, ...(batch.identity === undefined ? {} : { identity: batch.identity }), exchanges: batch.exchanges.map((g) => ({ ...g, ends: Array.from(g.ends) })) },
  };
  const parts: Uint8Array[] = [Buffer.from(JSON.stringify(head)), leaves ?? EMPTY];
  if (batch !== null) parts.push(batch.blob, batch.keys, u8(batch.keyEnds), batch.keyDbs, batch.ids);
  return frame(parts);
}

export function decodeLinkMessage(data: Uint8Array): LinkMessage {
  const parts = unframe(data);
  const head = JSON.parse(Buffer.from(parts[0]).toString('utf8')) as Head;
  const leaves = parts[1].length === 0 ? undefined : parts[1];
  const link: StoredLink = leaves === undefined ? head.link : { ...head.link, leaves };
  if (head.batch === null) return { sidecar: head.sidecar, link, batch: null };
  if (parts.length !== 7) throw new Error(`a link message of batch ${head.link.batch} has ${parts.length} parts, not 7`);
  const [, , blob, keys, keyEnds, keyDbs, ids] = parts;
  const batch: EncodedBatch = {
    ...head.batch,
    blob,
    keys,
    // Copies: a typed array view needs its own alignment.
    keyEnds: new Uint32Array(Uint8Array.from(keyEnds).buffer),
    keyDbs: Uint8Array.from(keyDbs),
    ids,
    exchanges: head.batch.exchanges.map((g) => ({ ...g, ends: Float64Array.from(g.ends) })),
  };
  return { sidecar: head.sidecar, link, batch };
}

const u8 = (a: ArrayBufferView): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Parts back to back behind a table of their lengths. */
export function frame(parts: readonly Uint8Array[]): Uint8Array {
  const table = 4 + 4 * parts.length;
  let size = table;
  for (const p of parts) size += p.length;
  const out = Buffer.allocUnsafe(size);
  out.writeUInt32LE(parts.length, 0);
  let at = table;
  parts.forEach((p, i) => {
    out.writeUInt32LE(p.length, 4 + 4 * i);
    out.set(p, at);
    at += p.length;
  });
  return out;
}

/** The parts of a frame, as views into it; throws on a frame that does not add up. */
export function unframe(data: Uint8Array): Buffer[] {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (buf.length < 4) throw new Error('a frame of fewer than 4 bytes');
  const n = buf.readUInt32LE(0);
  let at = 4 + 4 * n;
  if (n > 64 || at > buf.length) throw new Error(`a frame says it has ${n} parts in ${buf.length} bytes`);
  const parts: Buffer[] = [];
  for (let i = 0; i < n; i++) {
    const len = buf.readUInt32LE(4 + 4 * i);
    if (at + len > buf.length) throw new Error(`part ${i} of a frame runs past its end`);
    parts.push(buf.subarray(at, at + len));
    at += len;
  }
  return parts;
}
