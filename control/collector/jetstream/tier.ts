import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Logger } from '../../../command/log.js';
import type { CollectorStore } from '../collector-store.js';
import type { StoredRun } from '../ingest/sidecar-chain.js';
import type { SidecarStatus } from '../api/sidecar-status.js';
import type { FleetAnomaly } from '../api/fleet-alerts.js';
import { createChainHeads, type PublishTimes } from './chain-heads.js';
import { connectJetStream, type JetStreamConfig } from './nats-connect.js';
import { startShardIndexer, type IndexStore, type ShardIndexer } from './shard-indexer.js';
import { startShardLeases, type ShardLeases } from './shard-leases.js';
import { askShards, serveShardQueries } from './shard-queries.js';
import { ASK_PREFIX, DIRECTORY_SUBJECT, ensureTier } from './tier-layout.js';
import type { DirectoryView, MeshDirectoryBook } from '../directory/mesh-directory.js';
import { createMergedDirectory, DIRECTORY_REFRESH_MS } from '../directory/merged-directory.js';

/**
 * One replica of the collector tier, wired: the connection, the stream and buckets, the chain
 * heads ingest writes through (chain-heads.ts), the shard leases, an indexer and a query
 * responder per owned shard, and the fleet-wide questions (/v1/sidecars, /v1/anomalies) asked of
 * every replica and merged. collector.ts starts it instead of writing its local store directly.
 */

export interface Anomalies {
  active: FleetAnomaly[];
  recent: FleetAnomaly[];
}

export interface TierDeps {
  /** The replica's local LMDB store: its shards' indexes, its evidence. Closed with the tier. */
  index: IndexStore;
  storeDir: string;
  /** Each run once a shard this replica owns indexed it. */
  onIndexed(run: StoredRun): void;
  /** This replica's view: the sidecars streaming to it, the anomalies of its shards. */
  localSidecars(): SidecarStatus[];
  localAnomalies(): Anomalies;
  /** This replica's mesh directory: shared with the others over NATS, and theirs merged in (tier.directory). */
  directory?: MeshDirectoryBook;
  log: Logger;
}

export interface Tier {
  readonly replicaId: string;
  /** Ingest writes through it; queries fan out through it. */
  readonly store: CollectorStore;
  readonly leases: ShardLeases;
  sidecars(): Promise<SidecarStatus[]>;
  anomalies(): Promise<Anomalies>;
  /** The fleet's mesh directory (every replica's book merged); null without deps.directory. */
  readonly directory: DirectoryView | null;
  ready(): { ok: boolean; reason?: string };
  /** Time spent so far: publish and compare-and-set on ingest, local index writes of owned shards. */
  times(): PublishTimes & { indexMs: number };
}

/** Replies gathered from every replica within this. */
const ASK_ALL_MS = 2_000;
const RECENT_ANOMALIES = 100;

export async function openTier(config: JetStreamConfig, deps: TierDeps): Promise<Tier> {
  const replicaId = replicaIdOf(deps.storeDir);
  const nc = await connectJetStream(config, `auditmesh-collector-${replicaId}`);
  try {
    return await wire(nc, config, deps, replicaId);
  } catch (err) {
    await nc.close();
    throw err;
  }
}

async function wire(nc: NatsConnection, config: JetStreamConfig, deps: TierDeps, replicaId: string): Promise<Tier> {
  const { index, log } = deps;
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const { chains, leases: leaseKv, replicas } = await ensureTier(nc, jsm, (msg) => log('warn', msg, {}));
  const heads = createChainHeads({ js, chains, maxPayload: nc.info?.max_payload ?? 1024 * 1024, indexed: (id, batch) => index.link(id, batch) });
  const indexers = new Map<number, Promise<ShardIndexer>>();
  const answering = new Map<number, Subscription>();
  let indexMsClosed = 0;
  /** Indexers being stopped: the local store closes only once they have. */
  const stopping = new Set<Promise<void>>();
  const release = (shard: number): void => {
    answering.get(shard)?.unsubscribe();
    answering.delete(shard);
    const indexer = indexers.get(shard);
    indexers.delete(shard);
    if (indexer === undefined) return;
    const stopped = indexer.then(
      async (i) => {
        await i.close();
        indexMsClosed += i.indexMs;
      },
      () => {},
    );
    stopping.add(stopped);
    void stopped.finally(() => stopping.delete(stopped));
  };
  const leases = startShardLeases({
    kv: leaseKv,
    replicaId,
    leaseMs: config.leaseMs,
    log,
    onAcquire(shard) {
      const starting: Promise<ShardIndexer> = (async (): Promise<ShardIndexer> => {
        // A cluster under strain may time the consumer's creation out: try again while the shard is ours.
        for (;;) {
          try {
            return await startShardIndexer({ js, jsm, index, replicaId, shard, onIndexed: deps.onIndexed, log });
          } catch (err) {
            if (!answering.has(shard)) throw err;
            log('warn', 'collector replica could not start indexing a shard it owns: trying again', { shard, err: (err as Error).message });
            await new Promise((resolve) => setTimeout(resolve, 1_000));
          }
        }
      })();
      indexers.set(shard, starting);
      let indexer: ShardIndexer | undefined;
      void starting.then((i) => (indexer = i), () => {});
      answering.set(shard, serveShardQueries(nc, shard, index, () => indexer?.caughtUp === true, (msg, fields) => log('warn', msg, fields)));
    },
    onRelease: release,
  });
  const merged = deps.directory === undefined ? null : createMergedDirectory(deps.directory, { replicaId, publish: (book) => nc.publish(DIRECTORY_SUBJECT, JSON.stringify(book)), refreshMs: DIRECTORY_REFRESH_MS, log });
  const everyone = [
    nc.subscribe(DIRECTORY_SUBJECT, {
      callback: (err, m) => {
        if (err !== null || merged === null) return;
        try {
          merged.received(m.json());
        } catch {
          log('warn', 'collector replica got a mesh directory book it cannot read: ignored', { subject: m.subject });
        }
      },
    }),
    nc.subscribe(`${ASK_PREFIX}.sidecars`, { callback: (_e, m) => void m.respond(JSON.stringify(deps.localSidecars())) }),
    nc.subscribe(`${ASK_PREFIX}.anomalies`, { callback: (_e, m) => void m.respond(JSON.stringify(deps.localAnomalies())) }),
  ];
  const askAll = async <T>(what: string): Promise<T[]> => {
    const replies = await nc.requestMany(`${ASK_PREFIX}.${what}`, undefined, { strategy: 'count', maxMessages: leases.liveReplicas(), maxWait: ASK_ALL_MS });
    const all: T[] = [];
    for await (const m of replies) all.push(m.json<T>());
    return all;
  };
  log('info', 'collector replica joined the JetStream tier', { replica: replicaId, servers: config.urls, replicas });

  let closing: Promise<void> | undefined;
  const store: CollectorStore = {
    ...heads,
    keepEvidence: (e) => index.keepEvidence(e),
    evidence: () => index.evidence(),
    query: (q) => ({
      async *[Symbol.asyncIterator]() {
        yield* await askShards(nc, q);
      },
    }),
    usedBytes: () => index.usedBytes(),
    close() {
      closing ??= (async () => {
        merged?.close();
        await leases.close();
        for (const shard of [...indexers.keys()]) release(shard);
        for (const s of everyone) s.unsubscribe();
        await Promise.all(stopping);
        await nc.drain().catch(() => {});
        await index.close();
      })();
      return closing;
    },
  };
  return {
    replicaId,
    store,
    leases,
    directory: merged,
    async sidecars() {
      return mergeSidecars((await askAll<SidecarStatus[]>('sidecars')).flat());
    },
    async anomalies() {
      const all = await askAll<Anomalies>('anomalies');
      return {
        active: all.flatMap((a) => a.active),
        recent: all.flatMap((a) => a.recent).sort((a, b) => b.raised_unix_ms - a.raised_unix_ms).slice(0, RECENT_ANOMALIES),
      };
    },
    ready: () => (nc.isClosed() ? { ok: false, reason: 'the NATS connection is closed' } : { ok: true }),
    times: () => ({ ...heads.times, indexMs: indexMsClosed }),
  };
}

/** One status per sidecar: the replica furthest along its chain, and of those the one that heard from it last. */
function mergeSidecars(all: SidecarStatus[]): SidecarStatus[] {
  const by = new Map<string, SidecarStatus>();
  for (const s of all) {
    const had = by.get(`${s.id}@${s.incarnation ?? ''}`);
    if (had === undefined || s.last_batch > had.last_batch || (s.last_batch === had.last_batch && s.last_seen > had.last_seen)) by.set(`${s.id}@${s.incarnation ?? ''}`, had?.heartbeat_current === true && !s.heartbeat_current ? { ...s, heartbeat_current: true, last_heartbeat: had.last_heartbeat } : s);
  }
  return [...by.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
}

/** A name for this replica that survives its restarts: kept in its store folder (consumers are named after it). */
function replicaIdOf(storeDir: string): string {
  const file = join(storeDir, 'replica-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const id = `${hostname().replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40)}-${randomBytes(4).toString('hex')}`;
  writeFileSync(file, `${id}\n`);
  return id;
}
