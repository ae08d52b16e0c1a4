import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { Agent, fetch as undiciFetch, type RequestInit, type Response } from 'undici';
import type { RootDatabase } from 'lmdb';
import { createCollector, type Collector, type CollectorConfig } from '../../control/collector/collector.js';
import { ID_INDEX_DB_NAMES } from '../../control/collector/store/id-index.js';
import { BATCHES_DB } from '../../control/collector/store/store-layout.js';
import { CollectorClient, type CollectorMessage, type Hello, type Segment, type SyncClientStream, type WireLink } from '../../wire/sync-wire.js';
import { GENESIS_HEAD, signHello } from '../../ledger/chain.js';
import type { SigningKey } from '../../ledger/keys.js';
import type { Logger } from '../../command/log.js';
import { withSnapshot, headerEntries, recordEntries } from '../../ledger/read-journal.js';
import { tempDir } from './sidecar.js';

/** A collector started by startTestCollector, with where its things are. */
export interface TestCollector extends Collector {
  /** The LMDB store folder: pass it as `storeDir` to start another collector on the same store. */
  storeDir: string;
  /** The accepted bearer token (null when started --insecure). */
  token: string | null;
  tokenFile: string | null;
  /** A reader token of every namespace (`*`), null when started --insecure (open reads). */
  readerToken: string | null;
  /** Request init carrying the reader token: `fetch(url, c.readAuth)`. */
  readAuth: { headers: Record<string, string> };
  /** `--token-file FILE` for `auditmesh query` and `tail` (none when --insecure), and `--ca-file FILE` when it serves HTTPS with its serving identity. */
  readerArgs: string[];
  /** The mesh CA bundle (ca.crt) when the HTTP API serves HTTPS with the serving identity; null otherwise. */
  caFile: string | null;
  /** GET `path` of the HTTP API as a reader would: trusting the mesh CA when it serves HTTPS (`init` adds headers, e.g. `readAuth`). */
  get(path: string, init?: RequestInit): Promise<Response>;
}

export interface TestCollectorOptions extends Partial<CollectorConfig> {
  /** A token to accept (default: a random one); null: start --insecure, no token checked. */
  token?: string | null;
  /** Where the collector's log lines go (default: nowhere). */
  log?: Logger;
}

/**
 * A real collector in this process: gRPC and HTTP on 127.0.0.1 ephemeral ports, its store in a
 * temp folder (or `storeDir`), a random accepted token in a token file. Closed when the test ends
 * (close() before that is fine: it is idempotent).
 */
export async function startTestCollector(t: ExecutionContext, opts: TestCollectorOptions = {}): Promise<TestCollector> {
  const dir = await tempDir(t, 'auditmesh-collector-');
  const token = opts.token === undefined ? randomBytes(16).toString('hex') : opts.token;
  let tokenFile: string | null = null;
  if (token !== null) {
    tokenFile = join(dir, 'tokens');
    await writeFile(tokenFile, `# test tokens\n${token}\n`, { mode: 0o600 });
  }
  // Reads need a credential unless --insecure: a reader of every namespace, unless the test brings its own.
  const readerToken = token === null ? null : randomBytes(16).toString('hex');
  const readerTokenFile = join(dir, 'reader-tokens');
  const readerArgs: string[] = [];
  if (readerToken !== null) {
    await writeFile(readerTokenFile, `${readerToken} *\n`, { mode: 0o600 });
    await writeFile(join(dir, 'reader-token'), `${readerToken}\n`, { mode: 0o600 });
    readerArgs.push('--token-file', join(dir, 'reader-token'));
  }
  const { token: _, log, ...config } = opts;
  const storeDir = opts.storeDir ?? join(dir, 'store');
  const collector = await createCollector({ grpcPort: 0, httpPort: 0, bind: '127.0.0.1', storeDir, insecure: token === null, ...(tokenFile === null ? {} : { tokenFile }), ...(readerToken === null ? {} : { readerTokenFile }), ...config }, log);
  t.teardown(() => collector.close());
  const readAuth = { headers: readerToken === null ? {} : { authorization: `Bearer ${readerToken}` } as Record<string, string> };
  // With identity on, the API serves HTTPS with the CA-issued serving certificate: readers trust the mesh CA.
  let caFile: string | null = null;
  let dispatcher: Agent | undefined;
  if (collector.serving !== null && opts.httpTls === undefined) {
    caFile = join(dir, 'ca.crt');
    await writeFile(caFile, collector.ca!.certPem);
    readerArgs.push('--ca-file', caFile);
    dispatcher = new Agent({ connect: { ca: collector.ca!.certPem } });
    // destroy, not close: close waits for the collector to end its keep-alive connections, which it does only once it closes, after this.
    t.teardown(() => dispatcher!.destroy());
  }
  const get = (path: string, init: RequestInit = {}): Promise<Response> => undiciFetch(collector.httpUrl + path, { ...init, dispatcher });
  return Object.assign(collector, { storeDir, token, tokenFile, readerToken, readAuth, readerArgs, caFile, get });
}

/** A test peer on one Sync stream: send messages, await the collector's answers in order. */
export interface SyncPeer {
  stream: SyncClientStream;
  send(msg: object): void;
  /** The next CollectorMessage; rejects if the stream ends first (with its status). */
  next(timeoutMs?: number): Promise<CollectorMessage>;
  /** The stream's final status. */
  status: Promise<grpc.StatusObject>;
  close(): void;
}

/** Opens a Sync stream to `address` with `authorization: Bearer token` (none if token is null). */
export function openSync(t: ExecutionContext, address: string, token: string | null, credentials = grpc.credentials.createInsecure()): SyncPeer {
  const client = new CollectorClient(address, credentials, { 'grpc.max_send_message_length': 64 * 1024 * 1024 });
  const metadata = new grpc.Metadata();
  if (token !== null) metadata.set('authorization', `Bearer ${token}`);
  const stream = (client as unknown as { Sync(md: grpc.Metadata): SyncClientStream }).Sync(metadata);
  const received: CollectorMessage[] = [];
  const waiters: Array<() => void> = [];
  let ended: grpc.StatusObject | undefined;
  const wake = (): void => void waiters.splice(0).forEach((w) => w());
  stream.on('data', (m: CollectorMessage) => (received.push(m), wake()));
  const status = new Promise<grpc.StatusObject>((resolve) => stream.on('status', (s: grpc.StatusObject) => ((ended = s), wake(), resolve(s))));
  stream.on('error', () => {});
  const close = (): void => {
    stream.cancel();
    client.close();
  };
  t.teardown(close);
  return {
    stream,
    status,
    close,
    send: (msg) => void stream.write(msg),
    next(timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no collector message within ${timeoutMs} ms`)), timeoutMs);
        const check = (): void => {
          if (received.length > 0) return clearTimeout(timer), resolve(received.shift()!);
          if (ended !== undefined) return clearTimeout(timer), reject(Object.assign(new Error(`stream ended: ${ended.code} ${ended.details}`), { status: ended }));
          waiters.push(check);
        };
        check();
      });
    },
  };
}

/** A journal read back as the shipper would send it: its Hello and its links grouped into segments ending in signed links. */
export interface JournalShipment {
  hello: Hello;
  segments: Segment[];
  /** Every link, in order. */
  links: WireLink[];
}

/** A Hello as the shipper sends it, signed by `signer` now. */
export function signedHello(signer: SigningKey, sidecarId: string, service = 'svc', unixMs = Date.now()): Hello {
  return {
    sidecar_id: sidecarId,
    service,
    public_key: signer.publicKeySpki,
    key_id: signer.keyId,
    version: 'test',
    base_head: GENESIS_HEAD,
    first_batch: 1,
    ...signHello(signer, sidecarId, unixMs),
  };
}

/** Reads a closed (or live) journal written with `signer` and cuts it into segments, each ending at a signed link. */
export async function journalShipment(journalDir: string, signer: SigningKey, sidecarId: string, service = 'svc'): Promise<JournalShipment> {
  return withSnapshot(journalDir, ({ stores, transaction }) => {
    const bytes = new Map<number, Buffer>();
    for (const { key, value } of recordEntries(stores, {}, transaction)) bytes.set(key, Buffer.from(value));
    const links: WireLink[] = [];
    for (const { value: h } of headerEntries(stores, {}, transaction)) {
      const records = h.kind === 'records' ? Array.from({ length: h.count }, (_, i) => bytes.get(h.first_seq + i)!) : [];
      links.push({ batch: h.batch, first_seq: h.first_seq, count: h.count, root: h.root, sealed_unix_ms: h.sealed_unix_ms, epoch: h.epoch, kind: h.kind, head: h.head, key: h.key ?? '', sig: h.sig ?? '', records });
    }
    const segments: Segment[] = [];
    let run: WireLink[] = [];
    for (const link of links) {
      run.push(link);
      if (link.sig === '') continue;
      segments.push({ links: run });
      run = [];
    }
    const keyId = links.find((l) => l.key !== '')!.key;
    if (keyId !== signer.keyId) throw new Error(`journal ${journalDir} is signed with key ${keyId}, not ${signer.keyId}`);
    return { hello: signedHello(signer, sidecarId, service), segments, links };
  });
}

/**
 * Turns a collector store into the layout before the id index (before 0.1.0): no id_* databases, request and
 * trace ids in B-trees of their own (by_correlation, by_trace; an entry each, as they held).
 * Open `env` with room for them all (maxDbs).
 */
export function toEarlierIdLayout(env: RootDatabase): void {
  for (const name of ID_INDEX_DB_NAMES) env.openDB({ name }).dropSync();
  for (const name of ['by_correlation', 'by_trace']) env.openDB({ name, encoding: 'binary' }).putSync(['req-old', 1, 'pod-old', 1, 0], Buffer.alloc(0));
}

/**
 * Turns a collector store into the layout before batch values were compressed: every batch value,
 * byte for byte, under `batches`, and no compressed database (a layout from before 0.1.0). Returns how
 * many it moved.
 */
export function toUncompressedBatches(env: RootDatabase): number {
  const now = env.openDB<Buffer, [string, number]>(BATCHES_DB, { encoding: 'binary', compression: true });
  const earlier = env.openDB<Buffer, [string, number]>('batches', { encoding: 'binary', compression: false });
  let n = 0;
  for (const { key, value } of now.getRange()) {
    earlier.putSync(key, value);
    n++;
  }
  now.dropSync();
  return n;
}
