import { chainKeyOf } from '../store/chain-key.js';
import type { RootDatabase } from 'lmdb';
import { leafHash, nodeHash } from '../../../ledger/merkle.js';
import { encodeWitnessEntry, EMPTY_LOG_ROOT, treeHeadSigningInput, type TreeHead, type WitnessEntry } from '../../../ledger/witness-log.js';
import type { Logger } from '../../../command/log.js';
import type { CollectorSigner } from '../collector-key.js';
import type { CollectorStore, StoredLink } from '../collector-store.js';
import { foldParts, perfectParts, storedSubtree } from './log-tree.js';
import { committedSize, openWitnessDbs, type WitnessDbs, type WitnessedSidecar } from './witness-dbs.js';

/**
 * The collector's witness log (ledger/witness-log.ts): every link it stores, and every new head a
 * sidecar's heartbeat names, appended as leaves of one Merkle log, whose tree head the collector
 * signs every checkpoint interval. Appends are group-committed in order, one LMDB transaction at a
 * time, after the store has committed what they log (so the log never names what the store does
 * not hold); what a crash or a failed commit leaves unlogged is logged again from the store
 * (catchUp). The in-memory frontier (the perfect subtrees of the committed log) moves only once a
 * commit is on disk, so every proof is of committed leaves.
 */

export interface WitnessWrite {
  entries: WitnessEntry[];
  /** More writes of the same transaction (witness-dbs.ts), e.g. a sidecar's witnessed heads. */
  also?: (dbs: WitnessDbs) => void;
}

interface Queued {
  write: WitnessWrite;
  resolve(): void;
  reject(err: unknown): void;
}

type Frontier = Array<{ level: number; hash: Buffer }>;

/** A sidecar's stored links from batch `from` through `to`, at most `limit`, in order (lost ranges have none). */
export type StoredLinks = (sidecar: string, from: number, to: number, limit: number) => StoredLink[];

/** Links logged per transaction when catching up with a store. */
const CATCH_UP_LINKS = 20_000;
/** Forks kept per sidecar, oldest dropped. */
const MAX_FORKS = 16;

export class WitnessLog {
  readonly dbs: WitnessDbs;
  /** Per sidecar: how far its links are logged, its witnessed heartbeat, forks (as committed or queued). */
  readonly sidecars = new Map<string, WitnessedSidecar>();
  #signer: CollectorSigner;
  #log: Logger;
  #size: number;
  #frontier: Frontier;
  #latest: TreeHead | undefined;
  #queue: Queued[] = [];
  #writing: Promise<void> | undefined;
  #idle: Promise<void> = Promise.resolve();

  constructor(env: RootDatabase, signer: CollectorSigner, log: Logger = () => {}) {
    this.dbs = openWitnessDbs(env);
    this.#signer = signer;
    this.#log = log;
    this.#size = 0;
    this.#frontier = [];
    this.#reload();
    const last = Array.from(this.dbs.heads.getRange({ reverse: true, limit: 1 }))[0];
    this.#latest = last?.value;
  }

  get size(): number {
    return this.#size;
  }

  get signer(): CollectorSigner {
    return this.#signer;
  }

  /** The newest signed tree head, if any. */
  get latest(): TreeHead | undefined {
    return this.#latest;
  }

  /** MTH of the committed log's first `n` leaves. */
  root(n = this.#size): Buffer {
    if (n === this.#size) return foldParts(this.#frontier.map((f) => f.hash));
    return foldParts(perfectParts(0, n).map(([level, i]) => Buffer.from(this.dbs.nodes.get([level, i])!)));
  }

  readonly subtree = (lo: number, hi: number): Buffer => storedSubtree(this.dbs)(lo, hi);

  #reload(): void {
    this.#size = committedSize(this.dbs);
    this.#frontier = perfectParts(0, this.#size).map(([level, i]) => ({ level, hash: Buffer.from(this.dbs.nodes.get([level, i])!) }));
    this.sidecars.clear();
    for (const { key, value } of this.dbs.sidecars.getRange()) this.sidecars.set(key, value);
  }

  /** The sidecar's witness state, created empty. */
  sidecar(id: string): WitnessedSidecar {
    let s = this.sidecars.get(id);
    if (s === undefined) this.sidecars.set(id, (s = { logged_through: 0 }));
    return s;
  }

  /** Appends in order; settles once committed and flushed. */
  append(write: WitnessWrite): Promise<void> {
    const done = new Promise<void>((resolve, reject) => this.#queue.push({ write, resolve, reject }));
    this.#idle = done.then(
      () => undefined,
      () => undefined,
    );
    this.#pump();
    return done;
  }

  /** Settles once everything appended so far is committed (or failed). */
  settled(): Promise<void> {
    return this.#idle;
  }

  /**
   * Logs links the store holds and the log does not: a run just stored, and before it (after a
   * crash or a failed commit) every link of that sidecar since its last logged one, read back from
   * the store by `stored` (a range of its links).
   */
  async logStored(sidecar: string, links: readonly StoredLink[], lastBatch: number, stored: StoredLinks): Promise<void> {
    const s = this.sidecar(sidecar);
    const first = links.find((l) => l.batch > s.logged_through)?.batch ?? lastBatch + 1;
    const missed = first > s.logged_through + 1 ? stored(sidecar, s.logged_through + 1, Math.min(first, lastBatch + 1) - 1, Number.MAX_SAFE_INTEGER) : [];
    const entries = [...missed, ...links.filter((l) => l.batch > s.logged_through)].map((l) => linkEntry(sidecar, l));
    if (entries.length === 0) return;
    s.logged_through = Math.max(s.logged_through, lastBatch);
    const state = { ...s };
    await this.append({ entries, also: (dbs) => void dbs.sidecars.put(sidecar, state) });
  }

  /** At start: logs every stored link not yet logged (a store older than the log included), in bounded transactions. */
  async catchUp(store: Pick<CollectorStore, 'sidecars'>, stored: StoredLinks): Promise<number> {
    let logged = 0;
    for (const state of await store.sidecars()) {
      for (;;) {
        const s = this.sidecar(chainKeyOf(state));
        const chunk = stored(chainKeyOf(state), s.logged_through + 1, state.position.last_batch, CATCH_UP_LINKS);
        if (chunk.length === 0) break;
        await this.logStored(chainKeyOf(state), chunk, chunk[chunk.length - 1].batch, stored);
        logged += chunk.length;
      }
    }
    return logged;
  }

  /** Records a fork found for a sidecar (kept, bounded), durably. */
  recordFork(sidecar: string, fork: NonNullable<WitnessedSidecar['forks']>[number]): Promise<void> {
    const s = this.sidecar(sidecar);
    s.forks = [...(s.forks ?? []), fork].slice(-MAX_FORKS);
    const state = { ...s };
    return this.append({ entries: [], also: (dbs) => void dbs.sidecars.put(sidecar, state) });
  }

  /**
   * Signs a tree head of the committed log now. A head of a size not signed before is kept in the
   * store (the first one of each size); the same size again is signed afresh (a newer time) but not kept.
   */
  async checkpoint(): Promise<TreeHead> {
    const size = this.#size;
    const root = size === 0 ? EMPTY_LOG_ROOT : this.root(size).toString('hex');
    const unixMs = Date.now();
    const th: TreeHead = { tree_size: size, root, unix_ms: unixMs, key_id: this.#signer.keyId, sig: this.#signer.sign(treeHeadSigningInput({ tree_size: size, root, unix_ms: unixMs })) };
    const known = this.dbs.keys.get(this.#signer.keyId);
    const chainPem = this.#signer.chainPem;
    const keyEntry = { public_key: this.#signer.publicKeySpki.toString('base64'), ...(chainPem === undefined ? {} : { chain_pem: chainPem }) };
    const fresh = this.dbs.heads.get(size) === undefined;
    if (fresh || known?.chain_pem !== keyEntry.chain_pem || known === undefined) {
      await this.dbs.env.batch(() => {
        if (known === undefined || known.chain_pem !== keyEntry.chain_pem) void this.dbs.keys.put(this.#signer.keyId, keyEntry);
        if (fresh) void this.dbs.heads.put(size, th);
      });
      await this.dbs.env.flushed;
    }
    this.#latest = th;
    return th;
  }

  /** The first stored tree head covering leaf `index` (whose size is above it), if any. */
  headCovering(index: number): TreeHead | undefined {
    return Array.from(this.dbs.heads.getRange({ start: index + 1, limit: 1 }), ({ value }) => value)[0];
  }

  #pump(): void {
    if (this.#writing !== undefined || this.#queue.length === 0) return;
    const group = this.#queue.splice(0);
    const frontier: Frontier = this.#frontier.map((f) => ({ ...f }));
    let size = this.#size;
    const puts: Array<() => void> = [];
    const dbs = this.dbs;
    for (const { write } of group) {
      for (const e of write.entries) {
        const bytes = encodeWitnessEntry(e);
        const index = size++;
        const leaf = leafHash(bytes);
        puts.push(() => {
          void dbs.entries.put(index, bytes);
          void dbs.nodes.put([0, index], leaf);
          if (e.kind === 'link') void dbs.links.put([e.sidecar, e.batch], index);
        });
        frontier.push({ level: 0, hash: leaf });
        for (let top = frontier.length - 1; top > 0 && frontier[top - 1].level === frontier[top].level; top--) {
          const right = frontier.pop()!;
          const left = frontier.pop()!;
          const level = right.level + 1;
          const node = { level, hash: nodeHash(left.hash, right.hash) };
          frontier.push(node);
          const at = (index + 1) / 2 ** level - 1;
          puts.push(() => void dbs.nodes.put([level, at], node.hash));
        }
      }
      if (write.also !== undefined) puts.push(() => write.also!(dbs));
    }
    this.#writing = (async () => {
      const txn = dbs.env.batch(() => puts.forEach((p) => p()));
      await txn;
      await ((txn as { flushed?: PromiseLike<unknown> }).flushed ?? dbs.env.flushed);
    })().then(
      () => {
        this.#size = size;
        this.#frontier = frontier;
        for (const p of group) p.resolve();
      },
      (err: unknown) => {
        this.#log('error', 'collector witness log write failed: what it would have logged is logged again from the store', { err: (err as Error)?.message });
        this.#reload();
        for (const p of group) p.reject(err);
      },
    );
    void this.#writing.finally(() => {
      this.#writing = undefined;
      this.#pump();
    });
  }
}

export function linkEntry(sidecar: string, l: StoredLink): WitnessEntry {
  return { kind: 'link', sidecar, batch: l.batch, head: l.head, ...(l.sig !== undefined && l.key !== undefined ? { key_id: l.key } : {}) };
}
