import { Empty, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { CollectorStore, RecordQuery, StoredRecord } from '../collector-store.js';
import { QueryError, runQuery } from '../api/record-query.js';
import type { IndexStore } from './shard-indexer.js';
import { ASK_PREFIX, shardOf, SHARDS } from './tier-layout.js';

/**
 * Queries across replicas, by request-reply on NATS. The owner of a shard answers its questions
 * from its local store with the whole filter and limit applied, in chunks under NATS's message
 * size and an empty message after the last; the replica asked by the reader asks every shard at
 * once and merges their answers newest first, so any replica answers any query with the API and
 * limits of the embedded collector. A shard with no owner at that moment (its lease being taken
 * over) fails the query rather than answering short.
 */

export const QUERY_TIMEOUT_MS = 10_000;
/** An owner answers its first chunk within this, or is taken for dead (it was killed with the question in flight). */
const FIRST_REPLY_MS = 2_000;
/** Bytes of records per reply message, well under NATS's default 1 MiB max_payload. */
const CHUNK_BYTES = 256 * 1024;

const recordsSubject = (shard: number): string => `${ASK_PREFIX}.records.${shard}`;

interface WireQuery extends Omit<RecordQuery, 'namespaces'> {
  namespaces?: string[];
}
interface Chunk {
  records?: string[];
  error?: string;
  /** The error is the query's (400), not the owner's. */
  query?: boolean;
}

/**
 * Answers the queries of one owned shard; returns the subscription (unsubscribe on release). Until
 * `caughtUp()` (the shard's index has what the stream held when it was taken over) it refuses,
 * so a replica that has just taken a shard over never answers short.
 */
export function serveShardQueries(nc: NatsConnection, shard: number, index: IndexStore, caughtUp: () => boolean, log: (msg: string, fields: Record<string, unknown>) => void): Subscription {
  // A queue group: while a lease changes hands both replicas may listen for a moment; one answers.
  return nc.subscribe(recordsSubject(shard), {
    queue: 'shard-owner',
    callback: (err, msg) => {
      if (err !== null) return log('collector replica stopped answering a shard', { shard, err: err.message });
      if (!caughtUp()) {
        msg.respond(JSON.stringify({ error: `shard ${shard} is being indexed from the stream by its new owner; retry shortly` } satisfies Chunk));
        return void msg.respond(Empty);
      }
      void answer(msg, shardView(index, shard)).catch((e: unknown) => log('collector replica failed to answer a query', { shard, err: (e as Error).message }));
    },
  });
}

/** The local store holds every shard this replica owns: a shard answers with its own sidecars' records only. */
function shardView(index: IndexStore, shard: number): CollectorStore {
  return {
    ...index,
    query: (q) => ({
      async *[Symbol.asyncIterator]() {
        for await (const r of index.query(q)) if (shardOf(r.sidecar) === shard) yield r;
      },
    }),
  };
}

async function answer(msg: Msg, index: CollectorStore): Promise<void> {
  const wire = msg.json<WireQuery>();
  const q: RecordQuery = { ...wire, namespaces: wire.namespaces === undefined ? undefined : new Set(wire.namespaces) };
  let lines: string[] = [];
  let bytes = 0;
  try {
    for await (const rec of runQuery(index, q)) {
      const line = JSON.stringify(rec);
      if (bytes + line.length > CHUNK_BYTES && lines.length > 0) {
        msg.respond(JSON.stringify({ records: lines } satisfies Chunk));
        lines = [];
        bytes = 0;
      }
      lines.push(line);
      bytes += line.length;
    }
    if (lines.length > 0) msg.respond(JSON.stringify({ records: lines } satisfies Chunk));
  } catch (err) {
    msg.respond(JSON.stringify({ error: (err as Error).message, query: err instanceof QueryError } satisfies Chunk));
  }
  msg.respond(Empty);
}

interface Found extends StoredRecord {
  start: number;
}

/** Newest first; ties by sidecar, then sequence, both descending (as the embedded store orders). */
const newestFirst = (a: Found, b: Found): number => b.start - a.start || (a.sidecar < b.sidecar ? 1 : a.sidecar > b.sidecar ? -1 : b.seq - a.seq);

/** Asks every shard's owner and merges, newest first; throws if a shard cannot answer. */
export async function askShards(nc: NatsConnection, q: RecordQuery): Promise<StoredRecord[]> {
  const wire: WireQuery = { ...q, namespaces: q.namespaces === undefined ? undefined : [...q.namespaces] };
  const payload = JSON.stringify(wire);
  const answers = await Promise.all(Array.from({ length: SHARDS }, (_, shard) => askShard(nc, shard, payload)));
  return answers.flat().sort(newestFirst).slice(0, q.limit);
}

async function askShard(nc: NatsConnection, shard: number, payload: string): Promise<Found[]> {
  const found: Found[] = [];
  let replies;
  try {
    // noMux: its own inbox, so "no responders" (a shard with no owner) fails at once instead of reading as the empty last message.
    replies = await nc.requestMany(recordsSubject(shard), payload, { strategy: 'sentinel', maxWait: QUERY_TIMEOUT_MS, noMux: true });
  } catch (err) {
    throw ownerless(shard, err);
  }
  let complete = false;
  let first = true;
  const silent = setTimeout(() => (replies as unknown as { stop(err?: Error): void }).stop(new Error(`no answer within ${FIRST_REPLY_MS} ms`)), FIRST_REPLY_MS);
  try {
    for await (const m of replies) {
      if (first) clearTimeout(silent);
      first = false;
      if (m.data.length === 0) {
        if (m.headers?.hasError === true) throw ownerless(shard, new Error(`status ${m.headers.code} ${m.headers.description}`));
        complete = true;
        break;
      }
      const chunk = m.json<Chunk>();
      if (chunk.error !== undefined) throw chunk.query === true ? new QueryError(chunk.error) : new Error(`shard ${shard}: ${chunk.error}`);
      for (const line of chunk.records ?? []) {
        const rec = JSON.parse(line) as Record<string, unknown>;
        found.push({ sidecar: String(rec['audit.sidecar_id']), incarnation: typeof rec['audit.incarnation'] === 'string' ? rec['audit.incarnation'] : '', seq: Number(rec['audit.seq']), start: Number(rec['audit.start_unix_ms'] ?? 0), bytes: Buffer.from(line) });
      }
    }
  } catch (err) {
    if (err instanceof QueryError || (err as Error).message.startsWith(`shard ${shard}:`)) throw err;
    throw ownerless(shard, err);
  } finally {
    clearTimeout(silent);
  }
  if (!complete) throw ownerless(shard, new Error(`no complete answer within ${QUERY_TIMEOUT_MS} ms`));
  return found;
}

const ownerless = (shard: number, err: unknown): Error => new Error(`shard ${shard} of ${SHARDS} could not answer (no owner right now, or its lease is being taken over): ${(err as Error)?.message}; retry shortly`, { cause: err });
