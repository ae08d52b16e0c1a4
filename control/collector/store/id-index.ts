import { endianness } from 'node:os';
import type { Database, RootDatabase } from 'lmdb';

/**
 * The collector's index of request ids and trace ids: which records carry a given id.
 *
 * Both ids are random (sidecars make them with randomUUID and random W3C trace ids), so an index
 * that is a B-tree keyed by the id inserts every entry at a random place: once the tree outgrows
 * a commit, each entry dirties (and LMDB copies, writes and syncs) a 4 KB page of its own, which
 * held ingest to half its target (bench/README.md, "Figures behind the code"). So the id index is written in arrival order and
 * sorted later, as a log-structured index is:
 *
 *   id_log       [n] -> the entries of one stored batch, as ingest encoded them   (appended)
 *   id_segments  [s] -> a segment: its entry count, its level, whether a merge into it is under way
 *   id_blocks    [s, first hash, b] -> block b of segment s: BLOCK_ENTRIES entries sorted by hash
 *   id_sidecars  sidecar id -> its number in entries
 *
 * Writing a batch appends one value to id_log (sequential keys: a few fresh pages, whatever the
 * ids). Once the log holds SEAL_ENTRIES entries, the write that crosses it sorts them, writes them
 * as a level-0 segment of sorted blocks, and removes them from the log, in the same transaction.
 * In the background, FANOUT segments of a level are merged into one of the next (merge()), so a
 * lookup has few segments to read. Every entry is in the log or in exactly one segment at every
 * commit. A lookup reads the log whole and, per segment, the one or two blocks a B-tree seek on
 * [segment, hash] finds, in one read snapshot.
 *
 * An entry is ENTRY_BYTES, little-endian: the id's 64-bit hash (two uint32: high, low), the
 * record's start time (float64 ms), its batch (float64), its sidecar's number (uint32) and its
 * place in the batch (uint32). The hash is a bucket key, not a proof: a lookup returns every
 * entry whose hash matches, and the caller (api/record-query.ts) keeps only records whose id really
 * is the one asked for.
 */

export const ENTRY_BYTES = 32;
// The writer sorts and fills entries as uint32 words, in the machine's byte order.
if (endianness() !== 'LE') throw new Error('the collector id index is written little-endian: this machine is big-endian');
/** Entries sorted into one segment (8 MB), and so the most the log holds plus one write's. */
export const SEAL_ENTRIES = 262_144;
/** Entries a block holds (16 KB): a lookup reads one or two of them per segment. */
export const BLOCK_ENTRIES = 512;
/** Segments of one level merged into one segment of the next, as the tiers of an LSM tree. */
export const FANOUT = 8;
/** The highest level merged into: a level-3 segment holds SEAL_ENTRIES x 8^3 (134M) entries; past that, segments accumulate. */
export const MAX_LEVEL = 3;
/** Merged blocks written per transaction (4 MB), so a merge never holds the writer for long. */
const MERGE_BLOCKS_PER_WRITE = 256;
/** After a merge failed, the next waits this long. */
const MERGE_RETRY_MS = 10_000;

/** Which id an entry indexes. */
export const ID_KINDS = { correlation: 1, trace: 2 } as const;
export type IdKind = keyof typeof ID_KINDS;

/** A record an id's entry points to. */
export interface IdRef {
  start: number;
  sidecar: string;
  batch: number;
  i: number;
}

interface Segment {
  entries: number;
  /** 0 when sealed from the log; n + 1 when merged from FANOUT segments of level n. */
  level?: number;
  /** A merge into it is under way: its blocks are not all written, and lookups skip it. */
  merging?: true;
}

export interface IdIndexDbs {
  log: Database<Buffer, number>;
  segments: Database<Segment, number>;
  blocks: Database<Buffer, BlockKey>;
  sidecars: Database<number, string>;
}

/** A block's key: its segment, the hash high word of its first entry, its place in the segment. */
type BlockKey = [segment: number, firstHi: number, b: number];

export const ID_INDEX_DB_NAMES = ['id_log', 'id_segments', 'id_blocks', 'id_sidecars'] as const;

export function openIdIndexDbs(env: RootDatabase): IdIndexDbs {
  return {
    log: env.openDB<Buffer, number>('id_log', { encoding: 'binary', compression: false }),
    segments: env.openDB<Segment, number>('id_segments', { encoding: 'msgpack' }),
    blocks: env.openDB<Buffer, BlockKey>('id_blocks', { encoding: 'binary', compression: false }),
    sidecars: env.openDB<number, string>('id_sidecars', { encoding: 'msgpack' }),
  };
}

/**
 * The 64-bit hash of an id of a kind, as [high, low] uint32 (cyrb53's mixing, both halves kept).
 * Not cryptographic: an id's records are found by it, and a collision only adds a candidate.
 */
export function idHash(kind: IdKind, id: string): [number, number] {
  let h1 = 0xdeadbeef ^ ID_KINDS[kind];
  let h2 = 0x41c6ce57 ^ ID_KINDS[kind];
  for (let i = 0; i < id.length; i++) {
    const ch = id.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return [h1 >>> 0, h2 >>> 0];
}

/** Writes entry `at` of `buf` (sidecar number 0: IdIndexWriter.add sets it). */
export function writeIdEntry(buf: Buffer, at: number, kind: IdKind, id: string, start: number, batch: number, i: number): void {
  const [hi, lo] = idHash(kind, id);
  const o = at * ENTRY_BYTES;
  buf.writeUInt32LE(hi, o);
  buf.writeUInt32LE(lo, o + 4);
  buf.writeDoubleLE(start, o + 8);
  buf.writeDoubleLE(batch, o + 16);
  buf.writeUInt32LE(0, o + 24);
  buf.writeUInt32LE(i, o + 28);
}

/** Every entry of `buf`, decoded (sidecar by number); for tests. */
export function readIdEntries(buf: Buffer): Array<{ hi: number; lo: number; start: number; batch: number; sidecar: number; i: number }> {
  const out = [];
  for (let o = 0; o < buf.length; o += ENTRY_BYTES) {
    out.push({ hi: buf.readUInt32LE(o), lo: buf.readUInt32LE(o + 4), start: buf.readDoubleLE(o + 8), batch: buf.readDoubleLE(o + 16), sidecar: buf.readUInt32LE(o + 24), i: buf.readUInt32LE(o + 28) });
  }
  return out;
}

/**
 * The writer's side: where the log and the segments stand, kept in memory between writes and
 * read back from the store when it opens and after a write that failed. Its methods that write
 * run inside the caller's write transaction (an lmdb-js batch() callback or transactionSync()).
 */
export class IdIndexWriter {
  private logKeys: number[] = [];
  private logBuffers: Buffer[] = [];
  /** The log's buffers as they were when a seal took them, until the write it went out in has committed. */
  private sealing: Array<{ ticket: number; buffers: Buffer[] }> = [];
  private logEntries = 0;
  private nextLog = 0;
  private nextSegment = 0;
  private numbers = new Map<string, number>();
  private nextNumber = 1;
  private stale = false;
  /** Writes begun (each one's number) and those not yet settled (none: no write in flight). */
  private tickets = 0;
  private readonly unsettled = new Set<number>();
  /** Sorted buffers of earlier seals, with the write each went out in: lmdb-js reads a value from its buffer when it commits. */
  private sealBuffers: Array<{ buffer: Buffer; ticket: number }> = [];
  private merging: Promise<void> | null = null;
  private stopping = false;
  private retryAt = 0;

  constructor(
    private readonly env: RootDatabase,
    private readonly dbs: IdIndexDbs,
    private readonly sealEntries = SEAL_ENTRIES,
    private readonly onMergeError: (err: Error) => void = () => {},
  ) {
    this.dropUnfinishedMerges();
    this.load();
    this.mergeWhenDue();
  }

  /** A merge cut short (the process stopped) left a segment marked merging and some of its blocks: they go, its inputs stay. */
  private dropUnfinishedMerges(): void {
    const unfinished = Array.from(this.dbs.segments.getRange(), ({ key, value }) => (value.merging ? key : null)).filter((k) => k !== null);
    if (unfinished.length === 0) return;
    this.env.transactionSync(() => {
      for (const segment of unfinished) {
        removeBlocks(this.dbs, segment);
        void this.dbs.segments.remove(segment);
      }
    });
  }

  /** Reads the writer's state back from the store. */
  private load(): void {
    this.logKeys = [];
    this.logBuffers = [];
    this.sealing = [];
    this.logEntries = 0;
    for (const { key, value } of this.dbs.log.getRange()) {
      this.logKeys.push(key);
      this.logBuffers.push(value);
      this.logEntries += value.length / ENTRY_BYTES;
    }
    // Never backwards: a merge may hold a segment number its first write has not stored yet.
    this.nextLog = Math.max(this.nextLog, (this.logKeys.at(-1) ?? -1) + 1);
    const lastSegment = Array.from(this.dbs.segments.getKeys({ reverse: true, limit: 1 }))[0];
    this.nextSegment = Math.max(this.nextSegment, lastSegment === undefined ? 0 : lastSegment + 1);
    this.numbers = new Map(Array.from(this.dbs.sidecars.getRange(), ({ key, value }) => [key, value]));
    for (const n of this.numbers.values()) if (n >= this.nextNumber) this.nextNumber = n + 1;
  }

  /**
   * Appends one batch's entries (as encoded by ingest, their sidecar number unset) for sidecar
   * `sidecar`, and seals the log into a segment once it is full. In a write transaction.
   */
  add(sidecar: string, entries: Buffer): void {
    if (entries.length === 0) return;
    let n = this.numbers.get(sidecar);
    if (n === undefined) this.numbers.set(sidecar, (n = this.nextNumber++));
    // Written with every batch, so a number in the store always has its sidecar (see settle).
    void this.dbs.sidecars.put(sidecar, n);
    const w = words(entries);
    for (let k = 6; k < w.length; k += 8) w[k] = n;
    if (w.buffer !== entries.buffer) entries = Buffer.from(w.buffer, w.byteOffset, w.byteLength);
    const key = this.nextLog++;
    void this.dbs.log.put(key, entries);
    this.logKeys.push(key);
    this.logBuffers.push(entries);
    this.logEntries += entries.length / ENTRY_BYTES;
    if (this.logEntries >= this.sealEntries) this.seal();
  }

  /** Sorts the log into a new segment and empties it. In a write transaction. */
  private seal(): void {
    const sorted = sortEntries(this.logBuffers, this.logEntries, this.sealBuffer(this.logEntries * ENTRY_BYTES));
    const segment = this.nextSegment++;
    const blocks = Math.ceil(this.logEntries / BLOCK_ENTRIES);
    for (let b = 0; b < blocks; b++) {
      const block = sorted.subarray(b * BLOCK_ENTRIES * ENTRY_BYTES, Math.min((b + 1) * BLOCK_ENTRIES, this.logEntries) * ENTRY_BYTES);
      void this.dbs.blocks.put([segment, block.readUInt32LE(0), b], block);
    }
    void this.dbs.segments.put(segment, { entries: this.logEntries, level: 0 });
    for (const key of this.logKeys) void this.dbs.log.remove(key);
    this.sealing.push({ ticket: this.tickets, buffers: this.logBuffers });
    this.logKeys = [];
    this.logBuffers = [];
    this.logEntries = 0;
  }

  /**
   * The log's entries as lookups in this process read them, instead of the store's copy: the
   * entries of every write begun (a batch not committed yet is then found but not read, as
   * candidates() reads its records from the store), and those a seal took until its write has
   * committed (until then its segment is not in the store; for a moment both are, and lookupId
   * returns a record once).
   */
  logView(): readonly Buffer[] {
    return this.sealing.length === 0 ? this.logBuffers : [...this.logBuffers, ...this.sealing.flatMap((s) => s.buffers)];
  }

  /**
   * A buffer for a seal's sorted entries: an earlier seal's once the write it went out in has
   * settled (and every write before it), else a new one. Reused because memory a process writes
   * for the first time costs a page fault a page: half of a seal's time when each had a new one
   * (bench/README.md, "Figures behind the code").
   */
  private sealBuffer(bytes: number): Buffer {
    const oldestUnsettled = Math.min(...this.unsettled);
    const free = this.sealBuffers.findIndex((b) => b.ticket < oldestUnsettled && b.buffer.length >= bytes);
    const buffer = free >= 0 ? this.sealBuffers.splice(free, 1)[0].buffer : Buffer.allocUnsafeSlow(bytes);
    this.sealBuffers.push({ buffer, ticket: this.tickets });
    if (this.sealBuffers.length > 2) this.sealBuffers.shift();
    return buffer;
  }

  /** Brackets a write transaction this writer takes part in (its ticket for settle); reloads once none is left if one failed. */
  begin(): number {
    this.unsettled.add(++this.tickets);
    return this.tickets;
  }

  /**
   * A failed transaction leaves entries, log keys and sidecar numbers here that the store never
   * got. Nothing is lost meanwhile: a failed seal's entries stay in the store's log and in this
   * writer's view of it (logView), and a sidecar's number is written with each of its batches.
   * But the writer reads its state back once no write is in flight, as later writes may have
   * committed on top of it.
   */
  settle(ticket: number, ok: boolean): void {
    this.unsettled.delete(ticket);
    const sealed = this.sealing.some((s) => s.ticket === ticket);
    // A failed write's seal stays here until the writer reads its state back (below).
    if (ok && sealed) this.sealing = this.sealing.filter((s) => s.ticket !== ticket);
    if (!ok) this.stale = true;
    const reload = this.stale && this.unsettled.size === 0;
    if (reload) {
      this.stale = false;
      this.load();
    }
    // Only a committed seal (or a merge, which calls this when it ends) adds a segment a merge may
    // be due on: every other write leaves the segments as they were, unread.
    if ((ok && sealed) || reload) this.mergeWhenDue();
  }

  /** Starts a merge if a level holds FANOUT committed segments and none is running. */
  private mergeWhenDue(): void {
    if (this.merging !== null || this.stopping || Date.now() < this.retryAt) return;
    const byLevel = new Map<number, number[]>();
    for (const { key, value } of this.dbs.segments.getRange()) {
      const level = value.level ?? 0;
      if (value.merging || level >= MAX_LEVEL) continue;
      const keys = byLevel.get(level) ?? [];
      byLevel.set(level, keys);
      keys.push(key);
    }
    const level = Array.from(byLevel.keys())
      .sort((a, b) => a - b)
      .find((l) => byLevel.get(l)!.length >= FANOUT);
    if (level === undefined) return;
    this.merging = this.merge(byLevel.get(level)!.slice(0, FANOUT), level + 1).then(
      () => {
        this.merging = null;
        this.mergeWhenDue();
      },
      (err: unknown) => {
        this.merging = null;
        if (err instanceof MergeStopped) return;
        // Tried again at a later seal after a pause, not at once: what failed (a full disk) may last.
        this.retryAt = Date.now() + MERGE_RETRY_MS;
        this.onMergeError(err as Error);
      },
    );
  }

  /** Settles once no merge is running or due (a test waits for it; close stops them first). */
  async merged(): Promise<void> {
    while (this.merging !== null) await this.merging;
  }

  /** Stops merging: a merge under way stops at its next write, and the next open drops what it wrote. */
  async stop(): Promise<void> {
    this.stopping = true;
    await this.merged();
  }

  /**
   * Merges segments `inputs` (all of one level, oldest first) into one segment of `level`: a k-way
   * merge of their sorted blocks, written MERGE_BLOCKS_PER_WRITE blocks a transaction under a
   * segment marked merging, then registered in the transaction that removes the inputs. Lookups
   * see the inputs until that commit and the merged segment from it: every entry once throughout.
   */
  private async merge(inputs: number[], level: number): Promise<void> {
    const target = this.nextSegment++;
    await this.env.batch(() => void this.dbs.segments.put(target, { entries: 0, level, merging: true }));
    const runs = inputs.map((segment) => ({ segment, ...this.blockAfter(segment, null), at: 0 }));
    let chunk = new Uint32Array(MERGE_BLOCKS_PER_WRITE * BLOCK_ENTRIES * 8);
    let filled = 0;
    let blocks = 0;
    let entries = 0;
    const flush = async (): Promise<void> => {
      if (this.stopping) throw new MergeStopped();
      const out = Buffer.from(chunk.buffer, 0, filled * ENTRY_BYTES);
      const first = blocks;
      blocks += Math.ceil(filled / BLOCK_ENTRIES);
      await this.env.batch(() => {
        for (let b = 0; b * BLOCK_ENTRIES < filled; b++) void this.dbs.blocks.put([target, chunk[b * BLOCK_ENTRIES * 8], first + b], out.subarray(b * BLOCK_ENTRIES * ENTRY_BYTES, Math.min((b + 1) * BLOCK_ENTRIES, filled) * ENTRY_BYTES));
      });
      // lmdb-js writes a value from its buffer as it commits: the next chunk is a new one.
      chunk = new Uint32Array(chunk.length);
      filled = 0;
    };
    for (;;) {
      // The run whose next entry has the lowest hash; ties go to the older segment.
      let min = -1;
      for (let r = 0; r < runs.length; r++) {
        const run = runs[r];
        if (run.words !== null && (min < 0 || run.words[run.at] < runs[min].words![runs[min].at])) min = r;
      }
      if (min < 0) break;
      const run = runs[min];
      const from = run.words!;
      for (let w = 0; w < 8; w++) chunk[filled * 8 + w] = from[run.at + w];
      filled++;
      entries++;
      run.at += 8;
      if (run.at >= from.length) {
        Object.assign(run, this.blockAfter(run.segment, run.key));
        run.at = 0;
      }
      if (filled * 8 === chunk.length) await flush();
    }
    if (filled > 0) await flush();
    if (this.stopping) throw new MergeStopped();
    await this.env.batch(() => {
      void this.dbs.segments.put(target, { entries, level });
      for (const segment of inputs) {
        removeBlocks(this.dbs, segment);
        void this.dbs.segments.remove(segment);
      }
    });
  }

  /** The block of a segment after the one keyed `key` (its first when null), as words; null words past its last. */
  private blockAfter(segment: number, key: BlockKey | null): { key: BlockKey | null; words: Uint32Array | null } {
    // Keys sort by first hash, then place, both ascending in a segment: the next block's key is
    // the first at or after [segment, this first hash, this place + 1].
    for (const next of this.dbs.blocks.getRange({ start: key === null ? [segment] : [segment, key[1], key[2] + 1], end: [segment + 1], limit: 1 })) {
      return { key: next.key, words: words(next.value) };
    }
    return { key: null, words: null };
  }
}

/** Removes every block of a segment. In a write transaction. */
function removeBlocks(dbs: IdIndexDbs, segment: number): void {
  for (const key of dbs.blocks.getKeys({ start: [segment], end: [segment + 1] })) void dbs.blocks.remove(key);
}

/** A merge given up because the store is closing. */
class MergeStopped extends Error {
  constructor() {
    super('id index merge stopped: the store is closing');
  }
}

/** A buffer of entries as uint32 words (8 an entry), copied first if it is not 4-byte aligned. */
function words(buf: Buffer): Uint32Array {
  const aligned = buf.byteOffset % 4 === 0 ? buf : Buffer.from(buf);
  return new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.length / 4);
}

/**
 * Kept from one seal to the next: memory a process writes for the first time costs a page fault
 * a page (bench/README.md, "Figures behind the code").
 */
const scratch = { all: new Uint32Array(0), order: new Uint32Array(0), spare: new Uint32Array(0), counts: new Uint32Array(65_536) };

/** The log's entries in one buffer, sorted by hash (high word, then arrival). */
function sortEntries(buffers: readonly Buffer[], count: number, out: Buffer): Buffer {
  if (scratch.order.length < count) {
    const room = Math.ceil(count * 1.25);
    Object.assign(scratch, { all: new Uint32Array(room * 8), order: new Uint32Array(room), spare: new Uint32Array(room) });
  }
  const { all, order, spare, counts } = scratch;
  for (let at = 0, b = 0; b < buffers.length; at += buffers[b++].length / 4) all.set(words(buffers[b]), at);
  // A stable radix sort of the entries' places by their high word, 16 bits a pass: linear, where
  // a comparison sort of 262,144 entries took 30-100 ms of the event loop.
  const pass = (from: Uint32Array | null, to: Uint32Array, shift: number): void => {
    counts.fill(0);
    for (let k = 0; k < count; k++) counts[(all[(from === null ? k : from[k]) * 8] >>> shift) & 0xffff]++;
    for (let d = 0, at = 0; d < 65_536; d++) {
      const c = counts[d];
      counts[d] = at;
      at += c;
    }
    for (let k = 0; k < count; k++) {
      const e = from === null ? k : from[k];
      to[counts[(all[e * 8] >>> shift) & 0xffff]++] = e;
    }
  };
  pass(null, spare, 0);
  pass(spare, order, 16);
  const to = new Uint32Array(out.buffer, out.byteOffset, count * 8);
  for (let k = 0; k < count; k++) {
    const from = order[k] * 8;
    for (let w = 0; w < 8; w++) to[k * 8 + w] = all[from + w];
  }
  return out;
}

/** The most entries one lookup gathers by default (about 60 bytes each while they are sorted). */
export const MAX_ID_MATCHES = 1_000_000;

/** An id that more records carry than a lookup gathers (a client that sends one fixed x-request-id). */
export class TooManyIdMatches extends Error {
  constructor(readonly max: number) {
    super(`more than ${max.toLocaleString('en')} records carry it`);
  }
}

/**
 * The records whose `kind` id hashes as `id` does and that started in [since, until], in no
 * order (sealed segments, then the log), each once; at most `max` of them, else it throws
 * TooManyIdMatches. Reads the store in one read snapshot (the caller runs it synchronously), and
 * the log from `log` when given (the writer's view of it in a collector).
 */
export function lookupId(dbs: IdIndexDbs, kind: IdKind, id: string, { since = 0, until = Number.MAX_SAFE_INTEGER, max = MAX_ID_MATCHES, log }: { since?: number; until?: number; max?: number; log?: readonly Buffer[] } = {}): IdRef[] {
  const [hi, lo] = idHash(kind, id);
  const names = new Map(Array.from(dbs.sidecars.getRange(), ({ key, value }) => [value, key]));
  const seen = new Set<string>();
  const refs: IdRef[] = [];
  /** Collects buf's entries for the id; false once a sorted buf is past it. */
  const scan = (buf: Buffer, sorted: boolean): boolean => {
    for (let o = 0; o < buf.length; o += ENTRY_BYTES) {
      const h = buf.readUInt32LE(o);
      if (h !== hi) {
        if (sorted && h > hi) return false;
        continue;
      }
      if (buf.readUInt32LE(o + 4) !== lo) continue;
      const start = buf.readDoubleLE(o + 8);
      if (start < since || start > until) continue;
      const sidecar = names.get(buf.readUInt32LE(o + 24));
      if (sidecar === undefined) continue;
      const ref = { start, sidecar, batch: buf.readDoubleLE(o + 16), i: buf.readUInt32LE(o + 28) };
      // An entry may be read twice: from a seal's buffers (logView) and its just-committed
      // segment, or for a batch whose first write failed and that was stored when retried (its
      // first entries sealed from the writer's memory, IdIndexWriter.settle).
      const key = `${ref.sidecar}\u0000${ref.batch}\u0000${ref.i}`;
      if (seen.has(key)) continue;
      seen.add(key);
      if (refs.push(ref) > max) throw new TooManyIdMatches(max);
    }
    return true;
  };
  for (const { key: segment, value } of dbs.segments.getRange()) {
    if (value.merging) continue;
    // From the last block whose first hash is below hi (entries equal to hi may begin at its end)
    // through the last whose first hash is hi.
    const before = Array.from(dbs.blocks.getKeys({ start: [segment, hi], end: [segment], reverse: true, limit: 1 }))[0];
    for (const { value: block } of dbs.blocks.getRange({ start: before ?? [segment, hi], end: [segment, hi + 1] })) {
      if (!scan(block, true)) break;
    }
  }
  // The log is in arrival order: every entry is looked at. The writer's copy, when there is one
  // (IdIndexWriter.logView): reading the store's copies up to 8 MB a lookup.
  if (log !== undefined) for (const value of log) scan(value, false);
  else for (const { value } of dbs.log.getRange()) scan(value, false);
  return refs;
}
