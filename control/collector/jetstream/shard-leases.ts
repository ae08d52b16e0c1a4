import { setTimeout as sleep } from 'node:timers/promises';
import type { KV } from '@nats-io/kv';
import { SHARDS } from './tier-layout.js';

/**
 * Who owns which shard, held as leases in a KV bucket. Every replica renews a presence entry and
 * the leases it holds every third of the lease time, each renewal a compare-and-set on the
 * revision it holds, and watches the bucket, so it sees each renewal as it happens. An entry whose
 * revision has not moved for two renewal intervals (two thirds of the lease time) since this
 * replica saw it move, as its own clock measures it (no clocks are compared across machines),
 * belongs to a replica that died or was cut off: another takes it over with compare-and-set, so
 * exactly one wins. Lapses are looked for every twelfth of the lease time, between the renewals,
 * so the shards of a replica that died are owned again within the lease time of its death (the
 * last third is for the takeover and the new owner's catching up). A replica takes shards up to
 * its fair share of the live replicas and gives back what is over it, so shards spread again when
 * a replica comes back. A replica that could not renew for half the lease time stops owning
 * anything on its own, before another may take over (as a Kubernetes leader election's renew
 * deadline under its lease duration).
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
const isShardKey = (key: string): boolean => key.startsWith('shard.');
const replicaKey = (id: string): string => `replica.${id}`;

export function startShardLeases(opts: ShardLeasesOptions): ShardLeases {
  const { kv, replicaId, onAcquire, onRelease, log } = opts;
  const leaseMs = opts.leaseMs ?? DEFAULT_LEASE_MS;
  /** Unmoved this long since seen moving: lapsed (two renewals missed). */
  const lapseMs = (leaseMs * 2) / 3;
  /** Not renewed this long: this replica stops owning its shards, before another may take them. */
  const renewDeadlineMs = leaseMs / 2;
  const owned = new Map<number, number>();
  /** Per key, the revision last seen and when (this clock) it was first seen at that revision. */
  const seen = new Map<string, { revision: number; sinceMs: number }>();
  let lastRenewedMs = Date.now();
  let live = 1;
  let share = SHARDS;
  /** The other replicas counted live at the last tick. */
  let others = new Set<string>();
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

  /** Other replicas' presence entries as the watch delivers them (a deleted one is gone: that replica closed). */
  const presence = new Set<string>();
  /** The bucket's revision the watch has delivered through: every entry written before it has been seen. */
  let watchedRevision = 0;
  async function countLive(): Promise<void> {
    const mine = await kv.put(replicaKey(replicaId), JSON.stringify({ unix_ms: Date.now() }));
    // From the watch, not a listing of the bucket: a listing is a consumer per tick, and one whose
    // server died mid-listing never ends, which stopped every renewal and takeover of this replica.
    // Once the watch has delivered this put, it has delivered every presence written before it.
    const deadline = Date.now() + leaseMs / 12;
    while (watchedRevision < mine && Date.now() < deadline && !stopped) await sleep(10);
    const now = Date.now();
    const counted = new Set<string>();
    for (const key of presence) if (now - (seen.get(key)?.sinceMs ?? now) < lapseMs) counted.add(key);
    live = 1 + counted.size;
    others = counted;
  }

  async function tendShard(shard: number): Promise<void> {
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
    const unmovedMs = e === null ? 0 : observe(key, e.revision, Date.now());
    if (owned.size >= share) return;
    if (e === null || e.operation !== 'PUT') {
      take(shard, await kv.create(key, value), 'free');
      return;
    }
    const holder = e.json<{ owner: string }>().owner;
    // Its own lease from before a restart or a lapse: nobody else may hold it meanwhile, take it back now.
    if (holder === replicaId) return take(shard, await kv.update(key, value, e.revision), 'its own, taken back');
    if (unmovedMs >= lapseMs) take(shard, await kv.update(key, value, e.revision), `taken over from ${e.json<{ owner: string }>().owner}`);
  }

  async function tick(): Promise<void> {
    const now = Date.now();
    try {
      await countLive();
      share = Math.ceil(SHARDS / live);
      // Renewals first and all at once: a slow tick must not let a held lease lapse.
      const order = [...owned.keys(), ...Array.from({ length: SHARDS }, (_, i) => i).filter((i) => !owned.has(i))];
      const tend = async (shard: number): Promise<void> => {
        try {
          await tendShard(shard);
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
      // Cut off for half a lease time: another replica may take these over from two thirds of it; stop answering for them first.
      if (Date.now() - lastRenewedMs >= renewDeadlineMs) for (const shard of [...owned.keys()]) lose(shard, 'its leases could not be renewed');
    }
  }

  // Every entry's moves as they happen: a renewal is seen when it is written, not at the next tick.
  let watch: { stop(): void } | undefined;
  void kv.watch().then(
    async (entries) => {
      watch = entries;
      if (stopped) entries.stop();
      try {
        for await (const e of entries) {
          observe(e.key, e.revision, Date.now());
          watchedRevision = Math.max(watchedRevision, e.revision);
          if (e.key.startsWith('replica.') && e.key !== replicaKey(replicaId)) {
            if (e.operation === 'PUT') presence.add(e.key);
            else presence.delete(e.key);
          }
        }
      } catch (err) {
        if (!stopped) log('warn', 'collector replica stopped watching the shard leases: lapses are seen at its renewals only', { replica: replicaId, err: (err as Error).message });
      }
    },
    (err: unknown) => log('warn', 'collector replica cannot watch the shard leases: lapses are seen at its renewals only', { replica: replicaId, err: (err as Error).message }),
  );

  let timer: NodeJS.Timeout | undefined;
  let ticking = false;
  let running: Promise<void> = Promise.resolve();
  const loop = (): void => {
    if (stopped || ticking) return;
    clearTimeout(timer);
    ticking = true;
    running = tick().finally(() => {
      ticking = false;
      if (!stopped) timer = setTimeout(loop, leaseMs / 3);
    });
  };
  /** A lease of another replica lapsed (or a shard is free) and this one may take more: tick now, not at the next renewal. */
  const lapsed = (): boolean => {
    const now = Date.now();
    const unmoved = (key: string): boolean => now - (seen.get(key)?.sinceMs ?? now) >= lapseMs;
    // A replica counted live whose presence lapsed: the fair share grows.
    for (const key of others) if (unmoved(key)) return true;
    if (owned.size >= share) return false;
    for (const key of seen.keys()) if (isShardKey(key) && !owned.has(Number(key.slice('shard.'.length))) && unmoved(key)) return true;
    return false;
  };
  const checker = setInterval(() => {
    if (!ticking && lapsed()) loop();
  }, leaseMs / 12);
  checker.unref();
  loop();
  return {
    get owned() {
      return new Set(owned.keys());
    },
    liveReplicas: () => live,
    async close() {
      stopped = true;
      clearTimeout(timer);
      clearInterval(checker);
      watch?.stop();
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
