import { isIP } from 'node:net';
import type { Logger } from '../../../command/log.js';
import type { DirectoryEntry } from '../../../wire/sync-wire.js';
import { normalIp, type DirectoryChange, type DirectoryView, type HeldEntry, type MeshDirectoryBook } from './mesh-directory.js';

/** A replica's book is published this often without a change (a replica unheard for 3 of these is dropped). */
export const DIRECTORY_REFRESH_MS = 2_000;
/** Changes within this are published as one book: a replica's sidecars all reconnecting at once publish a few books, not one each. */
const PUBLISH_COALESCE_MS = 100;

/**
 * The fleet's directory in the JetStream tier: each replica lists only the sidecars streaming to
 * it, so every replica publishes its whole book on each change and every `refreshMs`, and serves
 * its own merged with the latest of every other replica (jetstream/directory-exchange.ts carries
 * them over NATS). A replica not heard for 3 refreshes is dropped (it died: its sidecars
 * reconnect elsewhere and are listed there). Where two replicas list one address (a sidecar that
 * moved replicas while the old one still holds it in its grace), an open stream wins over a gone
 * one, then the later listing.
 */

/** One replica's book, as published. */
export interface ReplicaBook {
  replica: string;
  entries: HeldEntry[];
}

export interface MergedDirectoryOptions {
  replicaId: string;
  /** Sends this replica's book to the others. */
  publish(book: ReplicaBook): void;
  /** How often the book is published even without a change; other replicas drop it after 3 of these unheard. */
  refreshMs: number;
  log: Logger;
}

export interface MergedDirectory extends DirectoryView {
  /** A book another replica published (malformed entries are dropped). */
  received(book: unknown): void;
  close(): void;
}

export function createMergedDirectory(local: MeshDirectoryBook, opts: MergedDirectoryOptions): MergedDirectory {
  const remote = new Map<string, { entries: HeldEntry[]; heardMs: number }>();
  const listeners = new Set<(change: DirectoryChange) => void>();
  let merged = new Map<string, DirectoryEntry>();

  const recompute = (): void => {
    const best = new Map<string, HeldEntry>();
    const consider = (e: HeldEntry): void => {
      const had = best.get(e.ip);
      if (had === undefined || (e.live && !had.live) || (e.live === had.live && e.since_unix_ms > had.since_unix_ms)) best.set(e.ip, e);
    };
    for (const e of local.held()) consider(e);
    for (const r of remote.values()) for (const e of r.entries) consider(e);
    const next = new Map<string, DirectoryEntry>();
    const added: DirectoryEntry[] = [];
    for (const [ip, e] of best) {
      const entry = { ip, identity: e.identity, sidecar_id: e.sidecar_id, service: e.service };
      next.set(ip, entry);
      const was = merged.get(ip);
      if (was === undefined || was.identity !== entry.identity || was.sidecar_id !== entry.sidecar_id || was.service !== entry.service) added.push(entry);
    }
    const removed = [...merged.keys()].filter((ip) => !next.has(ip));
    merged = next;
    if (added.length === 0 && removed.length === 0) return;
    for (const l of listeners) {
      try {
        l({ added, removed });
      } catch (err) {
        opts.log('error', 'mesh directory listener threw', { err: (err as Error)?.message });
      }
    }
  };
  const publishOwn = (): void => {
    try {
      opts.publish({ replica: opts.replicaId, entries: local.held() });
    } catch (err) {
      opts.log('warn', 'collector replica could not publish its mesh directory entries; the next refresh tries again', { err: (err as Error)?.message });
    }
  };
  let pending: NodeJS.Timeout | undefined;
  const unsubscribe = local.subscribe(() => {
    pending ??= setTimeout(() => {
      pending = undefined;
      publishOwn();
    }, PUBLISH_COALESCE_MS);
    recompute();
  });
  const timer = setInterval(() => {
    publishOwn();
    const now = Date.now();
    for (const [replica, r] of remote) if (now - r.heardMs > 3 * opts.refreshMs) remote.delete(replica);
    recompute();
  }, opts.refreshMs);
  timer.unref();
  recompute();
  publishOwn();

  return {
    received(book) {
      const parsed = replicaBookOf(book);
      if (parsed === null || parsed.replica === opts.replicaId) return;
      remote.set(parsed.replica, { entries: parsed.entries, heardMs: Date.now() });
      recompute();
    },
    entries: () => [...merged.values()],
    has: (ip) => merged.has(normalIp(ip) ?? ip),
    subscribe(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    get size() {
      return merged.size;
    },
    close() {
      clearInterval(timer);
      clearTimeout(pending);
      unsubscribe();
      listeners.clear();
    },
  };
}

const text = (v: unknown): v is string => typeof v === 'string' && v.length > 0 && v.length <= 512;

/** A book from the wire, its well-formed entries only; null when it is none. */
function replicaBookOf(value: unknown): ReplicaBook | null {
  const b = value as Partial<ReplicaBook> | null;
  if (b === null || typeof b !== 'object' || !text(b.replica) || !Array.isArray(b.entries)) return null;
  const entries = b.entries.filter((e): e is HeldEntry => e !== null && typeof e === 'object' && text(e.ip) && isIP(e.ip) !== 0 && text(e.identity) && text(e.sidecar_id) && typeof e.service === 'string' && typeof e.live === 'boolean' && typeof e.since_unix_ms === 'number');
  return { replica: b.replica, entries };
}
