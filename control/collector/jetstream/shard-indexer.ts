import { chainKeyOf } from '../store/chain-key.js';
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import type { CollectorStore } from '../collector-store.js';
import type { CollectorStores } from '../store/store-layout.js';
import type { StoredRun } from '../ingest/sidecar-chain.js';
import { decodeLinkMessage } from './link-message.js';
import { shardSubject, STREAM } from './tier-layout.js';

/**
 * The owner's side of one shard: a durable pull consumer of the shard's subject feeds the
 * replica's own LMDB store (the same store and indexes as the embedded collector), which answers
 * the shard's queries. The consumer starts after the last stream sequence the local store holds
 * (kept in its meta database with the indexes), so a replica that owned the shard before goes on
 * where it was, and a new one rebuilds the shard from the stream. Messages are acknowledged once
 * the local write is durable; a link already held is skipped, so a redelivery changes nothing.
 */

/** Messages delivered ahead of their acks, and written at most in one LMDB transaction. */
const FETCH_MESSAGES = 512;
/** A consumer of a replica gone this long is removed by the servers. */
const CONSUMER_INACTIVE_MS = 24 * 3_600_000;

export type IndexStore = CollectorStore & { readonly stores: CollectorStores };

export interface ShardIndexer {
  /** Every message published before the consumer last found nothing pending is in the local store. */
  readonly caughtUp: boolean;
  /** Time spent writing the local store, for the benchmark's split of a record's cost. */
  readonly indexMs: number;
  close(): Promise<void>;
}

export interface ShardIndexerDeps {
  js: JetStreamClient;
  jsm: JetStreamManager;
  index: IndexStore;
  replicaId: string;
  shard: number;
  /** Each run once it is in the local store (fleet-wide anomaly detection). */
  onIndexed(run: StoredRun): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown>): void;
}

const positionKey = (shard: number): string => `jetstream_shard_${shard}_seq`;

export async function startShardIndexer({ js, jsm, index, replicaId, shard, onIndexed, log }: ShardIndexerDeps): Promise<ShardIndexer> {
  const name = `idx-${replicaId}-${shard}`;
  const position = index.stores.meta.get(positionKey(shard)) ?? 0;
  await jsm.consumers.delete(STREAM, name).catch(() => false);
  await jsm.consumers.add(STREAM, {
    durable_name: name,
    ack_policy: AckPolicy.Explicit,
    filter_subject: shardSubject(shard),
    ...(position === 0 ? { deliver_policy: DeliverPolicy.All } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: position + 1 }),
    max_ack_pending: FETCH_MESSAGES * 4,
    inactive_threshold: nanos(CONSUMER_INACTIVE_MS),
  });
  const consumer = await js.consumers.get(STREAM, name);
  let stopped = false;
  const state = { caughtUp: false, indexMs: 0 };

  async function apply(msgs: JsMsg[]): Promise<void> {
    const started = performance.now();
    // One run per chain for the whole fetched set, its links in stream order: one LMDB write
    // each (not one a link), the chain's state as of its last new link. A link already held,
    // in the store or earlier in this set, is skipped, so a redelivery changes nothing.
    const byChain = new Map<string, StoredRun & { held: Set<number> }>();
    for (const m of msgs) {
      let decoded;
      try {
        decoded = decodeLinkMessage(m.data);
      } catch (err) {
        // Not ours to drop silently: say so loudly; verify nats:// names it too.
        log('error', 'collector replica cannot read a stream message: skipped in its index', { shard, seq: m.seq, err: (err as Error).message });
        continue;
      }
      const { sidecar, link, batch } = decoded;
      const chain = chainKeyOf(sidecar);
      const run = byChain.get(chain);
      if (run?.held.has(link.batch) === true) continue;
      if ((await index.link(chain, link.batch))?.head === link.head) continue;
      if (run === undefined) byChain.set(chain, { sidecar, links: [link], batches: batch === null ? [] : [batch], held: new Set([link.batch]) });
      else {
        run.sidecar = sidecar;
        run.links.push(link);
        if (batch !== null) run.batches.push(batch);
        run.held.add(link.batch);
      }
    }
    const runs: StoredRun[] = [...byChain.values()].map(({ sidecar, links, batches }) => ({ sidecar, links, batches }));
    const writes = runs.map((run) => index.append(run));
    await Promise.all(writes);
    await index.stores.meta.put(positionKey(shard), msgs[msgs.length - 1].seq);
    state.indexMs += performance.now() - started;
    for (const m of msgs) m.ack();
    for (const run of runs) onIndexed(run);
  }

  // Messages arrive as fast as the consumer delivers them; the ones that queued while a write
  // was in flight go into the next write together.
  state.caughtUp = (await consumer.info()).num_pending === 0;
  const messages = await consumer.consume({ max_messages: FETCH_MESSAGES });
  const queue: JsMsg[] = [];
  let draining: Promise<void> | null = null;
  const drain = async (): Promise<void> => {
    while (queue.length > 0 && !stopped) {
      const msgs = queue.splice(0, FETCH_MESSAGES);
      try {
        await apply(msgs);
        state.caughtUp = msgs[msgs.length - 1].info.pending === 0;
      } catch (err) {
        // Unacknowledged: the consumer delivers them again after its ack wait.
        log('warn', 'collector replica could not index messages of its shard: they come again', { shard, err: (err as Error).message });
      }
    }
    draining = null;
  };
  const loop = (async () => {
    for await (const m of messages) {
      queue.push(m);
      draining ??= drain();
    }
  })().catch((err: unknown) => log('error', 'collector replica stopped indexing its shard', { shard, err: (err as Error).message }));

  return {
    get caughtUp() {
      return state.caughtUp;
    },
    get indexMs() {
      return state.indexMs;
    },
    async close() {
      stopped = true;
      await messages.close();
      await loop;
      await draining;
    },
  };
}
