import type { Database, RootDatabase } from 'lmdb';
import type { Counter, Gauge } from 'prom-client';
import type { Logger } from '../../../command/log.js';
import { createPeerLabels } from '../../../anomalies/peer-label.js';
import type { StoredRun } from '../ingest/sidecar-chain.js';
import { chainKeyOf } from '../store/chain-key.js';
import { compareEnds } from './compare-ends.js';
import { reconciledCall, type HeldEnd, type ReconciledCall, type ReconcileState } from './reconciled-call.js';

/** --reconcile-grace's default: how long a one-sided call stays pending. */
export const DEFAULT_RECONCILE_GRACE_MS = 120_000;
/** The most open calls held: past it the oldest are decided before their grace period ends (logged), so memory stays bounded under any rate. */
export const MAX_OPEN_CALLS = 500_000;
/** The most calls one answer lists. */
export const MAX_RECONCILED_ANSWER = 10_000;
/** Sub-databases (store-layout.ts): decided calls, and open ends saved on close. */
export const RECONCILED_DB = 'reconciled';
export const RECONCILE_OPEN_DB = 'reconcile_open';

export interface ReconcileMetrics {
  reconciled: Counter<'state'>;
  disagreements: Counter<'state' | 'caller' | 'callee'>;
  pending: Gauge;
}

export interface ReconcileFilter {
  service?: string;
  sinceUnixMs?: number;
  state?: ReconcileState;
}

export interface CallReconciler {
  /** Every end of a call in a stored run: pairs it, or holds it until its other end or the grace period. */
  observe(run: StoredRun): void;
  /** Decides every call whose grace period is over (a timer does this; tests call it). */
  sweep(): void;
  /** Decided calls (newest first) and pending ones matching `filter`, at most MAX_RECONCILED_ANSWER. */
  query(filter: ReconcileFilter): ReconciledCall[];
  readonly openCalls: number;
  close(): Promise<void>;
}

interface OpenCall {
  outs: HeldEnd[];
  ins: HeldEnd[];
  /** When its first end arrived (collector clock): it is decided graceMs later, by the grace period of the collector running then. */
  arrived: number;
}

/**
 * Both ends of every call, reconciled incrementally as runs are stored. A call is keyed by its
 * request id, trace id and span id (the caller's sidecar forwards all three, so the callee's sidecar
 * records the same); a second call under one key (a retry that reuses them) pairs in arrival order.
 * Memory holds only open calls, each decided once the grace period from its first end's arrival
 * is over; decided calls go to the store's `reconciled` database, and the open ones to
 * `reconcile_open` on close, to be taken up again on the next start.
 * Without identities, a call's other end is a known sidecar when a sidecar of that service ships
 * here, or when its address is a pod of the mesh directory (an outbound call's destination, an
 * inbound call's source): an outbound call to a service no sidecar reports, or an inbound one no
 * sidecar stamped as its caller, from an address the directory does not list, is
 * `unpaired-external`, not a failure.
 */
export function createCallReconciler(deps: { env: RootDatabase; graceMs: number; metrics: ReconcileMetrics; services: () => Iterable<string>; meshAddress?: (ip: string) => boolean; log: Logger; now?: () => number }): CallReconciler {
  const now = deps.now ?? Date.now;
  // Shared structures: a decided call's field names are stored once for the database, not in every value (bench:ingest's store: 657 -> 508 bytes a record).
  const decided: Database<ReconciledCall, [number, string, number]> = deps.env.openDB(RECONCILED_DB, { encoding: 'msgpack', sharedStructuresKey: Symbol.for('structures') });
  const saved: Database<OpenCall, string> = deps.env.openDB(RECONCILE_OPEN_DB, { encoding: 'msgpack' });
  const open = new Map<string, OpenCall>();
  for (const { key, value } of saved.getRange()) open.set(key, value);
  void saved.clearAsync();
  const callerLabel = createPeerLabels();
  const calleeLabel = createPeerLabels();

  // Decided calls wait here until the observe or sweep that decided them ends, then go to the store in one batch: one
  // put each outside a batch cost the event loop a promise and an atomic each, and LMDB's writer a transaction of a few.
  let unwritten: Array<{ key: [number, string, number]; call: ReconciledCall }> = [];
  // And are counted there, once a state: a labelled inc() a call cost a label key built and looked up each.
  const counted = new Map<ReconcileState, number>();
  const write = (): void => {
    for (const [state, n] of counted) deps.metrics.reconciled.inc({ state }, n);
    counted.clear();
    if (unwritten.length === 0) return;
    const calls = unwritten;
    unwritten = [];
    deps.env
      .batch(() => {
        for (const { key, call } of calls) void decided.put(key, call);
      })
      .catch((err: unknown) => deps.log('error', 'reconciliation could not store decided calls', { calls: calls.length, err: (err as Error)?.message }));
  };
  const decide = (state: ReconcileState, caller: HeldEnd | undefined, callee: HeldEnd | undefined, differs?: ReturnType<typeof compareEnds>): void => {
    const call = reconciledCall(state, caller, callee, now(), differs);
    const first = (caller ?? callee)!;
    unwritten.push({ key: [call.start_unix_ms, first.chain, first.end.seq], call });
    counted.set(state, (counted.get(state) ?? 0) + 1);
    if (state !== 'matched' && state !== 'unpaired-external') deps.metrics.disagreements.inc({ state, caller: callerLabel(call.caller_service), callee: calleeLabel(call.callee_service) });
  };
  const pair = (key: string, c: OpenCall): void => {
    if (c.outs.length === 1 && c.ins.length === 1) {
      // The common case, one end each: decided, and the call closed, without shifting either list.
      open.delete(key);
      const differs = compareEnds(c.outs[0], c.ins[0]);
      decide(differs.length === 0 ? 'matched' : 'mismatched', c.outs[0], c.ins[0], differs);
      return;
    }
    while (c.outs.length > 0 && c.ins.length > 0) {
      const caller = c.outs.shift()!;
      const callee = c.ins.shift()!;
      const differs = compareEnds(caller, callee);
      decide(differs.length === 0 ? 'matched' : 'mismatched', caller, callee, differs);
    }
    if (c.outs.length === 0 && c.ins.length === 0) open.delete(key);
  };

  const meshed = (address: string | undefined): boolean => address !== undefined && deps.meshAddress?.(address) === true;
  const sweep = (): void => {
    const t = now();
    const known = new Set(deps.services());
    let early = 0;
    // A Map iterates in insertion order, which is arrival order: the first call still in its grace period ends the sweep.
    for (const [key, c] of open) {
      if (c.arrived + deps.graceMs > t) {
        if (open.size <= MAX_OPEN_CALLS) break;
        early++;
      }
      open.delete(key);
      for (const h of c.outs) decide((h.end.peer !== undefined && known.has(h.end.peer)) || meshed(hostOf(h.end.server)) ? 'caller-only' : 'unpaired-external', h, undefined);
      for (const h of c.ins) {
        const caller = h.end.claimedClient ?? h.end.peer;
        decide((caller !== undefined && known.has(caller)) || meshed(h.end.client) ? 'callee-only' : 'unpaired-external', undefined, h);
      }
    }
    write();
    if (early > 0) deps.log('warn', 'reconciliation held more open calls than it may: the oldest were decided before their grace period ended, and may read one-sided though their other end is still on its way', { decided_early: early, max_open_calls: MAX_OPEN_CALLS, grace_ms: deps.graceMs });
    deps.metrics.pending.set(open.size);
  };
  const timer = setInterval(sweep, Math.max(50, Math.min(5_000, deps.graceMs / 4)));
  timer.unref();

  return {
    observe(run) {
      const chain = chainKeyOf(run.sidecar);
      const arrived = now();
      try {
        for (const b of run.batches) {
          for (const end of b.calls ?? []) {
            const held: HeldEnd = { end, sidecarId: run.sidecar.id, chain };
            if (b.identity !== undefined) held.identity = b.identity;
            const key = `${end.requestId}\u0000${end.traceId}\u0000${end.spanId}`;
            let c = open.get(key);
            if (c === undefined) open.set(key, (c = { outs: [], ins: [], arrived }));
            (end.direction === 'outbound' ? c.outs : c.ins).push(held);
            pair(key, c);
          }
        }
      } finally {
        write();
      }
      if (open.size > MAX_OPEN_CALLS) sweep();
      deps.metrics.pending.set(open.size);
    },
    sweep,
    query(filter) {
      const found: ReconciledCall[] = [];
      const wanted = (call: ReconciledCall): boolean =>
        (filter.state === undefined || call.state === filter.state) && (filter.service === undefined || call.caller_service === filter.service || call.callee_service === filter.service) && (filter.sinceUnixMs === undefined || call.start_unix_ms >= filter.sinceUnixMs);
      if (filter.state === undefined || filter.state === 'pending') {
        const t = now();
        for (const c of open.values()) for (const h of [...c.outs, ...c.ins]) {
          const call = reconciledCall('pending', h.end.direction === 'outbound' ? h : undefined, h.end.direction === 'inbound' ? h : undefined, t);
          if (wanted(call) && found.length < MAX_RECONCILED_ANSWER) found.push(call);
        }
      }
      if (filter.state === 'pending') return found;
      for (const { value } of decided.getRange({ reverse: true, ...(filter.sinceUnixMs === undefined ? {} : { end: [filter.sinceUnixMs] }) })) {
        if (found.length >= MAX_RECONCILED_ANSWER) break;
        if (wanted(value)) found.push(value);
      }
      return found;
    },
    get openCalls() {
      return open.size;
    },
    async close() {
      clearInterval(timer);
      write();
      // Open calls are kept for the next start: their ends were acknowledged, and will not arrive again.
      await deps.env.transaction(() => {
        for (const [key, c] of open) void saved.put(key, c);
      });
      open.clear();
    },
  };
}

/** The host of `host:port` (an IPv6 host keeps its colons). */
function hostOf(server: string | undefined): string | undefined {
  if (server === undefined) return undefined;
  const at = server.lastIndexOf(':');
  return at <= 0 ? server : server.slice(0, at);
}
