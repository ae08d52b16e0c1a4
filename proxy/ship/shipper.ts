import { readFile } from 'node:fs/promises';
import type { ChannelCredentials } from '@grpc/grpc-js';
import type { Journal } from '../journal/journal.js';
import { GENESIS_HEAD, heartbeatSigningInput, signHello } from '../../ledger/chain.js';
import { headerEntries, readPrunedFrom } from '../../ledger/read-journal.js';
import type { BatchHeader, JournalSnapshot } from '../../ledger/journal-layout.js';
import type { ShipperBacklog, ShipperMetrics } from '../metrics/metrics.js';
import type { Logger } from '../../command/log.js';
import { VERSION } from '../../command/version.js';
import { REFUSAL_CODES as KNOWN_REFUSAL_CODES } from '../../command/label-values.js';
import type { Hello, Welcome } from '../../wire/sync-wire.js';
import { readSegment, type SegmentLimits } from './read-segment.js';
import { runSyncSession, type SessionOutcome, type SessionTimeouts, type SessionWindow } from './sync-session.js';
import { fullJitterMs, refusalDelayMs, sleep } from './backoff.js';
import { caBundleFrom } from '../../ledger/certified-key.js';
import { collectorAckCheck } from './collector-acks.js';
import { h2Preflight } from './h2-preflight.js';

/**
 * The shipper: streams the journal to the collector, one sync stream at a time, for as long as
 * the sidecar runs. Between streams it backs off (exponential, full jitter, capped; longer after
 * a Refusal). The journal is the buffer: while the collector is away nothing is dropped, the
 * backlog shows in the metrics, and the next Welcome says where to resume.
 */

export interface ShipperOptions {
  /** HOST:PORT of the collector. */
  target: string;
  /** Read at every connection attempt (a rotated Secret or projected token is picked up), trimmed. */
  tokenFile: string | undefined;
  /** The flag it came from, for errors. */
  tokenFlag?: string;
  /**
   * With a workload certificate: TLS presenting it, trusting only the mesh CA (`caPem`), and the
   * collector's Welcome and Acks believed only once signed by a key of that CA (collector-acks.ts);
   * else plaintext, and acknowledgements believed as they come.
   */
  tls?: { caPem: string; credentials(): ChannelCredentials };
  sidecarId: string;
  service: string;
  /** The pod's IP, claimed in every Hello for the mesh directory; undefined: none claimed. */
  podIp?: string;
  journal: Journal;
  metrics: ShipperMetrics;
  log: Logger;
  timeouts: SessionTimeouts;
  window: SessionWindow;
  segment: SegmentLimits;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export interface Shipper {
  /** For /readyz: whether a stream is up, and if not since when and why. */
  status(): { connected: boolean; detail: string };
  close(): Promise<void>;
}

/** Refusal codes of sync.proto; anything else is counted as `other` (labels stay bounded). */
const REFUSAL_CODES = new Set<string>(KNOWN_REFUSAL_CODES);

export function startShipper(opts: ShipperOptions): Shipper {
  const { journal, metrics, log } = opts;
  const controller = new AbortController();
  let connected = false;
  let lastProblem = 'connecting';
  let downSinceMs = Date.now();

  metrics.setBacklogProbe(() => backlog(journal));
  const ca = opts.tls === undefined ? null : caBundleFrom(opts.tls.caPem);

  const hello = (): Hello => {
    const { pruned, first } = journal.snapshot((snapshot) => ({ pruned: readPrunedFrom(snapshot.stores, snapshot.transaction), first: firstHeader(snapshot) }));
    const signer = journal.signer;
    return {
      sidecar_id: opts.sidecarId,
      service: opts.service,
      public_key: signer.publicKeySpki,
      key_id: signer.keyId,
      version: VERSION,
      base_head: pruned?.head ?? GENESIS_HEAD,
      first_batch: first?.batch ?? (pruned === undefined ? 1 : pruned.last_batch + 1),
      ...signHello(signer, opts.sidecarId),
      ...(opts.podIp === undefined ? {} : { pod_ip: opts.podIp }),
    };
  };

  const onWelcome = (welcome: Welcome): number => {
    const head = journal.head;
    const acked = welcome.acked_batch;
    const oldest = journal.snapshot(firstHeader)?.batch ?? head.last_batch + 1;
    if (acked < journal.shippedBatch) log('warn', 'collector holds less than it acknowledged before: shipping again from where it is', { acked_batch: acked, shipped_batch: journal.shippedBatch });
    if (acked > head.last_batch) log('error', 'collector holds batches this journal never wrote: a different journal under the same sidecar id?', { acked_batch: acked, last_batch: head.last_batch, sidecar_id: opts.sidecarId });
    journal.markShipped(Math.min(acked, head.last_batch));
    let from = acked + 1;
    if (from < oldest) {
      // Pruned before the collector (now) has them: only possible if it lost acknowledged data.
      metrics.batchesLost.inc(oldest - from);
      log('error', 'collector lacks batches this journal no longer retains: they are lost to it', { from_batch: from, oldest_retained: oldest, lost_batches: oldest - from });
      from = oldest;
    }
    connected = true;
    metrics.connected.set(1);
    log('info', 'shipping to collector', { collector: opts.target, acked_batch: acked, from_batch: from, last_batch: head.last_batch });
    return from;
  };

  const heartbeat = (sent: { batch: number; head: string } | null) => {
    const unixMs = Date.now();
    const { last_batch, head } = heartbeatHead(journal.head, sent);
    return { unix_ms: unixMs, last_batch, head, sig: journal.signer.sign(heartbeatSigningInput(opts.sidecarId, unixMs, last_batch, head)) };
  };

  const session = async (token: string | undefined): Promise<SessionOutcome> => {
    await h2Preflight(opts.target, opts.timeouts.welcomeMs, opts.tls?.caPem);
    const greeting = hello();
    return runSyncSession({
      target: opts.target,
      credentials: opts.tls?.credentials(),
      token,
      hello: greeting,
      check: ca === null ? null : collectorAckCheck(ca, greeting.sidecar_id, greeting.key_id),
      timeouts: opts.timeouts,
      window: opts.window,
      onWelcome,
      readSegment: (from) => journal.snapshot((snapshot) => readSegment(snapshot, from, opts.segment)),
      onCommit: (listener) => journal.onCommit(listener),
      onAck: (ack, segments) => {
        journal.markShipped(ack.through_batch);
        for (const s of segments) {
          metrics.batchesShipped.inc(s.through - s.first + 1);
          metrics.recordsShipped.inc(s.records);
        }
      },
      heartbeat,
      signal: controller.signal,
    });
  };

  const disconnected = (outcome: SessionOutcome): void => {
    if (connected) downSinceMs = Date.now();
    connected = false;
    metrics.connected.set(0);
    if (outcome.kind === 'refused') {
      const { code, reason, batch } = outcome.refusal;
      metrics.batchesRefused.inc({ code: REFUSAL_CODES.has(code) ? code : 'other' });
      lastProblem = `refused (${code}): ${reason}`;
      log('error', 'collector refused what it was sent', { collector: opts.target, code, reason, batch });
    } else if (outcome.kind === 'unverified') {
      // Nothing it said was believed: no batch marked shipped, so retention and pressure prune nothing of it.
      metrics.unverifiedAcks.inc({ reason: outcome.reason });
      lastProblem = `collector not believed (${outcome.reason}): ${outcome.problem}`;
      log('warn', 'collector acknowledgement did not verify: stream ended, nothing marked shipped', { collector: opts.target, reason: outcome.reason, problem: outcome.problem });
    } else if (outcome.kind === 'failed') {
      lastProblem = outcome.reason;
      log('warn', 'sync stream to collector ended', { collector: opts.target, reason: outcome.reason });
    }
  };

  const run = async (): Promise<void> => {
    let attempt = 0;
    for (;;) {
      let outcome: SessionOutcome;
      try {
        outcome = await session(await readToken(opts.tokenFile, opts.tokenFlag ?? '--collector-token-file'));
      } catch (err) {
        outcome = { welcomed: false, kind: 'failed', reason: (err as Error).message };
      }
      disconnected(outcome);
      if (controller.signal.aborted) return;
      // A stream that got as far as its Welcome worked: the next failure starts the backoff afresh
      // (not one whose Acks were not believed: a collector signing Welcomes only must not get fast retries).
      if (outcome.welcomed && outcome.kind !== 'unverified') attempt = 0;
      await sleep(outcome.kind === 'refused' ? refusalDelayMs(opts.backoffMaxMs) : fullJitterMs(attempt++, opts.backoffBaseMs, opts.backoffMaxMs), controller.signal);
      if (controller.signal.aborted) return;
      metrics.reconnects.inc();
    }
  };
  const running = run();

  return {
    status: () => (connected ? { connected, detail: `shipping to ${opts.target}` } : { connected, detail: `collector ${opts.target} unreachable for ${Math.round((Date.now() - downSinceMs) / 1000)} s (${lastProblem}); the journal buffers` }),
    async close() {
      controller.abort();
      await running;
      metrics.setBacklogProbe(null);
    },
  };
}

/** A credential file, trimmed, read at each connection (a rotated Secret or projected token is picked up); an unreadable or empty one names its flag. */
export async function readToken(file: string | undefined, flag: string): Promise<string | undefined> {
  if (file === undefined) return undefined;
  let token: string;
  try {
    token = (await readFile(file, 'utf8')).trim();
  } catch (err) {
    throw new Error(`cannot read ${flag} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (token === '') throw new Error(`${flag} ${file} is empty`);
  return token;
}

/**
 * The head a heartbeat names: the journal's, or the last link the stream sent when that is
 * further on. A segment is read from the committed journal, which a reader sees before the
 * journal's own head moves (its commit callback runs later): a heartbeat fired in between would
 * name a batch behind one already sent, which the collector reads as a chain cut back.
 */
export function heartbeatHead(journal: { last_batch: number; head?: string }, sent: { batch: number; head: string } | null): { last_batch: number; head: string } {
  if (sent !== null && sent.batch > journal.last_batch) return { last_batch: sent.batch, head: sent.head };
  return { last_batch: journal.last_batch, head: journal.head ?? GENESIS_HEAD };
}

/** The oldest retained link at or after batch `from`. */
function firstHeader({ stores, transaction }: JournalSnapshot, from = 1): BatchHeader | undefined {
  for (const { value } of headerEntries(stores, { fromBatch: from, limit: 1 }, transaction)) return value;
  return undefined;
}

/** Links read to find the oldest unshipped record: checkpoint links (no records) are skipped. */
const LAG_SCAN_LINKS = 10_000;

/** Unshipped records and the age of the oldest, from the journal and its shipped cursor. */
function backlog(journal: Journal): ShipperBacklog {
  const { last_seq } = journal.head;
  return journal.snapshot((snapshot) => {
    const first = firstHeader(snapshot, journal.shippedBatch + 1);
    // Links without records carry the next sequence number as their first_seq.
    const records = first === undefined ? 0 : last_seq - first.first_seq + 1;
    if (records <= 0) return { records: 0, lagSeconds: 0 };
    let oldest = first!;
    for (const { value } of headerEntries(snapshot.stores, { fromBatch: first!.batch, limit: LAG_SCAN_LINKS }, snapshot.transaction)) {
      oldest = value;
      if (value.count > 0) break;
    }
    return { records, lagSeconds: Math.max(0, (Date.now() - oldest.sealed_unix_ms) / 1000) };
  });
}
