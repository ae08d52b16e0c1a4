import net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { COLLECTOR_SERVICE, type Ack, type Heartbeat, type Hello, type SidecarMessage, type WireLink, type SyncServerStream, type Refusal, type Welcome } from '../../wire/sync-wire.js';
import { GENESIS_HEAD, linkHead, publicKeyFromSpki, verifyHeadSignature, type LinkKind } from '../../ledger/chain.js';
import { leafHash, merkleRoot } from '../../ledger/merkle.js';
import { listen, closeServer } from './net.js';

/**
 * A small stand-in collector for the shipper's tests, until the real one exists: a real grpc-js
 * server of sync.proto that checks what it is sent the way the collector must (contiguous links,
 * each head recomputed from the previous one, record roots, the last link's signature), stores
 * per sidecar in memory, dedupes by batch, and can misbehave on purpose (`mode`).
 */

export type PeerMode =
  /** Welcome, verify, store, Ack. */
  | 'normal'
  /** Accept the stream, never say anything. */
  | 'silent'
  /** Welcome, then store segments but never Ack them. */
  | 'hold-acks'
  /** Store the next segment, then cut the connection before its Ack (then back to normal). */
  | 'drop-ack-once'
  /** Answer the Hello with a Refusal (`refusal` below). */
  | 'refuse';

/**
 * How the peer signs what it says (a collector with a serving identity): what to add to each
 * Welcome (its certificate chain and signature) and each Ack (its signature), given what it is
 * about to send and the stream's Hello. Default: nothing (a collector without the mesh CA).
 */
export interface PeerSigning {
  welcome?(welcome: Welcome, hello: Hello): Partial<Welcome>;
  ack?(ack: Ack, hello: Hello): Partial<Ack>;
}

/** What the peer holds for one sidecar; survives a restart of the peer if passed to it again. */
export interface PeerSidecar {
  hello: Hello;
  links: WireLink[];
  /** Batch number -> index in links. */
  byBatch: Map<number, number>;
  head: string;
  heartbeats: Heartbeat[];
  /** Segments that arrived again after they were stored (at-least-once delivery). */
  duplicates: number;
}

export type PeerStore = Map<string, PeerSidecar>;

export interface SyncPeer {
  port: number;
  store: PeerStore;
  mode: PeerMode;
  refusal: Pick<Refusal, 'code' | 'reason'>;
  /** authorization metadata of each stream, in order. */
  authorizations: (string | undefined)[];
  streams: number;
  /** Segments received on the current stream since its last Ack (the shipper's window in use). */
  unackedOnStream: number;
  maxUnackedOnStream: number;
  /** Problems found in what the shipper sent: must stay empty. */
  errors: string[];
  /** Segments received, over all streams (duplicates included). */
  segmentsReceived: number;
  /** Acks written, over all streams. */
  acksSent: number;
  /** Acks held back in `hold-acks`: send them all. */
  releaseAcks(): void;
  close(): Promise<void>;
}

function verifySegment(sidecar: PeerSidecar, links: WireLink[]): string | null {
  let prev = sidecar.head;
  let expected = sidecar.links.length === 0 ? sidecar.hello.first_batch : sidecar.links[sidecar.links.length - 1].batch + 1;
  for (const link of links) {
    if (link.batch !== expected++) return `batch ${link.batch}: expected ${expected - 1}`;
    if (link.records.length !== link.count) return `batch ${link.batch}: ${link.records.length} records for count ${link.count}`;
    if (link.kind === 'records' && merkleRoot(link.records.map((r) => leafHash(r))).toString('hex') !== link.root) return `batch ${link.batch}: root does not match its records`;
    if (linkHead(prev, { ...link, kind: link.kind as LinkKind }) !== link.head) return `batch ${link.batch}: head does not chain`;
    prev = link.head;
  }
  const last = links[links.length - 1];
  const key = publicKeyFromSpki(sidecar.hello.public_key);
  if (last === undefined || key === null || last.sig === '' || !verifyHeadSignature(last.head, last.sig, key)) return `segment through ${last?.batch}: last link not signed by the sidecar's key`;
  return null;
}

/**
 * `credentials`: serve TLS with them (default plaintext); `signing`: see PeerSigning; `forgetful`:
 * every stream starts from an empty store (a collector that keeps nothing: its Welcome claims nothing).
 */
export async function startSyncPeer(t: ExecutionContext, opts: { port?: number; store?: PeerStore; mode?: PeerMode; credentials?: grpc.ServerCredentials; signing?: PeerSigning; forgetful?: boolean } = {}): Promise<SyncPeer> {
  const held: (() => void)[] = [];
  const server = new grpc.Server({ 'grpc.max_receive_message_length': 64 * 1024 * 1024, 'grpc.keepalive_permit_without_calls': 1, 'grpc.http2.min_ping_interval_without_data_ms': 100 });
  const peer: SyncPeer = {
    port: 0,
    store: opts.store ?? new Map(),
    mode: opts.mode ?? 'normal',
    refusal: { code: 'unauthenticated', reason: 'test peer refuses' },
    authorizations: [],
    streams: 0,
    unackedOnStream: 0,
    maxUnackedOnStream: 0,
    errors: [],
    segmentsReceived: 0,
    acksSent: 0,
    releaseAcks: () => held.splice(0).forEach((send) => send()),
    close: () => new Promise<void>((resolve) => server.tryShutdown(() => resolve())).then(() => server.forceShutdown()),
  };
  server.addService(COLLECTOR_SERVICE, {
    Sync(call: SyncServerStream) {
      peer.streams++;
      peer.unackedOnStream = 0;
      if (opts.forgetful === true) peer.store.clear();
      peer.authorizations.push(call.metadata.get('authorization')[0] as string | undefined);
      let sidecar: PeerSidecar | undefined;
      call.on('error', () => {});
      call.on('data', (msg: SidecarMessage & { hello?: Hello; segment?: { links: WireLink[] }; heartbeat?: Heartbeat }) => {
        if (peer.mode === 'silent') return;
        if (msg.hello != null) {
          if (peer.mode === 'refuse') {
            return refuse(call, { ...peer.refusal, batch: 0 }, grpc.status.UNAUTHENTICATED);
          }
          const hello = msg.hello;
          sidecar = peer.store.get(hello.sidecar_id);
          if (sidecar === undefined) {
            sidecar = { hello, links: [], byBatch: new Map(), head: hello.base_head || GENESIS_HEAD, heartbeats: [], duplicates: 0 };
            peer.store.set(hello.sidecar_id, sidecar);
          }
          const last = sidecar.links[sidecar.links.length - 1];
          const welcome = { acked_batch: last?.batch ?? 0, acked_head: sidecar.head };
          return void call.write({ welcome: { ...welcome, ...opts.signing?.welcome?.(welcome, hello) } });
        }
        if (sidecar === undefined) return void peer.errors.push('message before Hello');
        if (msg.heartbeat != null) return void sidecar.heartbeats.push(msg.heartbeat);
        if (msg.segment == null) return;
        onSegment(sidecar, msg.segment.links, call);
      });
    },
  });

  function onSegment(sidecar: PeerSidecar, links: WireLink[], call: SyncServerStream): void {
    peer.segmentsReceived++;
    peer.unackedOnStream++;
    peer.maxUnackedOnStream = Math.max(peer.maxUnackedOnStream, peer.unackedOnStream);
    const through = links[links.length - 1].batch;
    if (sidecar.byBatch.has(links[0].batch)) {
      sidecar.duplicates++;
      if (links.some((l) => sidecar.links[sidecar.byBatch.get(l.batch) ?? -1]?.head !== l.head)) peer.errors.push(`duplicate through ${through} differs from what was stored`);
    } else {
      const problem = verifySegment(sidecar, links);
      if (problem !== null) {
        peer.errors.push(problem);
        return refuse(call, { code: 'bad-chain', reason: problem, batch: links[0].batch }, grpc.status.FAILED_PRECONDITION);
      }
      for (const l of links) sidecar.byBatch.set(l.batch, sidecar.links.push(l) - 1);
      sidecar.head = links[links.length - 1].head;
    }
    const ack = (): void => {
      peer.unackedOnStream = 0;
      peer.acksSent++;
      const answer = { through_batch: through, head: links[links.length - 1].head };
      call.write({ ack: { ...answer, ...opts.signing?.ack?.(answer, sidecar.hello) } });
    };
    if (peer.mode === 'hold-acks') return void held.push(ack);
    if (peer.mode === 'drop-ack-once') {
      peer.mode = 'normal';
      return void call.destroy(Object.assign(new Error('cut before the ack'), { code: grpc.status.UNAVAILABLE }));
    }
    ack();
  }

  peer.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`127.0.0.1:${opts.port ?? 0}`, opts.credentials ?? grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  t.teardown(() => server.forceShutdown());
  return peer;
}

/** A Refusal, then the stream ends with an error status once the Refusal is written. */
function refuse(call: SyncServerStream, refusal: Refusal, code: grpc.status): void {
  call.write({ refusal }, () => call.destroy(Object.assign(new Error(refusal.reason), { code })));
}

/** All records a sidecar's links delivered to the peer, in batch order, parsed. */
export function peerRecords(sidecar: PeerSidecar | undefined): Record<string, unknown>[] {
  return (sidecar?.links ?? []).flatMap((l) => l.records.map((r) => JSON.parse(r.toString('utf8')) as Record<string, unknown>));
}

/** A TCP server that accepts connections and never speaks HTTP/2 (grpc/grpc-node#2785). */
export async function startMutePeer(t: ExecutionContext): Promise<{ port: number; connections: () => number; open: () => number }> {
  const sockets = new Set<net.Socket>();
  let total = 0;
  const server = net.createServer((socket) => {
    total++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => sockets.delete(socket));
    // Reads (and drops) what it is sent, so it notices the client closing; never writes a byte.
    socket.resume();
  });
  const port = await listen(server);
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await closeServer(server);
  });
  return { port, connections: () => total, open: () => sockets.size };
}

/**
 * A TCP relay in front of `targetPort`: what the shipper reaches instead of the collector, so a
 * test can cut the connection at a chosen moment (after the collector stored, before its Ack).
 */
export async function startRelay(t: ExecutionContext, targetPort: number): Promise<{ port: number; cut: () => number }> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    for (const s of pair) {
      s.on('error', () => {});
      s.on('close', () => (pairs.delete(pair), client.destroy(), upstream.destroy()));
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  const port = await listen(server);
  const cut = (): number => {
    const n = pairs.size;
    for (const pair of pairs) for (const socket of pair) socket.destroy();
    return n;
  };
  t.teardown(async () => {
    cut();
    await closeServer(server);
  });
  return { port, cut };
}
