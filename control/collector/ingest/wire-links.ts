import type { BatchHeader } from '../../../ledger/journal-layout.js';
import { fail } from '../../../ledger/link-verifier.js';
import type { WireLink } from '../../../wire/sync-wire.js';

/**
 * A received Segment's links as the journal's BatchHeaders, checked for shape before anything is
 * verified: a peer sending garbage gets a `malformed` Refusal naming the field, never an exception
 * from deep inside the verifier.
 */

/** Links per segment the collector takes; a segment is one or a few journal commits. */
export const MAX_LINKS_PER_SEGMENT = 10_000;
const HEX64 = /^[0-9a-f]{64}$/;
const HEX_SIG = /^[0-9a-f]{128}$/;
const KINDS = new Set(['records', 'epoch', 'checkpoint']);

const malformed = (batch: number | undefined, problem: string): never => fail({ code: 'malformed', batch, problem });

/** The header of one wire link (proto3 defaults: '' means absent). Throws ChainBroken `malformed`. */
export function headerOf(w: WireLink): BatchHeader {
  const batch = w.batch;
  for (const name of ['batch', 'first_seq', 'count', 'sealed_unix_ms', 'epoch'] as const) {
    if (!Number.isSafeInteger(w[name]) || w[name] < 0) malformed(batch, `link field ${name} is not a whole number: ${String(w[name])}`);
  }
  if (batch < 1) malformed(batch, 'batch numbers start at 1');
  if (!KINDS.has(w.kind)) malformed(batch, `batch ${batch} has an unknown kind ${JSON.stringify(w.kind)}`);
  if (!HEX64.test(w.root) || !HEX64.test(w.head)) malformed(batch, `batch ${batch}: root and head must be 64 lowercase hex digits`);
  if (w.sig !== '' && !HEX_SIG.test(w.sig)) malformed(batch, `batch ${batch}: sig must be 128 lowercase hex digits`);
  if (w.sig !== '' && w.key === '') malformed(batch, `batch ${batch} is signed but names no key`);
  if (w.records.length !== (w.kind === 'records' ? w.count : 0)) malformed(batch, `batch ${batch} has count ${w.count} but carries ${w.records.length} records`);
  const h: BatchHeader = { batch, first_seq: w.first_seq, count: w.count, root: w.root, sealed_unix_ms: w.sealed_unix_ms, kind: w.kind, epoch: w.epoch, head: w.head };
  if (w.key !== '') h.key = w.key;
  if (w.sig !== '') h.sig = w.sig;
  if (w.endorsed_by !== undefined && w.endorsed_by !== '') h.endorsed_by = w.endorsed_by;
  if (w.endorsement !== undefined && w.endorsement !== '') h.endorsement = w.endorsement;
  return h;
}

/** A segment's headers: consecutive, non-empty, ending in a signed link. */
export function segmentHeaders(links: readonly WireLink[] | undefined): BatchHeader[] {
  if (!Array.isArray(links) || links.length === 0) return malformed(undefined, 'a segment must carry at least one link');
  if (links.length > MAX_LINKS_PER_SEGMENT) malformed(links[0].batch, `a segment carries at most ${MAX_LINKS_PER_SEGMENT} links, this one ${links.length}`);
  const headers = links.map(headerOf);
  for (let i = 1; i < headers.length; i++) {
    if (headers[i].batch !== headers[i - 1].batch + 1) fail({ code: 'gap', batch: headers[i - 1].batch + 1, problem: `the segment's links are not consecutive: batch ${headers[i].batch} follows batch ${headers[i - 1].batch}` });
  }
  const last = headers[headers.length - 1];
  if (last.sig === undefined) fail({ code: 'bad-signature', batch: last.batch, problem: `the segment ends in batch ${last.batch}, which is not signed: a segment must end in a signed link` });
  return headers;
}
