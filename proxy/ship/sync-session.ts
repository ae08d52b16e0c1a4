import * as grpc from '@grpc/grpc-js';
import { CollectorClient, type Ack, type CollectorMessage, type Heartbeat, type Hello, type Refusal, type SyncClientStream, type Welcome } from '../../wire/sync-wire.js';
import type { ReadSegment } from './read-segment.js';
import type { CollectorAckCheck, Unverified } from './collector-acks.js';

/**
 * One sync stream to the collector, from connect to its end: Hello, Welcome, a bounded window of
 * Segments answered by Acks, Heartbeats on a timer. Each stream gets a channel of its own that
 * is closed with it: a channel whose connection attempt hangs (the peer accepted TCP but never
 * sent SETTINGS) stays CONNECTING forever and queues calls silently (grpc/grpc-node#2785), so
 * the only cure is a deadline of our own and a new channel. Keepalive catches a peer that went
 * away under an established connection; the ack watchdog catches one that is there but silent.
 */

export interface SessionTimeouts {
  /** Connect, Hello and Welcome, all within this. */
  welcomeMs: number;
  /** The oldest unacknowledged segment waits at most this long for its Ack. */
  ackMs: number;
  heartbeatMs: number;
  /** gRPC keepalive: ping after this long without reads, and give up this long after a ping. */
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
}

export interface SessionWindow {
  /** Segments sent and not yet acknowledged, at most. */
  segments: number;
  /** Their record bytes, at most (one oversized segment still goes, alone). */
  bytes: number;
}

export interface SessionDeps {
  target: string;
  token: string | undefined;
  /** TLS with the workload certificate; default plaintext. */
  credentials?: grpc.ChannelCredentials;
  hello: Hello;
  /** With the mesh CA: the Welcome and every Ack must verify before they are believed (collector-acks.ts); null: believed as they come. */
  check: CollectorAckCheck | null;
  timeouts: SessionTimeouts;
  window: SessionWindow;
  /** The Welcome arrived: returns the batch to ship from. */
  onWelcome(welcome: Welcome): number;
  /** The segment starting at `fromBatch`, or null when nothing signed follows yet. */
  readSegment(fromBatch: number): ReadSegment | null;
  /** Calls back after each journal commit; returns the unsubscribe function. */
  onCommit(listener: () => void): () => void;
  /** The collector acknowledged these segments (oldest first). */
  onAck(ack: Ack, segments: SentSegment[]): void;
  /**
   * A signed heartbeat naming the journal's head, and never a batch before `sent` (the last link
   * this stream sent): a segment is read from the committed journal, which a reader sees before
   * the journal's own head moves, and a heartbeat behind a link already sent reads to the
   * collector as a chain cut back (fork-after-witness).
   */
  heartbeat(sent: { batch: number; head: string } | null): Heartbeat;
  signal: AbortSignal;
}

export interface SentSegment {
  first: number;
  through: number;
  records: number;
  bytes: number;
}

export type SessionOutcome = { welcomed: boolean } & ({ kind: 'closed' } | { kind: 'failed'; reason: string } | { kind: 'refused'; refusal: Refusal } | ({ kind: 'unverified' } & Unverified));

/** Messages bigger than grpc-js's 4 MB default: one commit is never split across segments. */
const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

function channelOptions(t: SessionTimeouts): grpc.ChannelOptions {
  return {
    'grpc.keepalive_time_ms': t.keepaliveMs,
    'grpc.keepalive_timeout_ms': t.keepaliveTimeoutMs,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
    'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
    // This stream's own connection: never a subchannel another client left stuck in CONNECTING.
    'grpc.use_local_subchannel_pool': 1,
    // Reconnecting is the shipper's job (backoff with jitter), not the channel's.
    'grpc.enable_retries': 0,
  };
}

export function runSyncSession(deps: SessionDeps): Promise<SessionOutcome> {
  return new Promise((resolve) => {
    const { timeouts, window } = deps;
    const client = new CollectorClient(deps.target, deps.credentials ?? grpc.credentials.createInsecure(), channelOptions(timeouts));
    const metadata = new grpc.Metadata();
    if (deps.token !== undefined) metadata.set('authorization', `Bearer ${deps.token}`);
    const call = (client as unknown as { Sync(md: grpc.Metadata): SyncClientStream }).Sync(metadata);
    const inFlight: SentSegment[] = [];
    let inFlightBytes = 0;
    let next = 0;
    let welcomed = false;
    let blocked = false;
    let done = false;
    let refusal: Refusal | undefined;
    let ackTimer: NodeJS.Timeout | undefined;
    let heartbeatTimer: NodeJS.Timeout | undefined;
    let unsubscribe: (() => void) | undefined;
    /** The last link this stream sent: heartbeats never name an earlier one. */
    let lastSent: { batch: number; head: string } | null = null;

    const finish = (outcome: { kind: 'closed' } | { kind: 'failed'; reason: string } | ({ kind: 'unverified' } & Unverified)): void => {
      if (done) return;
      done = true;
      clearTimeout(welcomeTimer);
      clearTimeout(ackTimer);
      clearInterval(heartbeatTimer);
      unsubscribe?.();
      deps.signal.removeEventListener('abort', onAbort);
      call.cancel();
      client.close();
      resolve(refusal !== undefined ? { welcomed, kind: 'refused', refusal } : { welcomed, ...outcome });
    };
    const onAbort = (): void => finish({ kind: 'closed' });
    const welcomeTimer = setTimeout(() => finish({ kind: 'failed', reason: `no Welcome within ${timeouts.welcomeMs} ms` }), timeouts.welcomeMs);
    const armAckWatchdog = (): void => {
      clearTimeout(ackTimer);
      ackTimer = inFlight.length === 0 ? undefined : setTimeout(() => finish({ kind: 'failed', reason: `no Ack within ${timeouts.ackMs} ms` }), timeouts.ackMs);
    };

    const pump = (): void => {
      if (done || !welcomed || blocked) return;
      while (inFlight.length < window.segments) {
        let segment: ReadSegment | null;
        try {
          segment = deps.readSegment(next);
        } catch (err) {
          // Runs from stream and journal events, where a throw would be uncaught.
          return finish({ kind: 'failed', reason: `cannot read the journal from batch ${next}: ${(err as Error).message}` });
        }
        if (segment === null) return;
        if (inFlight.length > 0 && inFlightBytes + segment.bytes > window.bytes) return;
        const sent = { first: next, through: segment.through, records: segment.records, bytes: segment.bytes };
        inFlight.push(sent);
        inFlightBytes += sent.bytes;
        next = sent.through + 1;
        const last = segment.links[segment.links.length - 1];
        if (last !== undefined) lastSent = { batch: last.batch, head: last.head };
        if (inFlight.length === 1) armAckWatchdog();
        // write() returning false is grpc-js's backpressure (grpc/grpc-node#1332): wait for 'drain'.
        if (!call.write({ segment: { links: segment.links } })) {
          blocked = true;
          call.once('drain', () => {
            blocked = false;
            pump();
          });
          return;
        }
      }
    };

    const onAck = (ack: Ack): void => {
      const unverified = deps.check?.ack(ack) ?? null;
      if (unverified !== null) return finish({ kind: 'unverified', ...unverified });
      const acked: SentSegment[] = [];
      while (inFlight.length > 0 && inFlight[0].through <= ack.through_batch) {
        const s = inFlight.shift()!;
        inFlightBytes -= s.bytes;
        acked.push(s);
      }
      armAckWatchdog();
      deps.onAck(ack, acked);
      pump();
    };

    const onWelcome = (welcome: Welcome): void => {
      if (welcomed) return finish({ kind: 'failed', reason: 'a second Welcome on one stream' });
      const unverified = deps.check?.welcome(welcome, call.getAuthContext()?.sslPeerCertificate?.raw) ?? null;
      if (unverified !== null) return finish({ kind: 'unverified', ...unverified });
      clearTimeout(welcomeTimer);
      welcomed = true;
      next = deps.onWelcome(welcome);
      const beat = (): void => void call.write({ heartbeat: deps.heartbeat(lastSent) });
      beat();
      heartbeatTimer = setInterval(beat, timeouts.heartbeatMs);
      unsubscribe = deps.onCommit(pump);
      pump();
    };

    // proto-loader's `oneofs` names the member that is set in `body`.
    call.on('data', (msg: CollectorMessage) => {
      if ('refusal' in msg && msg.body === 'refusal') {
        // The collector ends the stream after a Refusal (in answer to the Hello or to a segment).
        refusal = msg.refusal;
        finish({ kind: 'closed' });
      } else if ('welcome' in msg && msg.body === 'welcome') {
        try {
          onWelcome(msg.welcome);
        } catch (err) {
          finish({ kind: 'failed', reason: `cannot resume from the Welcome: ${(err as Error).message}` });
        }
      }
      else if (!welcomed) finish({ kind: 'failed', reason: `collector sent ${msg.body ?? 'an empty message'} before its Welcome` });
      else if ('ack' in msg && msg.body === 'ack') onAck(msg.ack);
    });
    call.on('error', (err: grpc.ServiceError) => finish({ kind: 'failed', reason: `stream failed: ${grpc.status[err.code] ?? err.code} ${err.details ?? err.message}` }));
    call.on('end', () => finish({ kind: 'failed', reason: 'collector ended the stream' }));
    deps.signal.addEventListener('abort', onAbort);
    if (deps.signal.aborted) return onAbort();
    call.write({ hello: deps.hello });
  });
}
