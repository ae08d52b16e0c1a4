import type { KV } from '@nats-io/kv';
import { SHARDS } from './tier-layout.js';

/**
 * Who owns which shard, held as leases in a KV bucket. Every replica renews a presence entry and
 * the leases it holds every third of the lease time, each renewal a compare-and-set on the
 * revision it holds. An entry whose revision has not moved for a whole lease time, as this
 * replica's own clock measures it (no clocks are compared across machines), belongs to a replica
 * that died or was cut off: another takes it over with compare-and-set, so exactly one wins. A
 * replica takes shards up to its fair share of the live replicas and gives back what is over it,
 * so shards spread again when a replica comes back. A replica that could not renew for a lease
 * time stops owning anything on its own, before another may take over.
 */

export const DEFAULT_LEASE_MS = 15_000;

export interface ShardLeasesOptions {
  kv: KV;
  replicaId: string;
  leaseMs?: number;
  /** This replica now owns the shard (start indexing it and answering for it). */
  onAcquire(shard: number): void;
  /** It no longer does (stop). */
  onRelease(shard: number): void;
  log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown>): void;
}

export interface ShardLeases {
  /** Shards this replica owns now. */
  readonly owned: ReadonlySet<number>;
  /** Replicas whose presence moved within a lease time (this one included). */
  liveReplicas(): number;
  close(): Promise<void>;
}

const shardKey = (shard: number): string => `shard.${shard}`;
const replicaKey = (id: string): string => `replica.${id}`;

export function startShardLeases(opts: ShardLeasesOptions): ShardLeases {
  const { kv, replicaId, onAcquire, onRelease, log } = opts;
  const leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
  const owned = new Map<number, number>();
  /** Per key, the revision last seen and when (this clock) it was first seen at that revision. */
  const seen = new Map<string, { revision: number; sinceMs: number }>();
  let lastRenewedMs = Date.now();
  let live = 1;
  let stopped = false;

  const observe = (key: string, revision: number, now: number): number => {
    const s = seen.get(key);
    if (s === undefined || s.revision !== revision) seen.set(key, { revision, sinceMs: now });
    return now - (seen.get(key)?.sinceMs ?? now);
  };
  const lose = (shard: number, why: string): void => {
    if (!owned.delete(shard)) return;
    log('warn', 'collector replica gave up a shard', { shard, replica: replicaId, why });
    onRelease(shard);
  };
  const take = (shard: number, revision: number, how: string): void => {
    owned.set(shard, revision);
    log('info', 'collector replica owns a shard', { shard, replica: replicaId, how });
    onAcquire(shard);
  };
  const value = JSON.stringify({ owner: replicaId });

  async function countLive(now: number): Promise<void> {
    await kv.put(replicaKey(replicaId), JSON.stringify({ unix_ms: Date.now() }));
    let n = 0;
    for await (const key of await kv.keys('replica.*')) {
      const e = await kv.get(key);
      if (e === null || e.operation !== 'PUT') continue;
      if (key === replicaKey(replicaId) || observe(key, e.revision, now) < leaseMs) n++;
    }
    live = Math.max(1, n);
  }

  async function tendShard(shard: number, share: number, now: number): Promise<void> {
    const key = shardKey(shard);
    const e = await kv.get(key);
    const mine = owned.get(shard);
    if (mine !== undefined) {
      if (e === null || e.operation !== 'PUT' || e.json<{ owner: string }>().owner !== replicaId) return lose(shard, 'its lease was taken over');
      // A renewal the servers stored but whose answer was lost (a NATS node died meanwhile) moved the revision: still ours.
      if (e.revision !== mine) owned.set(shard, e.revision);
      if (owned.size > share) {
        // Over the fair share: give it back for a replica with fewer.
        owned.delete(shard);
        onRelease(shard);
        await kv.delete(key, { previousSeq: e.revision });
        return;
      }
      owned.set(shard, await kv.update(key, value, e.revision));
      return;
    }
    // Watched even at the fair share, so a lease is known lapsed the moment the share grows.
    const unmovedMs = e === null ? 0 : observe(key, e.revision, now);
    if (owned.size >= share) return;
    if (e === null || e.operation !== 'PUT') {
      take(shard, await kv.create(key, value), 'free');
      return;
    }
    const holder = e.json<{ owner: string }>().owner;
    // Its own lease from before a restart or a lapse: nobody else may hold it meanwhile, take it back now.
    if (holder === replicaId) return take(shard, await kv.update(key, value, e.revision), 'its own, taken back');
    if (unmovedMs >= leaseMs) take(shard, await kv.update(key, value, e.revision), `taken over from ${e.json<{ owner: string }>().owner}`);
  }

  async function tick(): Promise<void> {
    const now = Date.now();
    try {
      await countLive(now);
      const share = Math.ceil(SHARDS / live);
      // Renewals first and all at once: a slow tick must not let a held lease lapse.
      const order = [...owned.keys(), ...Array.from({ length: SHARDS }, (_, i) => i).filter((i) => !owned.has(i))];
      const tend = async (shard: number): Promise<void> => {
        try {
          await tendShard(shard, share, now);
        } catch (err) {
          if (!/wrong last sequence/i.test((err as Error).message)) throw err;
          // A write of ours whose answer timed out may have moved it; else another replica won it.
          const e = await kv.get(shardKey(shard));
          if (owned.has(shard) && e?.operation === 'PUT' && e.json<{ owner: string }>().owner === replicaId) owned.set(shard, e.revision);
          else lose(shard, 'another replica won it');
        }
      };
      const held = order.filter((i) => owned.has(i));
      await Promise.all(held.map(tend));
      for (const shard of order.slice(held.length)) if (!stopped) await tend(shard);
      lastRenewedMs = now;
    } catch (err) {
      log('warn', 'collector replica could not renew its shard leases', { replica: replicaId, err: (err as Error).message });
      // Cut off for a lease time: another replica may take these over now; stop answering for them first.
      if (Date.now() - lastRenewedMs >= leaseMs * 0.9) for (const shard of [...owned.keys()]) lose(shard, 'its leases could not be renewed');
    }
  }

  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  const loop = (): void => {
    if (stopped) return;
    running = tick().finally(() => {
      if (!stopped) timer = setTimeout(loop, leaseMs / 3);
    });
  };
  loop();
  return {
    get owned() {
      return new Set(owned.keys());
    },
    liveReplicas: () => live,
    async close() {
      stopped = true;
      clearTimeout(timer);
      await running;
      // Hand the shards back at once, so another replica need not wait a lease time.
      for (const [shard, revision] of owned) {
        owned.delete(shard);
        onRelease(shard);
        await kv.delete(shardKey(shard), { previousSeq: revision }).catch(() => {});
      }
      await kv.delete(replicaKey(replicaId)).catch(() => {});
    },
  };
}
