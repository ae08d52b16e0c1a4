import { fail } from '../../../ledger/link-verifier.js';
import type { BatchHeader } from '../../../ledger/journal-layout.js';
import type { Heartbeat } from '../../../wire/sync-wire.js';
import type { CollectorStore } from '../collector-store.js';
import type { SidecarChain } from '../ingest/sidecar-chain.js';
import type { WitnessLog } from './witness-log.js';
import type { ForkAfterWitness, WitnessedHead } from './witness-dbs.js';

/**
 * The collector as a witness of sidecar heads: every heartbeat head that verified is kept
 * durably, and logged when it names a batch further on than any before and than the stored chain
 * (a stored head is in the log already, as its link's entry); every later segment must
 * extend it. A chain that no longer holds a head the collector witnessed (its tail rewritten after
 * the heartbeat, or cut back) is a fork after witness: recorded with both heads, counted, logged,
 * kept as evidence, and the stream refused (`fork`, reason `fork-after-witness: ...`).
 *
 * One witnessed head per batch number is enough to check: a chain that holds the head at batch N
 * holds every head before it on the same chain (each head commits to the one before).
 */

export interface HeadWitnessDeps {
  witness: WitnessLog;
  store: CollectorStore;
  /** Told of every fork found (metrics, log line). */
  onFork(sidecar: string, fork: ForkAfterWitness): void;
}

export const FORK_AFTER_WITNESS = 'fork-after-witness';

export class HeadWitness {
  #deps: HeadWitnessDeps;
  /**
   * Per chain key (SIDECAR_ID@POD_UID, store/chain-key.ts; never the bare sidecar id, so one
   * incarnation's heads are never compared with another's): heads heartbeats named beyond the
   * stored chain, by batch, until a link confirms them. Everything this witness keeps is keyed so.
   */
  #pending = new Map<string, Map<number, WitnessedHead>>();

  constructor(deps: HeadWitnessDeps) {
    this.#deps = deps;
    for (const { key, value } of deps.witness.dbs.pending.getRange()) this.#of(key[0]).set(key[1], value);
  }

  #of(sidecar: string): Map<number, WitnessedHead> {
    let m = this.#pending.get(sidecar);
    if (m === undefined) this.#pending.set(sidecar, (m = new Map()));
    return m;
  }

  /** The newest witnessed heartbeat of a sidecar (restored at start: staleness survives restarts). */
  lastHeartbeat(sidecar: string): WitnessedHead | undefined {
    return this.#deps.witness.sidecars.get(sidecar)?.heartbeat;
  }

  forks(sidecar: string): ForkAfterWitness[] {
    return this.#deps.witness.sidecars.get(sidecar)?.forks ?? [];
  }

  /**
   * Verified links about to be stored: each must carry the head witnessed at its batch. Throws
   * ChainBroken (`fork`) at the first that does not; confirms (forgets) those that do.
   */
  checkLinks(chainKey: string, links: readonly BatchHeader[]): void {
    const pending = this.#pending.get(chainKey);
    if (pending === undefined || pending.size === 0 || links.length === 0) return;
    const confirmed: number[] = [];
    for (const l of links) {
      const w = pending.get(l.batch);
      if (w === undefined) continue;
      if (w.head !== l.head) {
        this.#fork(chainKey, null, { batch: l.batch, witnessed: { head: w.head, by: 'heartbeat', unix_ms: w.unix_ms, sig: w.sig }, presented: { head: l.head, by: 'segment', batch: l.batch }, detected_unix_ms: Date.now() });
      }
      confirmed.push(l.batch);
    }
    if (confirmed.length === 0) return;
    for (const b of confirmed) pending.delete(b);
    void this.#deps.witness.append({ entries: [], also: (dbs) => confirmed.forEach((b) => void dbs.pending.remove([chainKey, b])) }).catch(() => {});
  }

  /**
   * A heartbeat that verified and is newer than the one before. Checks it against what was
   * witnessed (stored links, earlier heartbeats); keeps it; logs its head if it is further on.
   * Throws ChainBroken (`fork`) for a head that contradicts what was witnessed.
   */
  heartbeat(chain: SidecarChain, hb: Heartbeat, receivedUnixMs: number): void {
    const id = chain.chainKey;
    const seen: WitnessedHead = { unix_ms: hb.unix_ms, received_unix_ms: receivedUnixMs, last_batch: hb.last_batch, head: hb.head, sig: hb.sig };
    const s = this.#deps.witness.sidecar(id);
    const before = s.heartbeat;
    const presented = { head: hb.head, by: 'heartbeat' as const, batch: hb.last_batch, unix_ms: hb.unix_ms, sig: hb.sig };
    // A chain only grows: a head at an earlier batch than one witnessed means its tail was cut back.
    const tip = chain.tip;
    if (before !== undefined && hb.last_batch < before.last_batch) {
      this.#fork(id, chain.state, { batch: before.last_batch, witnessed: { head: before.head, by: 'heartbeat', unix_ms: before.unix_ms, sig: before.sig }, presented, detected_unix_ms: Date.now() });
    }
    if (hb.last_batch < tip.last_batch) {
      this.#fork(id, chain.state, { batch: tip.last_batch, witnessed: { head: tip.head, by: 'link', unix_ms: chain.state.last_seen_unix_ms }, presented, detected_unix_ms: Date.now() });
    }
    if (hb.last_batch === tip.last_batch && hb.head !== tip.head) {
      this.#fork(id, chain.state, { batch: tip.last_batch, witnessed: { head: tip.head, by: 'link', unix_ms: chain.state.last_seen_unix_ms }, presented, detected_unix_ms: Date.now() });
    }
    const pending = this.#of(id);
    const earlier = pending.get(hb.last_batch);
    if (earlier !== undefined && earlier.head !== hb.head) {
      this.#fork(id, chain.state, { batch: hb.last_batch, witnessed: { head: earlier.head, by: 'heartbeat', unix_ms: earlier.unix_ms, sig: earlier.sig }, presented, detected_unix_ms: Date.now() });
    }
    const ahead = hb.last_batch > tip.last_batch && earlier === undefined;
    if (ahead) pending.set(hb.last_batch, seen);
    // A head the store already holds is in the log as its link's entry: only heads ahead of it are news.
    const further = ahead && hb.last_batch > (s.logged_heartbeat_batch ?? 0);
    s.heartbeat = seen;
    if (further) s.logged_heartbeat_batch = hb.last_batch;
    const state = { ...s };
    // Not awaited by the stream: a heartbeat has no answer; its write is ordered with the log's.
    void this.#deps.witness
      .append({
        entries: further ? [{ kind: 'heartbeat', sidecar: id, unix_ms: hb.unix_ms, last_batch: hb.last_batch, head: hb.head, sig: hb.sig }] : [],
        also: (dbs) => {
          void dbs.sidecars.put(id, state);
          if (ahead) void dbs.pending.put([id, hb.last_batch], seen);
        },
      })
      .catch(() => {});
  }

  /** `chain`: whose evidence a heartbeat's fork is kept as (its sidecar id and incarnation, as a refused segment's). */
  #fork(sidecar: string, chain: { id: string; incarnation?: string } | null, fork: ForkAfterWitness): never {
    this.#deps.onFork(sidecar, fork);
    void this.#deps.witness.recordFork(sidecar, fork).catch(() => {});
    const { witnessed, presented } = fork;
    const problem = `${FORK_AFTER_WITNESS}: the collector witnessed head ${witnessed.head} at batch ${fork.batch} (${witnessed.by === 'heartbeat' ? 'a signed heartbeat' : 'a stored link'}); ${presented.by === 'segment' ? `a segment now brings batch ${presented.batch} with head ${presented.head}` : `a signed heartbeat now names head ${presented.head} at batch ${presented.batch}`}: the sidecar's chain no longer holds the witnessed head (its tail was rewritten or cut back)`;
    // A segment that forks is kept as evidence by its stream (sync-server.ts); a heartbeat here, with both heads.
    if (presented.by === 'heartbeat') {
      const who = chain === null ? { sidecar_id: sidecar } : { sidecar_id: chain.id, ...(chain.incarnation === undefined ? {} : { incarnation: chain.incarnation }) };
      void this.#deps.store.keepEvidence({ received_unix_ms: fork.detected_unix_ms, ...who, code: 'fork', reason: problem, batch: fork.batch, links: [{ heartbeat: presented, witnessed }], truncated: false }).catch(() => {});
    }
    return fail({ code: 'fork', batch: fork.batch, problem });
  }
}
