import * as grpc from '@grpc/grpc-js';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../../command/log.js';
import { initialiseLabels, labelValues } from '../../../command/label-values.js';
import type { DirectoryUpdate, DirectoryWatch } from '../../../wire/sync-wire.js';
import type { StreamAuth } from '../ingest/stream-auth.js';
import type { PeerVerdict } from '../ingest/peer-identity.js';
import type { DirectoryView } from './mesh-directory.js';

/**
 * Directory.Watch (wire/sync.proto): the whole directory first, then each change as it happens,
 * and an empty update every keepalive interval so a watcher can tell a quiet directory from a
 * collector it no longer hears. Authenticated like Sync, on the same port: with the mesh CA only
 * a client presenting a valid workload certificate (the directory names every meshed workload,
 * and only a meshed workload needs it); without it the collector's token; open under --insecure.
 */

/** An empty update this often says "still current" (sidecars judge their copy stale after 30 s without one). */
export const DIRECTORY_KEEPALIVE_MS = 10_000;

export type WatchRefusal = 'certificate' | 'credential';
const WATCH_REFUSALS: readonly WatchRefusal[] = labelValues<WatchRefusal>({ certificate: true, credential: true });

export interface WatchDeps {
  directory: DirectoryView;
  /** With the mesh CA's TLS: the identity the client certificate proves; null: plaintext. */
  peer: ((call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } }) => PeerVerdict) | null;
  /** Without the mesh CA: the Sync credential check; null with neither (--insecure): open. */
  auth: StreamAuth | null;
  keepaliveMs?: number;
  registry: Registry;
  log: Logger;
}

type WatchCall = grpc.ServerWritableStream<DirectoryWatch, DirectoryUpdate>;

export interface WatchServer {
  handler: grpc.handleServerStreamingCall<DirectoryWatch, DirectoryUpdate>;
  /** Ends every open watch (OK status): the collector is shutting down, watchers reconnect elsewhere. */
  close(): void;
}

export function createWatchServer(deps: WatchDeps): WatchServer {
  const refusals = new Counter({ name: 'auditmesh_collector_directory_watch_refusals_total', help: 'Directory.Watch calls refused: no valid workload certificate (with the mesh CA) or no accepted credential (without)', labelNames: ['reason'], registers: [deps.registry] });
  initialiseLabels(refusals, 'reason', WATCH_REFUSALS);
  const watchers = new Gauge({ name: 'auditmesh_collector_directory_watchers', help: 'Open Directory.Watch streams', registers: [deps.registry] });
  const keepaliveMs = deps.keepaliveMs ?? DIRECTORY_KEEPALIVE_MS;

  const refuse = (call: WatchCall, reason: WatchRefusal, problem: string): void => {
    refusals.inc({ reason });
    deps.log('warn', 'collector refused a directory watcher', { reason, problem, peer: call.getPeer() });
    call.emit('error', { code: grpc.status.UNAUTHENTICATED, details: `${reason}: ${problem}`, metadata: new grpc.Metadata() });
  };
  const authorized = async (call: WatchCall): Promise<boolean> => {
    if (deps.peer !== null) {
      const verdict = deps.peer(call);
      if (!verdict.ok) refuse(call, 'certificate', verdict.problem);
      return verdict.ok;
    }
    if (deps.auth === null) return true;
    const header = call.metadata.get('authorization')[0];
    const verdict = await deps.auth.check(typeof header === 'string' ? header : undefined);
    if (!verdict.ok) refuse(call, 'credential', `${verdict.reason}: ${verdict.problem}`);
    return verdict.ok;
  };

  const open = new Set<() => void>();
  const handler: WatchServer['handler'] = (call) => {
    let over = false;
    let unsubscribe = (): void => {};
    let timer: NodeJS.Timeout | undefined;
    const end = (): void => {
      if (over) return;
      over = true;
      clearInterval(timer);
      unsubscribe();
      watchers.dec();
      open.delete(finish);
    };
    const finish = (): void => {
      end();
      call.end();
    };
    open.add(finish);
    watchers.inc();
    call.on('cancelled', end);
    call.on('close', end);
    call.on('error', end);
    void authorized(call).then(
      (ok) => {
        if (!ok) return end();
        if (over) return;
        const send = (update: Omit<DirectoryUpdate, 'unix_ms'>): void => void (over || call.write({ ...update, unix_ms: Date.now() }));
        // Subscribed before the snapshot is taken: no change falls between the two.
        unsubscribe = deps.directory.subscribe((change) => send({ snapshot: false, ...change }));
        send({ snapshot: true, added: deps.directory.entries(), removed: [] });
        timer = setInterval(() => send({ snapshot: false, added: [], removed: [] }), keepaliveMs);
        timer.unref();
      },
      (err: unknown) => {
        deps.log('error', 'directory watch failed before its snapshot', { err: (err as Error)?.message });
        end();
        call.emit('error', { code: grpc.status.UNAVAILABLE, details: 'the collector could not check the credential; retry', metadata: new grpc.Metadata() });
      },
    );
  };
  return {
    handler,
    close() {
      for (const finish of Array.from(open)) finish();
    },
  };
}
