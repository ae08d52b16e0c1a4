import { chainKeyOf } from '../store/chain-key.js';
import type { JetStreamClient } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { CollectorStore, SidecarState, StoredLink } from '../collector-store.js';
import { encodeLinkMessage } from './link-message.js';
import { chainToken, linkMsgId, linkSubject, STREAM } from './tier-layout.js';

/**
 * The ingest side of the tier, behind the CollectorStore seam: a verified run is published to
 * the stream, one message per link with a message id of (sidecar, incarnation, batch), and only
 * once JetStream acknowledged every one is the chain's head in the KV bucket advanced, by
 * compare-and-set on the revision this replica read. Two replicas never both extend one chain:
 * the second compare-and-set fails (ChainMoved), the segment is not acknowledged, the sidecar
 * reconnects and resumes from the head in the bucket. What the loser published is the same links
 * (the sidecar signs one chain) and was stored once, by its message id.
 */

/** Another replica moved the chain (or pinned it first): retryable, the sidecar resumes from the Welcome. */
export class ChainMoved extends Error {}

/** Per chain, the heads of this many recent batches are remembered to check a resent batch against. */
const RECENT_HEADS = 4096;

export interface ChainHeadsDeps {
  js: JetStreamClient;
  chains: KV;
  /** The largest message the NATS servers take (their max_payload). */
  maxPayload: number;
  /** Where a resent batch's link may also be found: the replica's own index of the shards it owns. */
  indexed(sidecarId: string, batch: number): Promise<StoredLink | undefined>;
}

/** Time spent, for the benchmark's split of a record's cost. */
export interface PublishTimes {
  publishMs: number;
  casMs: number;
  links: number;
}

export type ChainHeadStore = Pick<CollectorStore, 'sidecars' | 'link' | 'append' | 'putSidecar' | 'current'> & { readonly times: PublishTimes };

const isWrongSequence = (err: unknown): boolean => /wrong last sequence|key exists/i.test((err as Error)?.message ?? '');

export function createChainHeads({ js, chains, maxPayload, indexed }: ChainHeadsDeps): ChainHeadStore {
  /** The revision of each chain's entry as this replica last read or wrote it: what its next compare-and-set expects. */
  const revisions = new Map<string, number>();
  const recent = new Map<string, Map<number, string>>();
  const times: PublishTimes = { publishMs: 0, casMs: 0, links: 0 };

  const remember = (id: string, links: readonly StoredLink[]): void => {
    let heads = recent.get(id);
    if (heads === undefined) recent.set(id, (heads = new Map()));
    for (const l of links) heads.set(l.batch, l.head);
    for (const batch of heads.keys()) {
      if (heads.size <= RECENT_HEADS) break;
      heads.delete(batch);
    }
  };

  /** Writes the entry with compare-and-set on the known revision (create when none is known). */
  const advance = async (state: SidecarState): Promise<void> => {
    const key = chainToken(chainKeyOf(state));
    const rev = revisions.get(chainKeyOf(state));
    try {
      revisions.set(chainKeyOf(state), rev === undefined ? await chains.create(key, JSON.stringify(state)) : await chains.update(key, JSON.stringify(state), rev));
    } catch (err) {
      if (!isWrongSequence(err)) throw err;
      revisions.delete(chainKeyOf(state));
      recent.delete(chainKeyOf(state));
      throw new ChainMoved(`the chain ${chainKeyOf(state)} was moved by another collector replica meanwhile: this segment is not acknowledged here; the sidecar resumes from the head it moved to`, { cause: err });
    }
  };

  return {
    times,
    async sidecars() {
      const states: SidecarState[] = [];
      for await (const key of await chains.keys()) {
        const entry = await chains.get(key);
        if (entry !== null && entry.operation === 'PUT') states.push(entry.json<SidecarState>());
      }
      return states;
    },
    async current(sidecarId) {
      const entry = await chains.get(chainToken(sidecarId));
      if (entry === null || entry.operation !== 'PUT') {
        revisions.delete(sidecarId);
        return undefined;
      }
      revisions.set(sidecarId, entry.revision);
      return entry.json<SidecarState>();
    },
    async link(sidecarId, batch) {
      const head = recent.get(sidecarId)?.get(batch);
      if (head !== undefined) return { batch, head } as StoredLink;
      const found = await indexed(sidecarId, batch);
      if (found !== undefined) return found;
      // Not a gap: this replica cannot see that far back. Retryable; after the Welcome the sidecar resends only what is new.
      throw new ChainMoved(`batch ${batch} of sidecar ${sidecarId} was resent, and this replica holds no copy of it to compare: reconnect and resume from the Welcome`);
    },
    async append(run) {
      const id = chainKeyOf(run.sidecar);
      const incarnation = run.sidecar.previous_keys?.[0]?.key_id ?? run.sidecar.key_id;
      const subject = linkSubject(id);
      const started = performance.now();
      let k = 0;
      const acks = run.links.map((link) => {
        const batch = link.kind === 'records' ? run.batches[k++] : null;
        const data = encodeLinkMessage({ sidecar: run.sidecar, link, batch });
        if (data.length > maxPayload) {
          return Promise.reject(new Error(`batch ${link.batch} of sidecar ${id} is ${data.length} bytes as a stream message, over the NATS servers' max_payload of ${maxPayload}: raise max_payload (or lower the sidecars' --batch-max-records)`));
        }
        return js.publish(subject, data, { msgID: linkMsgId(id, incarnation, link.batch), expect: { streamName: STREAM } });
      });
      await Promise.all(acks);
      const published = performance.now();
      await advance(run.sidecar);
      times.publishMs += published - started;
      times.casMs += performance.now() - published;
      times.links += run.links.length;
      remember(id, run.links);
    },
    putSidecar: (state) => advance(state),
  };
}
