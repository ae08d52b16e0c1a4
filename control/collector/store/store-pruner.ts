import type { Key } from 'lmdb';
import type { StoredLink } from '../collector-store.js';
import { BatchBlob } from './batch-blob.js';
import { batchEntries, encodeBatch } from './encoded-batch.js';
import { indexRecord } from './record-index.js';
import { openPruneDbs, type PruneDbs, type PruneEntry, type PruneReason } from './prune-log.js';
import type { CollectorStores } from './store-layout.js';

/**
 * Removes whole batches from the collector's store, oldest first, a prefix of one sidecar's chain
 * at a time and always through a signed link, in one transaction with its PruneEntry: its links,
 * records and their time, service and error entries. (Request and trace id entries stay in the
 * log-structured id index; a lookup skips those whose batch is gone.) What may be pruned is
 * bounded by `keep`: with an exporter, nothing it has not exported.
 */

/** Links removed in one transaction at most: a long prefix is pruned in several, each its own entry. */
export const MAX_PRUNE_LINKS = 256;

export interface PrunerOptions {
  /** The last batch of a sidecar that may be pruned (Infinity: any). */
  keep(sidecar: string): number;
  /** Told of each pruning once it is committed. */
  onPruned(entry: PruneEntry): void;
}

/** A prefix of one sidecar's chain that may go: through `through` (a signed link). */
interface Prefix {
  sidecar: string;
  links: StoredLink[];
}

export class StorePruner {
  readonly dbs: PruneDbs;
  #stores: CollectorStores;
  #opts: PrunerOptions;
  #serial = 0;

  constructor(stores: CollectorStores, opts: PrunerOptions) {
    this.#stores = stores;
    this.dbs = openPruneDbs(stores.env);
    this.#opts = opts;
  }

  /** Every sidecar id in the store. */
  #sidecars(): string[] {
    return Array.from(this.#stores.sidecars.getKeys(), String);
  }

  /**
   * A sidecar's oldest links that may go: up to MAX_PRUNE_LINKS, ending at the last signed one
   * that `admit` allows (links are sealed in chain order). Empty when none.
   */
  #prefix(sidecar: string, admit: (l: StoredLink) => boolean): StoredLink[] {
    const keep = this.#opts.keep(sidecar);
    const links: StoredLink[] = [];
    let signed = 0;
    for (const { value: l } of this.#stores.links.getRange({ start: [sidecar, 0], end: [sidecar, Number.MAX_SAFE_INTEGER], limit: MAX_PRUNE_LINKS })) {
      if (l.batch > keep || !admit(l)) break;
      links.push(l);
      if (l.sig !== undefined && l.key !== undefined) signed = links.length;
    }
    return links.slice(0, signed);
  }

  /** Prunes every batch sealed before `cutoffUnixMs` that `keep` allows; resolves with the entries. */
  async pruneOlderThan(cutoffUnixMs: number): Promise<PruneEntry[]> {
    const done: PruneEntry[] = [];
    for (const sidecar of this.#sidecars()) {
      for (;;) {
        const links = this.#prefix(sidecar, (l) => l.sealed_unix_ms < cutoffUnixMs);
        if (links.length === 0) break;
        done.push(await this.#prune({ sidecar, links }, 'retention'));
      }
    }
    return done;
  }

  /**
   * Prunes the oldest prunable prefix of any sidecar (the one whose first link was sealed
   * earliest); resolves with its entry, or null when nothing may be pruned.
   */
  async pruneOldest(reason: PruneReason): Promise<PruneEntry | null> {
    let oldest: Prefix | undefined;
    for (const sidecar of this.#sidecars()) {
      const links = this.#prefix(sidecar, () => true);
      if (links.length > 0 && (oldest === undefined || links[0].sealed_unix_ms < oldest.links[0].sealed_unix_ms)) oldest = { sidecar, links };
    }
    return oldest === undefined ? null : this.#prune(oldest, reason);
  }

  async #prune({ sidecar, links }: Prefix, reason: PruneReason): Promise<PruneEntry> {
    const s = this.#stores;
    const last = links[links.length - 1];
    const held = links.filter((l) => l.kind === 'records');
    const entry: PruneEntry = {
      sidecar,
      from_batch: links[0].batch,
      to_batch: last.batch,
      records: held.reduce((n, l) => n + l.count, 0),
      ...(held.length === 0 ? {} : { first_seq: held[0].first_seq, last_seq: held[held.length - 1].first_seq + held[held.length - 1].count - 1 }),
      head: last.head,
      newest_sealed_unix_ms: Math.max(...links.map((l) => l.sealed_unix_ms)),
      reason,
      unix_ms: Date.now(),
    };
    const write = s.env.batch(() => {
      for (const l of links) {
        if (l.kind === 'records') this.#removeBatch(sidecar, l.batch);
        void s.links.remove([sidecar, l.batch]);
      }
      void this.dbs.pruned.put(sidecar, { batch: last.batch, last_seq: last.first_seq + last.count - 1, head: last.head, epoch: last.epoch, epoch_key: last.key!, sealed_unix_ms: last.sealed_unix_ms });
      void this.dbs.prunes.put([entry.unix_ms, this.#serial++], entry);
    });
    await write;
    await (write as { flushed?: PromiseLike<unknown> }).flushed;
    this.#opts.onPruned(entry);
    return entry;
  }

  /** A records batch's value and the index entries ingest wrote for it, found again from its records. In a write transaction. */
  #removeBatch(sidecar: string, batch: number): void {
    const s = this.#stores;
    const bytes = s.batches.get([sidecar, batch]);
    if (bytes === undefined) return;
    const blob = new BatchBlob(bytes);
    const encoded = encodeBatch(sidecar, batch, blob.firstSeq, blob.all().map((b) => ({ bytes: b, index: indexRecord(b) })));
    for (const { db, key } of batchEntries(encoded)) void s[db].remove(key as unknown as Key);
    // The writer's identity stamp and its index entry (lmdb-store.ts) go with the batch.
    const identity = s.identities.get([sidecar, batch]);
    if (identity !== undefined) {
      void s.identities.remove([sidecar, batch]);
      void s.byIdentity.remove([identity, encoded.newest, sidecar, batch]);
    }
    void s.batches.remove([sidecar, batch]);
  }
}
