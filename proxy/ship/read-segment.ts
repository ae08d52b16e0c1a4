import { headerEntries, recordEntries } from '../../ledger/read-journal.js';
import type { BatchHeader, JournalSnapshot } from '../../ledger/journal-layout.js';
import type { WireLink } from '../../wire/sync-wire.js';

/**
 * Cuts the next Segment out of the journal: consecutive links from a batch number on, ending on a
 * signed link (the journal signs the last link of every commit), so the collector can verify it
 * on its own. Several commits share a segment until it reaches the target size; one commit is
 * never split, whatever its size.
 */

export interface SegmentLimits {
  /** Stop adding commits once the segment holds this many record bytes. */
  targetBytes: number;
  /** ... or this many links. */
  targetLinks: number;
}

export interface ReadSegment {
  links: WireLink[];
  /** Batch number of the last (signed) link. */
  through: number;
  records: number;
  bytes: number;
}

/** A link as sent: the header as stored (readers ignore fields they do not know) plus its record bytes. */
function wireLink(snapshot: JournalSnapshot, header: BatchHeader): { link: WireLink; bytes: number } {
  const records: Buffer[] = [];
  let bytes = 0;
  if (header.count > 0) {
    for (const { value } of recordEntries(snapshot.stores, { fromSeq: header.first_seq, limit: header.count }, snapshot.transaction)) {
      records.push(value);
      bytes += value.length;
    }
  }
  if (records.length !== header.count) throw new Error(`journal batch ${header.batch} holds ${records.length} of its ${header.count} records`);
  const { batch, first_seq, count, root, sealed_unix_ms, epoch, kind, head } = header;
  return { link: { batch, first_seq, count, root, sealed_unix_ms, epoch, kind, head, key: header.key ?? '', sig: header.sig ?? '', endorsed_by: header.endorsed_by ?? '', endorsement: header.endorsement ?? '', records }, bytes };
}

/** The segment starting at `fromBatch`, or null if no signed link follows it yet. */
export function readSegment(snapshot: JournalSnapshot, fromBatch: number, limits: SegmentLimits): ReadSegment | null {
  const links: WireLink[] = [];
  let bytes = 0;
  let records = 0;
  let signedLength = 0;
  let signedBytes = 0;
  let signedRecords = 0;
  let expected = fromBatch;
  for (const { value } of headerEntries(snapshot.stores, { fromBatch }, snapshot.transaction)) {
    // A hole (pruned links) ends the run: what follows cannot chain to what was sent.
    if (value.batch !== expected++) break;
    const { link, bytes: linkBytes } = wireLink(snapshot, value);
    links.push(link);
    bytes += linkBytes;
    records += link.count;
    if (link.sig !== '') {
      signedLength = links.length;
      signedBytes = bytes;
      signedRecords = records;
      if (bytes >= limits.targetBytes || links.length >= limits.targetLinks) break;
    }
  }
  if (signedLength === 0) return null;
  links.length = signedLength;
  return { links, through: links[signedLength - 1].batch, records: signedRecords, bytes: signedBytes };
}
