import { createHash } from 'node:crypto';
import { DiscardPolicy, JetStreamApiError, RetentionPolicy, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { nanos } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';

/**
 * The collector tier's names on NATS, defined once: the stream that is the durable truth (one
 * message per verified link, on a subject of its chain's shard), the KV bucket of chain heads,
 * the KV bucket of shard leases, and the subjects replicas ask each other on. Every replica and
 * `auditmesh verify nats://` create or bind the same things from here.
 */

export const STREAM = 'AUDITMESH_LINKS';
const LINKS_PREFIX = 'auditmesh.links';
export const CHAINS_BUCKET = 'auditmesh-chains';
export const LEASES_BUCKET = 'auditmesh-shards';
/** Request-reply subjects between replicas: queries to shard owners, sidecar status, anomalies. */
export const ASK_PREFIX = 'auditmesh.ask';
/** Each replica's mesh directory book (control/collector/directory/merged-directory.ts), published to every other. */
export const DIRECTORY_SUBJECT = 'auditmesh.directory';
/** Shards of the stream: each has one owner at a time that indexes it and answers its queries. */
export const SHARDS = 8;
/** Replicas of the stream and buckets in production; a single nats-server (a local run) gets 1. */
export const PRODUCTION_REPLICAS = 3;
/**
 * A retried publish within this window is stored once (Nats-Msg-Id). A replica that died between
 * its publish and its head's compare-and-set leaves links the sidecar resends after it reconnects,
 * well within it; the verifier also tells a repeat stored later from a fork.
 */
export const DUPLICATE_WINDOW_MS = 30 * 60_000;

/** A sidecar id as one subject token and KV key: base64url (ids may hold `.`, `:`, `@`, `/`). */
export const chainToken = (sidecarId: string): string => Buffer.from(sidecarId, 'utf8').toString('base64url');
export const sidecarOfToken = (token: string): string => Buffer.from(token, 'base64url').toString('utf8');

/** The shard of a sidecar's chain: stable across replicas and restarts (SHA-256 of the id). */
export function shardOf(sidecarId: string): number {
  return createHash('sha256').update(sidecarId).digest().readUInt32BE(0) % SHARDS;
}

/** The subject a chain's links are published on: `auditmesh.links.SHARD.TOKEN`. */
export const linkSubject = (sidecarId: string): string => `${LINKS_PREFIX}.${shardOf(sidecarId)}.${chainToken(sidecarId)}`;
/** Every link of one shard (the one filter subject of its index consumer: nats-server 2.9 has no plural filters). */
export const shardSubject = (shard: number): string => `${LINKS_PREFIX}.${shard}.>`;
export const ALL_LINKS = `${LINKS_PREFIX}.>`;

/**
 * The message id of a link: (sidecar, incarnation, batch). The incarnation is the key the chain
 * was first pinned to: a sidecar whose journal started over has a new key, so its batch 1 is not
 * taken for a resend of the old one.
 */
export const linkMsgId = (sidecarId: string, incarnation: string, batch: number): string => `${chainToken(sidecarId)}:${incarnation}:${batch}`;

export interface TierHandles {
  chains: KV;
  leases: KV;
  replicas: number;
}

/** Creates (or binds, when another replica already did) the stream and both buckets. */
export async function ensureTier(nc: NatsConnection, jsm: JetStreamManager, log: (msg: string) => void): Promise<TierHandles> {
  let replicas = PRODUCTION_REPLICAS;
  try {
    await settling(() => addStream(jsm, replicas));
  } catch (err) {
    // A server that is not in a cluster cannot hold 3 replicas: a local run. Say so, and go on with one.
    if (!(err instanceof JetStreamApiError) || !/non-clustered|replicas > 1/i.test(err.message)) throw err;
    replicas = 1;
    log(`JetStream runs on a single server: the stream and buckets keep 1 replica (production runs 3 NATS nodes)`);
    await addStream(jsm, replicas);
  }
  const kvm = new Kvm(nc);
  const chains = await settling(() => kvm.create(CHAINS_BUCKET, { replicas, history: 1, storage: StorageType.File }));
  const leases = await settling(() => kvm.create(LEASES_BUCKET, { replicas, history: 1, storage: StorageType.File }));
  return { chains, leases, replicas };
}

/** How long a cluster that is still forming (no meta leader, peers not yet known) is waited for. */
const SETTLE_MS = 60_000;

/** Retries what a forming cluster refuses for a while ("no suitable peers", no meta leader yet). */
async function settling<T>(what: () => Promise<T>): Promise<T> {
  const started = Date.now();
  for (;;) {
    try {
      return await what();
    } catch (err) {
      const transient = /no suitable peers|insufficient resources|timeout|no responders|jetstream not (enabled|ready)|leader/i.test((err as Error).message);
      if (!transient || Date.now() - started > SETTLE_MS) throw err;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  }
}

async function addStream(jsm: JetStreamManager, replicas: number): Promise<void> {
  const config = {
    name: STREAM,
    subjects: [ALL_LINKS],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    num_replicas: replicas,
    duplicate_window: nanos(DUPLICATE_WINDOW_MS),
  };
  try {
    await jsm.streams.add(config);
  } catch (err) {
    // Already there (another replica made it): bind to it as it is.
    if (err instanceof JetStreamApiError && /already in use/i.test(err.message)) return;
    throw err;
  }
}
