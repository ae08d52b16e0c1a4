import type { KeyObject } from 'node:crypto';
import { publicKeyFromSpki } from '../../../ledger/chain.js';
import type { ChainPosition } from '../../../ledger/link-verifier.js';
import type { EncodedBatch } from '../store/encoded-batch.js';
import type { CollectorStore, LostRange, SidecarState, StoredLink, VerifiedAppend } from '../collector-store.js';
import { chainKeyOf } from '../store/chain-key.js';

/**
 * One chain of a sidecar (one incarnation, store/chain-key.ts) as the collector holds it: what is stored (`state`), how far it is verified
 * (`tip`, ahead of the store by what is being written), its pinned key, its heartbeats, and the
 * one stream that owns it. Verified runs are written one at a time per sidecar: while one commit
 * is in flight the next verified runs queue up and go in the next commit together, so verification
 * never waits for the disk, and a failed commit can never leave a later run stored after a hole.
 */

/** A key a stream's Hello presented, and the stream's mTLS client certificate (DER, base64) if it had one; `spkiMatches`: it is a certificate of that key. */
export interface PresentedKey {
  keyId: string;
  spki: Buffer;
  key: KeyObject;
  certificate?: { der: string; spkiMatches: boolean };
}

/** The last signed heartbeat that verified. */
export interface HeartbeatSeen {
  unix_ms: number;
  received_unix_ms: number;
  last_batch: number;
  head: string;
}

/** A run the store committed: what listeners (tail, anomaly detection) are told. */
export interface StoredRun {
  sidecar: SidecarState;
  links: StoredLink[];
  batches: EncodedBatch[];
}

interface Pending {
  run: VerifiedAppend;
  resolve(): void;
  reject(err: unknown): void;
}

export class SidecarChain {
  state: SidecarState;
  tip: ChainPosition;
  /** Ranges recorded as lost, as far as verified (the store's, plus any being written). */
  lost: LostRange[];
  key: KeyObject;
  spki: Buffer;
  /** The key the newest stream's Hello presented (proved by its signature): it may differ from the pinned one only until an endorsed epoch link moves the pin to it. */
  presented: PresentedKey | undefined;
  heartbeat: HeartbeatSeen | undefined;
  /** The last Refusal of one of its streams (kept in memory). */
  refusal: { code: string; reason: string; unix_ms: number } | undefined;
  /** Last message from it on any stream (kept in memory; the store keeps the last write's time). */
  lastSeenUnixMs: number;
  /** The stream that ships this chain now; a newer Hello for the same chain takes it over. */
  owner: { supersede(): void } | undefined;
  #store: CollectorStore;
  #onStored: (run: StoredRun) => void;
  #queue: Pending[] = [];
  #writing: Promise<void> | undefined;
  #idle: Promise<void> = Promise.resolve();

  constructor(state: SidecarState, store: CollectorStore, onStored: (run: StoredRun) => void) {
    this.state = state;
    this.tip = { ...state.position };
    this.lost = state.lost ?? [];
    this.lastSeenUnixMs = state.last_seen_unix_ms;
    this.spki = Buffer.from(state.public_key, 'base64');
    const key = publicKeyFromSpki(this.spki);
    if (key === null) throw new Error(`stored public key of sidecar ${state.id} is not an Ed25519 key`);
    this.key = key;
    this.#store = store;
    this.#onStored = onStored;
  }

  /** What the store keeps this chain under: `SIDECAR_ID@POD_UID`, or the sidecar id when it has no incarnation. */
  get chainKey(): string {
    return chainKeyOf(this.state);
  }

  /**
   * Takes the stored state another collector moved the chain to (a store several collectors
   * write): what a stream verifies from next. Call only once settled(); a segment of an older
   * stream still being verified then fails its tip check.
   */
  adopt(state: SidecarState): void {
    if (state.key_id !== this.state.key_id) {
      const spki = Buffer.from(state.public_key, 'base64');
      const key = publicKeyFromSpki(spki);
      if (key === null) throw new Error(`stored public key of sidecar ${state.id} is not an Ed25519 key`);
      this.spki = spki;
      this.key = key;
    }
    this.state = state;
    this.tip = { ...state.position };
    this.lost = state.lost ?? [];
  }

  /**
   * Queues a verified run (the tip has already moved past it); resolves once it is stored. If a
   * commit fails, it and every run queued after it reject, and the tip falls back to the store.
   */
  write(run: VerifiedAppend): Promise<void> {
    const done = new Promise<void>((resolve, reject) => this.#queue.push({ run, resolve, reject }));
    this.#idle = done.then(
      () => undefined,
      () => undefined,
    );
    this.#pump();
    return done;
  }

  /** Settles once everything queued so far is written (or failed). */
  settled(): Promise<void> {
    return this.#idle;
  }

  #pump(): void {
    if (this.#writing !== undefined || this.#queue.length === 0) return;
    const group = this.#queue.splice(0);
    const run: VerifiedAppend = {
      sidecar: group[group.length - 1].run.sidecar,
      links: group.flatMap((p) => p.run.links),
      batches: group.flatMap((p) => p.run.batches),
    };
    this.#writing = this.#store.append(run).then(
      () => {
        this.state = run.sidecar;
        for (const p of group) p.resolve();
        this.#onStored(run);
      },
      (err: unknown) => {
        const later = this.#queue.splice(0);
        this.tip = { ...this.state.position };
        this.lost = this.state.lost ?? [];
        for (const p of [...group, ...later]) p.reject(err);
      },
    );
    void this.#writing.finally(() => {
      this.#writing = undefined;
      this.#pump();
    });
  }
}
