// Ingest benchmark: verified records/s into a collector (its own process) from several concurrent
// sidecar streams of pre-built, signed segments, against a raw LMDB put of the same bytes
// measured in the same run, in plaintext and over mTLS (round by round, interleaved).
//
//   npm run bench:ingest      knobs: STREAMS=4 RECORDS=100000 (per stream) BATCH=256 SEGMENT=8 (batches) WINDOW=8 (segments in flight)
//                             ROUNDS=3: rounds of the same streams, each into a fresh collector and store; the verdict is
//                             on the median round (this machine's speed drifts by a fifth within minutes)
//                             WARMUP_RECORDS=8192: one more sidecar's stream shipped before the clock starts (JIT, worker start-up)
//                             PROFILE=1: the collector runs with --cpu-prof (bench/results/profiles/)
//                             COLLECTOR_NODE_FLAGS='--max-semi-space-size=64': more node flags for the collector's process
//                             SENDER=grpc-js (the sidecar's client library) or h2 (node:http2 speaking gRPC's framing, messages framed beforehand: a cheaper load generator)
//                             MTLS=1: each round also ships the same streams into a collector serving the mesh CA's TLS 1.3, each
//                             stream with a client certificate of its key and a token, as a sidecar with identity does (MTLS=0: plaintext only)
//                             IDS=random (request and trace ids as a sidecar makes them, random; the default) or sequential
//                             (counters: a best case real traffic never has, while ids were kept in B-trees)
//                             RECONCILE_OFF=1: each round also ships the same streams into a collector that does not reconcile
//                             calls (RECONCILE=0), interleaved; prints what reconciliation costs (target <= 15%) (0: skip)
//                             TIER_REPLICAS=1,2: then the JetStream tier with that many replicas (empty: skip), NATS_NODES=3
// After each round it opens the stopped collector's store read-only and prints its size on disk and
// its batch values' compression, and its id index (segments by level,
// entries in the log) and the median time of looking up one request id, which reads every segment and the log
// (from memory, as a collector does, and from the store, as an offline reader does).
import { fileURLToPath } from 'node:url';
import { createHash, webcrypto } from 'node:crypto';
import * as http2 from 'node:http2';
import { statSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { open } from 'lmdb';
import { LMDB_WRITER_OPTIONS } from '../ledger/lmdb-writer.js';
import { recordsRoot } from '../ledger/link-verifier.js';
import { planCommit } from '../proxy/journal/plan-commit.js';
import { GENESIS_HEAD, signHello } from '../ledger/chain.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { ED25519 } from '../ledger/x509.js';
import { openMeshCa } from '../control/collector/ingest/mesh-ca.js';
import { SYNC_PROTO_PATH, type CollectorMessage } from '../wire/sync-wire.js';
import { formatTable } from './table.js';
import { collectorMetrics, startCollector } from './collector-process.js';
import { spread } from './summary.js';
import { cpuTimeMs, mainThreadCpuTimeMs, minorFaults, threadCpuMs } from './proc-stats.js';
import { openLmdbStore } from '../control/collector/store/lmdb-store.js';
import { BATCHES_DB, openCollectorStores } from '../control/collector/store/store-layout.js';
import { ENTRY_BYTES, lookupId, openIdIndexDbs } from '../control/collector/store/id-index.js';
import type { SidecarState, StoredLink } from '../control/collector/collector-store.js';
import { indexRecord } from '../control/collector/store/record-index.js';
import { encodeLinks } from '../control/collector/store/encoded-batch.js';
import { tierRound, type TierRound } from './ingest-tier.js';

const STREAMS = Number(process.env.STREAMS ?? 4);
const RECORDS = Number(process.env.RECORDS ?? 100_000);
const WARMUP_RECORDS = Number(process.env.WARMUP_RECORDS ?? 8192);
const BATCH = Number(process.env.BATCH ?? 256);
const SEGMENT = Number(process.env.SEGMENT ?? 8);
const WINDOW = Number(process.env.WINDOW ?? 8);
const SENDER = process.env.SENDER ?? 'grpc-js';
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const MTLS = process.env.MTLS !== '0';
const RECONCILE_OFF = process.env.RECONCILE_OFF !== '0';
/** Issue 25's bound: reconciliation costs at most this share of ingest's records/s. */
const RECONCILE_COST_TARGET = 0.15;
/** Issue 24's target: ingest over mTLS keeps at least this share of plaintext's records/s. */
const MTLS_TARGET_RATIO = 0.9;
/** Issue 5's target, on the 2-core reference machine. */
const INGEST_TARGET = 100_000;
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) throw new Error(`ROUNDS: a whole number of rounds, at least 1, not ${process.env.ROUNDS}`);
if (SENDER !== 'h2' && SENDER !== 'grpc-js') throw new Error(`SENDER: h2 or grpc-js, not ${SENDER}`);
const IDS = process.env.IDS ?? 'random';
/** Replica counts of the JetStream tier measured after the embedded rounds ('' skips the tier). */
const TIER_REPLICAS = (process.env.TIER_REPLICAS ?? '1,2').split(',').filter((x) => x !== '').map(Number);
const NATS_NODES = Number(process.env.NATS_NODES ?? 3);
/** A tier replica's CPU a record, at most this many times the embedded collector's. */
const TIER_CPU_TARGET = 1.5;
if (IDS !== 'random' && IDS !== 'sequential') throw new Error(`IDS: random or sequential, not ${IDS}`);

const definition = protoLoader.loadSync(SYNC_PROTO_PATH, { keepCase: true, longs: Number, defaults: true, oneofs: true });
const sync = (definition['auditmesh.sync.v1.Collector'] as protoLoader.ServiceDefinition).Sync;

/**
 * Record i's request id, trace id and span id. A sidecar makes them at random (randomUUID, W3C
 * trace and span ids); these are as random but repeatable (a hash of the stream and i), and so is
 * the exchange's duration. IDS=sequential gives counters instead, as this benchmark used until
 * 2026-11-28: while the collector kept ids in B-trees, every insert then landed beside the one
 * before, and the store alone took 3.2-3.7x the records a second (bench/README.md); its id index
 * (id-index.ts) no longer cares. Random values also matter since batch values are compressed
 * (lmdb-store.ts): counters and constants compress better than what sidecars send.
 */
function ids(stream: number, i: number): { requestId: string; traceId: string; spanId: string; durationMs: number } {
  const h = createHash('sha256').update(`${stream}/${i}`).digest('hex');
  const spanId = h.slice(0, 16);
  const durationMs = parseInt(h.slice(16, 22), 16) / 100_000;
  if (IDS === 'sequential') return { requestId: `req-${stream}-${i}`, traceId: `${stream.toString(16).padStart(8, '0')}${i.toString(16).padStart(24, '0')}`, spanId, durationMs };
  const g = createHash('sha256').update(h).digest('hex');
  return { requestId: `${g.slice(0, 8)}-${g.slice(8, 12)}-4${g.slice(13, 16)}-a${g.slice(17, 20)}-${g.slice(20, 32)}`, traceId: g.slice(32, 64), spanId, durationMs };
}

/** A record as a sidecar writes it (about 765 bytes of canonical JSON with random ids). */
function record(stream: number, i: number, t0: number): Buffer {
  // Record i of stream s is one end of a call and record i of a neighbour stream the other, as two
  // sidecars record one call: s calls s+1 when i+s is odd, and s-1 calls s when it is even.
  // (The warm-up stream, numbered STREAMS, calls no one the timed streams know.)
  const outbound = (i + stream) % 2 === 1;
  const caller = outbound || stream >= STREAMS ? stream : (stream + STREAMS - 1) % STREAMS;
  const { requestId, traceId, spanId, durationMs } = ids(caller, i);
  return Buffer.from(
    JSON.stringify({
      'audit.kind': 'http',
      'audit.phase': 'final',
      'audit.direction': outbound ? 'outbound' : 'inbound',
      'audit.service': `svc-${stream}`,
      'peer.service': `svc-${outbound ? (stream + 1) % STREAMS : caller}`,
      'audit.start_unix_ms': t0 + i * 0.25,
      'audit.duration_ms': durationMs,
      'audit.ttfb_ms': Math.round(durationMs * 900) / 1000,
      'network.protocol.name': 'http',
      'network.protocol.version': '1.1',
      'client.address': '10.0.3.17',
      'client.port': 40000 + (i % 20000),
      'server.address': '10.0.5.2',
      'server.port': 8080,
      'http.request.method': 'GET',
      'url.path': `/api/items/${i}`,
      'http.response.status_code': i % 100 === 99 ? 503 : 200,
      'http.request.body.size': 0,
      'http.response.body.size': 105,
      'http.request.header': { accept: 'application/json', authorization: 'hmac-sha256:9f2c4e0d8a7b6c5d4e3f2a1b0c9d8e7f' },
      'trace.id': traceId,
      'span.id': spanId,
      'audit.request_id': requestId,
    }),
  );
}

/**
 * A sidecar's stream: its messages, and how to make its records again for the baselines. It holds
 * no record objects while ingest runs: with 400,000 of them alive, every full GC of this process
 * (one about every 0.5 s, as grpc-js copies each segment to frame it) marked them all, 40-70 ms of
 * its main thread each, and the sender's cost went from about 2.4 to 6 µs a record between runs,
 * on the 2 CPUs it shares with the collector.
 */
interface Stream {
  id: string;
  signer: SigningKey;
  hello: Buffer;
  segments: Buffer[];
  count: number;
  records(): Buffer[];
}

const T0 = Date.now() - 3_600_000;

/** One sidecar's journal as encoded Sync messages: Hello, then segments of SEGMENT batches, each ending signed. */
export function buildStream(s: number, count = RECORDS): Stream {
  const signer = ephemeralSigningKey();
  // One clock for every stream: the two ends of a call start together.
  const t0 = T0;
  const recordsOf = (): Buffer[] => Array.from({ length: count }, (_, i) => record(s, i, t0));
  const records = recordsOf();
  let head = { last_seq: 0, last_batch: 0, head: GENESIS_HEAD };
  const segments: Buffer[] = [];
  for (let from = 0, first = true; from < count; first = false) {
    const batches: Buffer[][] = [];
    for (let b = 0; b < SEGMENT && from < count; b++, from += BATCH) batches.push(records.slice(from, from + BATCH));
    const plan = planCommit({ head, epoch: 1, openEpoch: first, sealed: batches.map((r) => ({ count: r.length, root: recordsRoot(r).root, sealedUnixMs: t0 })), nowUnixMs: t0, signer });
    let b = 0;
    const links = plan.headers.map((h) => ({ ...h, key: h.key ?? '', sig: h.sig ?? '', records: h.kind === 'records' ? batches[b++] : [] }));
    segments.push(sync.requestSerialize({ segment: { links } }));
    head = plan.head;
  }
  const id = `bench-${s}`;
  const hello = { sidecar_id: id, service: `svc-${s}`, public_key: signer.publicKeySpki, key_id: signer.keyId, version: 'bench', base_head: GENESIS_HEAD, first_batch: 1, ...signHello(signer, id) };
  return { id, signer, hello: sync.requestSerialize({ hello }), segments, count, records: recordsOf };
}

/** How a stream reaches an mTLS collector: the mesh CA to trust, its client certificate (of the stream's key), the token it presents. */
interface StreamTls {
  caPem: Buffer;
  keyPem: Buffer;
  chainPem: Buffer;
  token: string;
}

/** Each stream's TLS material (MTLS=1): its journal key certified by the mesh CA of `caDir`, as Certify would. */
async function streamTls(caDir: string, token: string, streams: Stream[]): Promise<Map<string, StreamTls>> {
  const ca = await openMeshCa(caDir, { create: true });
  const out = new Map<string, StreamTls>();
  for (const s of streams) {
    const key = await webcrypto.subtle.importKey('spki', s.signer.publicKeySpki, ED25519, true, ['verify']);
    const issued = await ca.issue(key, { uris: [`spiffe://cluster.local/ns/bench/sa/${s.id}`] }, 3_600_000);
    out.set(s.id, { caPem: Buffer.from(ca.certPem), keyPem: Buffer.from(s.signer.privateKey.export({ format: 'pem', type: 'pkcs8' })), chainPem: Buffer.from(issued.chainPem), token });
  }
  return out;
}

/**
 * The sidecar's side of a Sync stream after its Hello: WINDOW segments in flight, the next one
 * sent as each Ack arrives, `done` after the last Ack; a Refusal fails the stream.
 */
function ackWindow(count: number, send: (i: number) => void, done: () => void, fail: (err: Error) => void): { onMessage(m: CollectorMessage): void; acked(): number } {
  let sent = 0;
  let acked = 0;
  const fill = (): void => {
    while (sent < count && sent - acked < WINDOW) send(sent++);
  };
  return {
    onMessage(m) {
      if ('refusal' in m) return fail(new Error(`refused: ${JSON.stringify(m.refusal)}`));
      if ('welcome' in m) return fill();
      if (++acked === count) done();
      else fill();
    },
    acked: () => acked,
  };
}

/** A gRPC length-prefixed message: flag 0 (not compressed), length, the message. */
function grpcFrame(message: Buffer): Buffer {
  const framed = Buffer.allocUnsafe(5 + message.length);
  framed[0] = 0;
  framed.writeUInt32BE(message.length, 1);
  message.copy(framed, 5);
  return framed;
}

/**
 * Ships one stream with WINDOW segments in flight over node:http2, speaking gRPC's wire format
 * itself with messages framed before the clock starts (SENDER=h2): the load generator's own cost
 * per record drops from about 5 µs to about 2 on the two CPUs it shares with the collector
 * (grpc-js's client copies every message to frame it). The collector sees the same bytes either
 * way. Measured 2026-11-28: before the collector's own cost came down, the sender made no
 * difference; since (session 7), ingest is CPU-bound on the 2 CPUs and the lighter sender leaves
 * the collector about 10% more.
 * Resolves with the last ack.
 */
function shipH2(address: string, stream: Stream, tls?: StreamTls): () => Promise<void> {
  const framed = { hello: grpcFrame(stream.hello), segments: stream.segments.map(grpcFrame) };
  return () => shipFramed(address, framed, tls);
}

function shipFramed(address: string, framed: { hello: Buffer; segments: Buffer[] }, tls?: StreamTls): Promise<void> {
  const session = tls === undefined ? http2.connect(`http://${address}`) : http2.connect(`https://${address}`, { ca: tls.caPem, key: tls.keyPem, cert: tls.chainPem, servername: 'localhost' });
  const auth = tls === undefined ? {} : { authorization: `Bearer ${tls.token}` };
  const call = session.request({ ':method': 'POST', ':path': sync.path, 'content-type': 'application/grpc', te: 'trailers', ...auth });
  return new Promise<void>((resolve, reject) => {
    let pending: Buffer = Buffer.alloc(0);
    const fail = (err: Error): void => {
      session.destroy();
      reject(err);
    };
    const window = ackWindow(
      framed.segments.length,
      (i) => call.write(framed.segments[i]),
      () => {
        call.end();
        session.close();
        resolve();
      },
      fail,
    );
    call.on('data', (chunk: Buffer) => {
      pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
      while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
        const end = 5 + pending.readUInt32BE(1);
        window.onMessage(sync.responseDeserialize(pending.subarray(5, end)) as CollectorMessage);
        pending = pending.subarray(end);
      }
    });
    call.on('trailers', (trailers) => {
      if (window.acked() < framed.segments.length) fail(new Error(`stream ended after ${window.acked()} acks: grpc-status ${String(trailers['grpc-status'])} ${String(trailers['grpc-message'] ?? '')}`));
    });
    call.on('error', fail);
    session.on('error', fail);
    call.write(framed.hello);
  });
}

/** The stream's sender, ready to start: SENDER=grpc-js (default) or h2. */
function sender(address: string, stream: Stream, tls?: StreamTls): () => Promise<void> {
  return SENDER === 'h2' ? shipH2(address, stream, tls) : () => shipGrpcJs(address, stream, tls);
}

/** Ships one stream with grpc-js, as a sidecar's shipper does, WINDOW segments in flight; resolves with the last ack. */
export function shipGrpcJs(address: string, stream: Stream, tls?: StreamTls): Promise<void> {
  const Client = grpc.makeGenericClientConstructor({ Sync: { ...sync, requestSerialize: (b: Buffer) => b } }, 'Collector');
  const credentials = tls === undefined ? grpc.credentials.createInsecure() : grpc.credentials.createSsl(tls.caPem, tls.keyPem, tls.chainPem);
  // Its own subchannel pool: each stream on its own connection, as each sidecar has (grpc-js shares one connection between clients otherwise).
  const client = new Client(address, credentials, { 'grpc.max_send_message_length': 64 * 1024 * 1024, 'grpc.use_local_subchannel_pool': 1 });
  const metadata = new grpc.Metadata();
  if (tls !== undefined) metadata.set('authorization', `Bearer ${tls.token}`);
  const call = (client as unknown as { Sync(m: grpc.Metadata): grpc.ClientDuplexStream<Buffer, CollectorMessage> }).Sync(metadata);
  return new Promise((resolve, reject) => {
    const window = ackWindow(
      stream.segments.length,
      (i) => call.write(stream.segments[i]),
      () => {
        call.end();
        client.close();
        resolve();
      },
      reject,
    );
    call.on('data', window.onMessage);
    call.on('error', reject);
    call.write(stream.hello);
  });
}

/** Baseline 1: the same record bytes put into LMDB under the same keys, one group commit per segment. */
async function rawLmdbPut(dir: string, streams: Stream[]): Promise<number> {
  const env = open({ path: dir, ...LMDB_WRITER_OPTIONS });
  const db = env.openDB<Buffer, [string, number]>('records', { encoding: 'binary', compression: false });
  const per = BATCH * SEGMENT;
  const records = streams.map((s) => s.records());
  const started = performance.now();
  await Promise.all(
    records.map(async (recs, n) => {
      for (let from = 0; from < recs.length; from += per) {
        await env.batch(() => {
          for (let i = from; i < Math.min(from + per, recs.length); i++) void db.put([`bench-${n}`, i + 1], recs[i]);
        });
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  await env.close();
  return seconds;
}

/**
 * Baseline 2: the collector's own store (lmdb-store.ts) taking the same records with their index
 * entries encoded beforehand, as ingest's workers do (not timed), one append per segment: the floor under ingest, which
 * adds gRPC, hashing, verification and acks on top.
 */
async function storeAppend(dir: string, streams: Stream[]): Promise<number> {
  const store = openLmdbStore(dir);
  const per = BATCH * SEGMENT;
  const runs = streams.map((s, n) => {
    const all = s.records();
    return Array.from({ length: Math.ceil(all.length / per) }, (_, k) => {
      const records = all.slice(k * per, (k + 1) * per).map((bytes, i) => ({ seq: k * per + i + 1, bytes, index: indexRecord(bytes) }));
      // One records link per BATCH records, as ingest stores them (header fields the store does not read left empty).
      const links: StoredLink[] = [];
      for (let at = 0; at < records.length; at += BATCH) {
        const count = Math.min(BATCH, records.length - at);
        links.push({ batch: (k * per + at) / BATCH + 1, first_seq: records[at].seq, count, kind: 'records', root: '', sealed_unix_ms: 0, epoch: 1, head: '' });
      }
      return { sidecar: { id: `bench-${n}` } as SidecarState, links, batches: encodeLinks(`bench-${n}`, links, records) };
    });
  });
  const started = performance.now();
  await Promise.all(runs.map(async (appends) => {
    for (const run of appends) await store.append(run);
  }));
  const seconds = (performance.now() - started) / 1000;
  await store.close();
  return seconds;
}

/** What one round measured: a fresh collector and store taking every stream at once. */
interface Round {
  seconds: number;
  /** The collector's CPU over the ingest alone, all threads and the main thread (null without /proc). */
  cpu: { all: number; main: number } | null;
  threads: Map<string, number>;
  /** The collector's minor page faults over the ingest (each costs a trip through the kernel). */
  faults: number | null;
  /** This process's CPU over the ingest: the sidecars' side of the streams, on the same 2 CPUs. */
  clientMs: number;
  /** The store's id index once the collector stopped, and what a lookup costs in it. */
  index: IndexShape;
  size: StoreSize;
}

/** What a stopped collector's store holds on disk: its file, and its batch values as stored (LZ4) and as read. */
interface StoreSize {
  fileBytes: number;
  storedBatchBytes: number;
  batchBytes: number;
}

function storeSize(storeDir: string): StoreSize {
  const env = open({ path: storeDir, readOnly: true, maxDbs: 32 });
  try {
    let storedBatchBytes = 0;
    let batchBytes = 0;
    for (const { value } of env.openDB<Buffer, [string, number]>(BATCHES_DB, { encoding: 'binary', compression: false }).getRange()) storedBatchBytes += value.length;
    for (const { value } of openCollectorStores(env).batches.getRange()) batchBytes += value.length;
    return { fileBytes: statSync(join(storeDir, 'data.mdb')).size, storedBatchBytes, batchBytes };
  } finally {
    void env.close();
  }
}

interface IndexShape {
  /** Segments by level. */
  levels: number[];
  logged: number;
  /** Median ms of looking up one request id (every segment read, and the log as a collector holds it in memory). */
  lookupMs: number;
  /** The same, reading the log from the store (as an offline reader does). */
  offlineLookupMs: number;
}

/** The id index of a stopped collector's store (read-only): its segments, its log, and 25 request ids looked up. */
async function indexShape(storeDir: string, streams: Stream[]): Promise<IndexShape> {
  const env = open({ path: storeDir, readOnly: true, maxDbs: 32 });
  try {
    const dbs = openIdIndexDbs(env);
    const levels: number[] = [];
    for (const { value } of dbs.segments.getRange()) if (!value.merging) levels[value.level ?? 0] = (levels[value.level ?? 0] ?? 0) + 1;
    const logged = Array.from(dbs.log.getRange(), ({ value }) => value.length / ENTRY_BYTES).reduce((a, b) => a + b, 0);
    // A collector reads the log from its writer's copy in memory (IdIndexWriter.logView); an
    // offline reader, from the store.
    const inMemory = Array.from(dbs.log.getRange(), ({ value }) => Buffer.from(value));
    const ms: number[] = [];
    const offlineMs: number[] = [];
    for (let k = 0; k < 25; k++) {
      const s = k % streams.length;
      // A call s makes (i + s odd): its outbound end, and the inbound end of stream s + 1 when the parities meet (STREAMS even).
      const i = Math.min(2 * Math.floor((k * streams[s].count) / 50) + ((s + 1) % 2), streams[s].count - 1);
      const { requestId } = ids(s, i);
      const ends = ((i + s) % 2 === 1 ? 1 : 0) + ((i + ((s + 1) % streams.length)) % 2 === 0 && (i + s) % 2 === 1 ? 1 : 0);
      for (const [log, times] of [[inMemory, ms], [undefined, offlineMs]] as const) {
        const started = performance.now();
        const found = lookupId(dbs, 'correlation', requestId, { log }).length;
        times.push(performance.now() - started);
        if (found !== ends) throw new Error(`request id ${requestId} has ${found} entries in the id index, expected ${ends}`);
      }
    }
    return { levels: Array.from(levels, (n) => n ?? 0), logged, lookupMs: spread(ms)!.median, offlineLookupMs: spread(offlineMs)!.median };
  } finally {
    await env.close();
  }
}

/** With `mtls`: the collector serves the mesh CA of `caDir` and each stream presents its certificate and the token. */
async function ingestRound(storeDir: string, streams: Stream[], warmup: Stream | null, mtls?: { serveArgs: string[]; tls: Map<string, StreamTls> }, env: NodeJS.ProcessEnv = {}): Promise<Round> {
  const collector = await startCollector(storeDir, mtls?.serveArgs, env);
  try {
    if (warmup !== null) await sender(collector.address, warmup, mtls?.tls.get(warmup.id))();
    const senders = streams.map((s) => sender(collector.address, s, mtls?.tls.get(s.id)));
    const cpuBefore = [cpuTimeMs(collector.pid), mainThreadCpuTimeMs(collector.pid)];
    const threadsBefore = threadCpuMs(collector.pid);
    const faultsBefore = minorFaults(collector.pid);
    const clientBefore = process.cpuUsage();
    const started = performance.now();
    await Promise.all(senders.map((send) => send()));
    const seconds = (performance.now() - started) / 1000;
    const clientUsage = process.cpuUsage(clientBefore);
    const cpuAfter = [cpuTimeMs(collector.pid), mainThreadCpuTimeMs(collector.pid)];
    const faultsAfter = minorFaults(collector.pid);
    const threads = new Map<string, number>();
    for (const [thread, ms] of threadCpuMs(collector.pid)) threads.set(thread, ms - (threadsBefore.get(thread) ?? 0));
    const metrics = await collectorMetrics(collector.http, mtls === undefined ? undefined : join(mtls.serveArgs[1]!, 'ca.crt'));
    const stored = Number(/^auditmesh_collector_records_stored_total (\d+)/m.exec(metrics)?.[1] ?? 0) - (warmup?.count ?? 0);
    const total = streams.reduce((a, s) => a + s.count, 0);
    if (stored !== total) throw new Error(`collector stored ${stored} records, expected ${total}`);
    await collector.stop();
    return {
      index: await indexShape(storeDir, streams),
      size: storeSize(storeDir),
      seconds,
      cpu: cpuBefore.includes(null) || cpuAfter.includes(null) ? null : { all: cpuAfter[0]! - cpuBefore[0]!, main: cpuAfter[1]! - cpuBefore[1]! },
      threads,
      faults: faultsBefore !== null && faultsAfter !== null ? faultsAfter - faultsBefore : null,
      clientMs: (clientUsage.user + clientUsage.system) / 1000,
    };
  } finally {
    await collector.stop();
  }
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'auditmesh-bench-ingest-'));
  try {
    process.stderr.write(`building ${STREAMS} streams of ${RECORDS} signed records (batches of ${BATCH}, ${SEGMENT} batches a segment)...\n`);
    const streams = Array.from({ length: STREAMS }, (_, s) => buildStream(s));
    const total = STREAMS * RECORDS;
    const warmup = WARMUP_RECORDS > 0 ? buildStream(STREAMS, WARMUP_RECORDS) : null;
    const mtls = MTLS ? await mtlsSetup(dir, warmup === null ? streams : [...streams, warmup]) : undefined;
    const rounds: Round[] = [];
    const mtlsRounds: Round[] = [];
    const offRounds: Round[] = [];
    // Interleaved, plaintext then mTLS in each round: the machine's drift lands on both.
    for (let r = 0; r < ROUNDS; r++) {
      if (RECONCILE_OFF) offRounds.push(await ingestRound(join(dir, `store-off-${r}`), streams, warmup, undefined, { RECONCILE: '0' }));
      rounds.push(await ingestRound(join(dir, `store-${r}`), streams, warmup));
      if (mtls !== undefined) mtlsRounds.push(await ingestRound(join(dir, `store-mtls-${r}`), streams, warmup, mtls));
    }
    const rawS = await rawLmdbPut(join(dir, 'raw'), streams);
    const storeS = await storeAppend(join(dir, 'store-only'), streams);
    const row = (name: string, seconds: number): string[] => [name, String(total), seconds.toFixed(2), Math.round(total / seconds).toLocaleString('en'), (rawS / seconds).toFixed(2), (storeS / seconds).toFixed(2)];
    const numbered = (k: number): string => (ROUNDS > 1 ? ` (round ${k + 1})` : '');
    const rows = [
      row('LMDB put of the same record bytes (baseline 1)', rawS),
      row('collector store: batches + index entries (baseline 2)', storeS),
      ...rounds.map((r, k) => row(`collector ingest: ${STREAMS} gRPC streams, verified, indexed, stored, acked${numbered(k)}`, r.seconds)),
      ...mtlsRounds.map((r, k) => row(`the same over mTLS (TLS 1.3, client certificates)${numbered(k)}`, r.seconds)),
      ...offRounds.map((r, k) => row(`the same, calls not reconciled (RECONCILE=0)${numbered(k)}`, r.seconds)),
    ];
    process.stdout.write(formatTable(['path', 'records', 'seconds', 'records/s', 'vs 1', 'vs 2'], rows) + '\n');
    const rates = spread(rounds.map((r) => total / r.seconds))!;
    const range = ROUNDS > 1 ? `, median of ${ROUNDS} rounds (${Math.round(rates.min).toLocaleString('en')}..${Math.round(rates.max).toLocaleString('en')})` : '';
    process.stdout.write(`collector ingest: ${Math.round(rates.median).toLocaleString('en')} verified records/s from ${STREAMS} streams${range} (target >= ${INGEST_TARGET.toLocaleString('en')} on this machine): ${rates.median >= INGEST_TARGET ? 'met' : 'MISSED'}\n`);
    if (mtlsRounds.length > 0) {
      const tlsRates = spread(mtlsRounds.map((r) => total / r.seconds))!;
      const ratio = tlsRates.median / rates.median;
      const pairs = mtlsRounds.map((r, k) => (rounds[k].seconds / r.seconds).toFixed(2)).join(', ');
      process.stdout.write(`over mTLS: ${Math.round(tlsRates.median).toLocaleString('en')} records/s, ${ratio.toFixed(2)}x plaintext (median over median; round by round ${pairs}) (target >= ${MTLS_TARGET_RATIO}x): ${ratio >= MTLS_TARGET_RATIO ? 'met' : 'MISSED'}\n`);
      // CPU a record does not move with what the neighbours leave this VM: on a shared machine, the ratio to judge by.
      const cpuRatios = mtlsRounds.flatMap((r, k) => (r.cpu === null || rounds[k].cpu === null ? [] : [rounds[k].cpu!.all / r.cpu.all]));
      if (cpuRatios.length > 0) process.stdout.write(`  collector CPU a record, plaintext / mTLS (the ratio of a CPU-bound collector), round by round: ${cpuRatios.map((x) => x.toFixed(2)).join(', ')}; median ${spread(cpuRatios)!.median.toFixed(2)}\n`);
    }
    if (offRounds.length > 0) reconcileReport(rounds, offRounds, total);
    cpuReport('plaintext', rounds, total);
    if (offRounds.length > 0) cpuReport('plaintext, calls not reconciled', offRounds, total);
    if (mtlsRounds.length > 0) cpuReport('mTLS', mtlsRounds, total);
    for (const [k, { index }] of rounds.entries()) {
      const levels = index.levels.map((n, l) => `${n} at level ${l}`).join(', ') || 'no segments';
      const { fileBytes, storedBatchBytes, batchBytes } = rounds[k].size;
      const mb = (n: number): string => (n / 1e6).toFixed(0);
      process.stdout.write(`store after round ${k + 1}: ${mb(fileBytes)} MB on disk (${Math.round(fileBytes / (total + (warmup?.count ?? 0)))} bytes a record); batch values ${mb(storedBatchBytes)} MB as stored for ${mb(batchBytes)} MB of records (${(batchBytes / storedBatchBytes).toFixed(2)}x)\n`);
      process.stdout.write(`id index after round ${k + 1}: ${levels}, ${index.logged.toLocaleString('en')} entries in its log; one request id looked up in ${index.lookupMs.toFixed(2)} ms as a collector does, ${index.offlineLookupMs.toFixed(2)} ms reading the log from the store (medians of 25)\n`);
    }
    // The embedded collector's CPU in its median round: what a tier replica's is judged against.
    const cpu = [...rounds].sort((a, b) => b.seconds - a.seconds)[Math.floor((rounds.length - 1) / 2)]?.cpu ?? null;
    if (cpu !== null && TIER_REPLICAS.length > 0) {
      const tiers: TierRound[] = [];
      for (const n of TIER_REPLICAS) {
        process.stderr.write(`the JetStream tier: ${n} replica(s) on ${NATS_NODES} nats-server nodes...\n`);
        tiers.push(await tierRound(join(dir, `tier-${n}`), n, NATS_NODES, warmup === null ? streams : [warmup, ...streams], sender));
      }
      printTier(tiers, total + (warmup?.count ?? 0), rates.median, cpu.all / total);
    }
    process.stdout.write(`sent with ${SENDER === 'h2' ? 'node:http2, messages framed beforehand' : 'grpc-js, as a sidecar ships'}; ${STREAMS} streams x ${RECORDS} records, ${BATCH} records a batch, ${SEGMENT} batches a segment, ${WINDOW} segments in flight a stream, ${IDS} request and trace ids, after a warm-up stream of ${WARMUP_RECORDS}, each round a fresh collector and store${MTLS ? ' (plaintext: --insecure; mTLS: a shared token and a client certificate a stream)' : ''}; ${availableParallelism()} CPUs, load average ${loadavg()[0].toFixed(1)}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** What reconciling every call costs: records/s and collector CPU a record, against the same rounds without it. */
function reconcileReport(on: Round[], off: Round[], total: number): void {
  const onRate = spread(on.map((r) => total / r.seconds))!.median;
  const offRate = spread(off.map((r) => total / r.seconds))!.median;
  const cost = 1 - onRate / offRate;
  const pairs = on.map((r, k) => (off[k].seconds / r.seconds).toFixed(2)).join(', ');
  process.stdout.write(`reconciliation: ${Math.round(onRate).toLocaleString('en')} records/s with it, ${Math.round(offRate).toLocaleString('en')} without: costs ${(cost * 100).toFixed(1)}% of ingest (median over median; on/off round by round ${pairs}) (target <= ${RECONCILE_COST_TARGET * 100}%): ${cost <= RECONCILE_COST_TARGET ? 'met' : 'MISSED'}\n`);
  const cpu = on.flatMap((r, k) => (r.cpu === null || off[k].cpu === null ? [] : [r.cpu.all / off[k].cpu!.all]));
  if (cpu.length > 0) process.stdout.write(`  collector CPU a record, with / without, round by round: ${cpu.map((x) => x.toFixed(2)).join(', ')}; median ${spread(cpu)!.median.toFixed(2)}\n`);
}

/** A mesh CA, a token file and each stream's certificate; the collector's arguments for mTLS (ingest-serve.ts). */
async function mtlsSetup(dir: string, streams: Stream[]): Promise<{ serveArgs: string[]; tls: Map<string, StreamTls> }> {
  const caDir = join(dir, 'ca');
  const tokens = join(dir, 'tokens');
  const token = 'bench-ingest-token';
  await writeFile(tokens, `${token}\n`, { mode: 0o600 });
  return { serveArgs: ['mtls', caDir, tokens], tls: await streamTls(caDir, token, streams) };
}

/** The collector's CPU in the round nearest the median (the lower one of an even count), thread by thread. */
function cpuReport(label: string, rounds: Round[], total: number): void {
  const byRate = [...rounds].sort((a, b) => b.seconds - a.seconds);
  const typical = byRate[Math.floor((byRate.length - 1) / 2)];
  const { cpu, threads, faults, clientMs, seconds } = typical;
  if (cpu === null) return;
  const us = (ms: number): string => ((ms * 1000) / total).toFixed(1);
  const which = ROUNDS > 1 ? ` (round ${rounds.indexOf(typical) + 1})` : '';
  process.stdout.write(`${label}: collector CPU during ingest${which}: ${us(cpu.all)} µs a record (all threads), ${us(cpu.main)} on its event loop; ${(cpu.all / 1000 / seconds).toFixed(2)} of ${availableParallelism()} CPUs busy${faults === null ? '' : `; ${(faults / total).toFixed(2)} page faults a record`}\n`);
  // Thread by thread (µs a record), busiest first: which part of the pipeline the CPU goes to.
  const busiest = [...threads].filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1]);
  process.stdout.write(`  by thread: ${busiest.map(([name, ms]) => `${name} ${us(ms)}`).join(', ')}\n`);
  process.stdout.write(`  the ${STREAMS} sending streams (this process): ${us(clientMs)} µs a record; both together ${((cpu.all + clientMs) / 1000 / seconds).toFixed(2)} CPUs busy\n`);
}

/** The tier's rows: records/s against the embedded collector's median, CPU a record against its, and where a record's time goes. */
function printTier(tiers: TierRound[], records: number, embeddedRate: number, embeddedCpuMsPerRecord: number): void {
  const us = (ms: number): string => ((ms * 1000) / records).toFixed(1);
  const rows = tiers.map((r) => [`collector tier: ${r.replicas} replica(s), ${r.natsNodes} NATS nodes`, String(records), r.seconds.toFixed(2), Math.round(records / r.seconds).toLocaleString('en'), (records / r.seconds / embeddedRate).toFixed(2)]);
  process.stdout.write(formatTable(['path (warm-up stream included)', 'records', 'seconds', 'records/s', 'vs embedded'], rows) + '\n');
  for (const r of tiers) {
    const perReplica = r.replicaCpuMs / records;
    const ratio = perReplica / embeddedCpuMsPerRecord;
    process.stdout.write(
      `tier, ${r.replicas} replica(s): replica CPU ${us(r.replicaCpuMs)} µs a record (all replicas, ingest and index; embedded ${(embeddedCpuMsPerRecord * 1000).toFixed(1)}): ${ratio.toFixed(2)}x, target <= ${TIER_CPU_TARGET}x: ${ratio <= TIER_CPU_TARGET ? 'met' : 'MISSED'}; ${(r.replicaFaults / records).toFixed(2)} page faults a record; NATS servers ${us(r.natsCpuMs)} µs a record\n` +
        `  a record's time in the replicas (wall, summed): publish until JetStream acked ${us(r.publishMs)} µs, head compare-and-set ${us(r.casMs)} µs, index write ${us(r.indexMs)} µs (verify: as embedded)\n`,
    );
  }
}

// Run as a script; bench/export.ts imports its streams and senders.
if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) await main();
