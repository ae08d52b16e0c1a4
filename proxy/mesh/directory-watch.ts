import * as grpc from '@grpc/grpc-js';
import { Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../command/log.js';
import { DirectoryClient, type DirectoryUpdate } from '../../wire/sync-wire.js';
import { fullJitterMs, sleep } from '../ship/backoff.js';
import { h2Preflight } from '../ship/h2-preflight.js';
import { readToken } from '../ship/shipper.js';
import type { MeshDirectory, MeshPeer } from './directory.js';

/**
 * The sidecar's copy of the mesh directory: a Directory.Watch stream to the collector (wire/
 * sync.proto) with the shipper's credentials (its workload certificate over mTLS when identity is
 * on, else its token), kept for as long as the sidecar runs and reopened after each failure with
 * backoff. The collector sends the whole directory first, then its changes, and an empty update
 * every 10 s; a copy that has heard nothing for DIRECTORY_STALE_MS is not `fresh()`, and keeps
 * what it last knew (a listed peer is never downgraded to plaintext because the collector is away).
 */

/** No update for this long and the copy is stale: three of the collector's 10 s keepalives missed. */
export const DIRECTORY_STALE_MS = 30_000;
/** Connect, and the snapshot, within this (or the staleness bound, if longer); else the watch is reopened. */
const CONNECT_TIMEOUT_MS = 10_000;
const BACKOFF_BASE_MS = 200;
const BACKOFF_MAX_MS = 30_000;
const UNIMPLEMENTED_RETRY_MS = 30_000;
const KEEPALIVE_MS = 30_000;
const KEEPALIVE_TIMEOUT_MS = 10_000;

export interface DirectoryWatchOptions {
  /** HOST:PORT of the collector. */
  target: string;
  /** With a workload certificate: TLS presenting it (the current one at each connection), trusting only the mesh CA; else plaintext with the token. */
  tls?: { caPem: string; credentials(): grpc.ChannelCredentials };
  /** The collector credential without a certificate, read at every connection; the flag it came from, for errors. */
  tokenFile?: string;
  tokenFlag?: string;
  /** Stale after this long without an update; default DIRECTORY_STALE_MS. A watch silent this long is reopened. */
  staleAfterMs?: number;
  /** Reconnect backoff: full jitter from the base, doubling, up to the cap (the sidecar passes --ship-backoff-max-ms). */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** Where the directory's gauges go (the sidecar's /metrics); none: not exported. */
  registry?: Registry;
  log: Logger;
}

/** A watched directory: the MeshDirectory the data path reads, and its lifecycle. */
export interface WatchedDirectory extends MeshDirectory {
  /** Peers listed now. */
  readonly size: number;
  /** Whether a Watch stream is open and has sent its snapshot. */
  readonly connected: boolean;
  close(): Promise<void>;
}

export function openDirectory(opts: DirectoryWatchOptions): WatchedDirectory {
  const staleAfterMs = opts.staleAfterMs ?? DIRECTORY_STALE_MS;
  const peers = new Map<string, MeshPeer>();
  const controller = new AbortController();
  /** When the last update arrived (0: none yet). */
  let lastUpdateMs = 0;
  let connected = false;
  if (opts.registry !== undefined) registerGauges(opts.registry, () => peers.size, () => lastUpdateMs);

  const apply = (u: DirectoryUpdate): void => {
    if (u.snapshot) peers.clear();
    for (const ip of u.removed ?? []) peers.delete(ip);
    for (const e of u.added ?? []) peers.set(e.ip, { identity: e.identity, sidecarId: e.sidecar_id, service: e.service });
    lastUpdateMs = Date.now();
  };

  /** One Watch stream, from connect to its end; resolves with why it ended and whether it got its snapshot. */
  const session = async (): Promise<{ snapshot: boolean; reason: string; code?: grpc.status }> => {
    await h2Preflight(opts.target, CONNECT_TIMEOUT_MS, opts.tls?.caPem);
    const metadata = new grpc.Metadata();
    if (opts.tls === undefined) {
      const token = await readToken(opts.tokenFile, opts.tokenFlag ?? '--collector-token-file');
      if (token !== undefined) metadata.set('authorization', `Bearer ${token}`);
    }
    const client = new DirectoryClient(opts.target, opts.tls?.credentials() ?? grpc.credentials.createInsecure(), {
      'grpc.keepalive_time_ms': KEEPALIVE_MS,
      'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.use_local_subchannel_pool': 1,
      'grpc.enable_retries': 0,
    });
    return new Promise((resolve) => {
      const call = (client as unknown as { Watch(req: object, md: grpc.Metadata): grpc.ClientReadableStream<DirectoryUpdate> }).Watch({}, metadata);
      let snapshot = false;
      let watchdog: NodeJS.Timeout | undefined;
      // The first update within the connect bound, then one at least every staleAfterMs.
      const arm = (ms: number): void => {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => call.cancel(), ms);
      };
      const abort = (): void => call.cancel();
      arm(Math.max(CONNECT_TIMEOUT_MS, staleAfterMs));
      // close() may have come while the preflight or the token read was under way.
      if (controller.signal.aborted) abort();
      else controller.signal.addEventListener('abort', abort);
      call.on('data', (u: DirectoryUpdate) => {
        if (!snapshot && !u.snapshot) return;
        if (u.snapshot && !snapshot) opts.log('info', 'mesh directory watch open', { collector: opts.target, peers: u.added?.length ?? 0 });
        snapshot = true;
        connected = true;
        apply(u);
        arm(staleAfterMs);
      });
      call.on('error', () => {});
      call.on('status', (status: grpc.StatusObject) => {
        clearTimeout(watchdog);
        controller.signal.removeEventListener('abort', abort);
        connected = false;
        client.close();
        resolve({ snapshot, reason: `${grpc.status[status.code] ?? status.code}: ${status.details}`, code: status.code });
      });
    });
  };

  const run = async (): Promise<void> => {
    let attempt = 0;
    while (!controller.signal.aborted) {
      let outcome: { snapshot: boolean; reason: string; code?: grpc.status };
      try {
        outcome = await session();
      } catch (err) {
        outcome = { snapshot: false, reason: (err as Error).message };
      }
      if (controller.signal.aborted) return;
      if (outcome.snapshot) attempt = 0;
      // A collector from before the directory answers UNIMPLEMENTED: ask again only every 30 s.
      const delayMs = outcome.code === grpc.status.UNIMPLEMENTED ? UNIMPLEMENTED_RETRY_MS : fullJitterMs(attempt++, opts.backoffBaseMs ?? BACKOFF_BASE_MS, opts.backoffMaxMs ?? BACKOFF_MAX_MS);
      opts.log('warn', 'mesh directory watch ended; reopening', { collector: opts.target, reason: outcome.reason, retry_ms: delayMs, peers_kept: peers.size });
      await sleep(delayMs, controller.signal);
    }
  };
  const running = run();

  return {
    lookup: (ip) => peers.get(ip),
    fresh: () => lastUpdateMs !== 0 && Date.now() - lastUpdateMs <= staleAfterMs,
    get size() {
      return peers.size;
    },
    get connected() {
      return connected;
    },
    async close() {
      controller.abort();
      await running;
    },
  };
}

function registerGauges(registry: Registry, size: () => number, lastUpdateMs: () => number): void {
  new Gauge({
    name: 'auditmesh_directory_entries',
    help: "Meshed pods in this sidecar's copy of the mesh directory (pod IP -> proven workload identity)",
    registers: [registry],
    collect() {
      this.set(size());
    },
  });
  new Gauge({
    name: 'auditmesh_directory_update_age_seconds',
    help: 'Seconds since the last mesh directory update from the collector (a keepalive comes every 10 s; past 30 s the copy is stale); -1 before the first',
    registers: [registry],
    collect() {
      const last = lastUpdateMs();
      this.set(last === 0 ? -1 : (Date.now() - last) / 1000);
    },
  });
}
