import { isIP } from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { Logger } from '../../../command/log.js';
import { initialiseLabels, labelValues } from '../../../command/label-values.js';
import type { DirectoryEntry, DirectoryUpdate } from '../../../wire/sync-wire.js';

/**
 * The mesh directory as the collector keeps it: pod IP -> the workload identity that sidecar
 * proved. An entry is made by a Sync stream's Hello and lives as long as the stream, then a grace
 * (a sidecar reconnecting keeps its entry; one that is gone leaves within 2 heartbeats). Only
 * proven claims are listed: the stream presented a client certificate of the mesh CA (its SPIFFE
 * ID is the entry's identity), and the claimed pod IP is the address the stream comes from (pod
 * traffic to the collector is not NATed in a cluster, so anything else is a claim for someone
 * else's address). `--directory-trust-claimed-ip` lists the claim anyway, for local runs behind
 * NAT or a loopback test. The Watch RPC (watch-server.ts) streams it to sidecars.
 */

/** Why a pod IP claim is not listed (auditmesh_collector_directory_refusals_total{reason}). */
export type DirectoryRefusal = 'no-identity' | 'not-source-address' | 'malformed';
export const DIRECTORY_REFUSALS: readonly DirectoryRefusal[] = labelValues<DirectoryRefusal>({ 'no-identity': true, 'not-source-address': true, malformed: true });

/** What one Sync stream claims at its Hello. */
export interface DirectoryClaim {
  /** Hello.pod_ip; '' or undefined: no claim (an older sidecar, a local run). */
  podIp: string | undefined;
  /** The stream's peer as grpc-js gives it (`call.getPeer()`: `1.2.3.4:port`, `[::1]:port`). */
  source: string;
  /** The SPIFFE ID its client certificate proved; null: none. */
  identity: string | null;
  sidecarId: string;
  service: string;
  /** The chain the stream writes (SIDECAR_ID@POD_UID): its incarnation. */
  chainKey: string;
}

/** A listing made by one stream: released when the stream ends. */
export interface DirectoryListing {
  release(): void;
}

/** The directory as Watch serves it and reconciliation reads it: this collector's book, or in the JetStream tier the fleet's (merged-directory.ts). */
export interface DirectoryView {
  /** Every entry now. */
  entries(): DirectoryEntry[];
  /** Whether `ip` is a listed pod (reconciliation: a peer at this address is a meshed sidecar). */
  has(ip: string): boolean;
  /** Calls back with every change (added or changed entries, removed addresses); returns unsubscribe. */
  subscribe(listener: (change: DirectoryChange) => void): () => void;
  /** Entries listed now. */
  readonly size: number;
}

export type DirectoryChange = Pick<DirectoryUpdate, 'added' | 'removed'>;

/** An entry with what another replica needs to weigh it against its own: whether its stream is open, and since when it is listed. */
export type HeldEntry = DirectoryEntry & { live: boolean; since_unix_ms: number };

export interface MeshDirectoryBook extends DirectoryView {
  /** Lists the claim if proven (else counts and logs why not); null when nothing is listed. */
  claim(claim: DirectoryClaim): DirectoryListing | null;
  /** Every entry with its liveness (the JetStream tier shares them between replicas). */
  held(): HeldEntry[];
  close(): void;
}

export interface MeshDirectoryOptions {
  /** How long an entry outlives its stream (default: 2 sidecar heartbeat intervals). */
  graceMs: number;
  /** --directory-trust-claimed-ip: list a claimed pod IP that is not the stream's source address. */
  trustClaimedIp: boolean;
  registry: Registry;
  log: Logger;
}

interface Held {
  entry: DirectoryEntry;
  chainKey: string;
  sinceMs: number;
  /** Streams holding it now; 0: gone, and `expiry` removes it after the grace. */
  streams: number;
  expiry: NodeJS.Timeout | undefined;
}

export function createMeshDirectory(opts: MeshDirectoryOptions): MeshDirectoryBook {
  const held = new Map<string, Held>();
  const listeners = new Set<(change: DirectoryChange) => void>();
  const refusals = new Counter({ name: 'auditmesh_collector_directory_refusals_total', help: `Pod IP claims of Sync streams not listed in the mesh directory, by reason (${DIRECTORY_REFUSALS.join(', ')})`, labelNames: ['reason'], registers: [opts.registry] });
  initialiseLabels(refusals, 'reason', DIRECTORY_REFUSALS);
  new Gauge({
    name: 'auditmesh_collector_directory_entries',
    help: 'Pods listed in the mesh directory (pod IP -> proven workload identity) this collector serves',
    registers: [opts.registry],
    collect() {
      this.set(held.size);
    },
  });
  const publish = (change: DirectoryChange): void => {
    for (const l of listeners) {
      try {
        l(change);
      } catch (err) {
        opts.log('error', 'mesh directory listener threw', { err: (err as Error)?.message });
      }
    }
  };
  const remove = (ip: string): void => {
    const h = held.get(ip);
    if (h === undefined) return;
    clearTimeout(h.expiry);
    held.delete(ip);
    publish({ added: [], removed: [ip] });
  };
  const refuse = (reason: DirectoryRefusal, claim: DirectoryClaim, problem: string): null => {
    refusals.inc({ reason });
    opts.log('warn', 'mesh directory: pod IP claim not listed', { reason, sidecar: claim.sidecarId, pod_ip: claim.podIp, source: claim.source, problem });
    return null;
  };

  return {
    claim(claim) {
      if (claim.podIp === undefined || claim.podIp === '') return null;
      const ip = normalIp(claim.podIp);
      if (ip === null) return refuse('malformed', claim, 'the claimed pod IP is not an IP address');
      if (claim.identity === null) return refuse('no-identity', claim, 'the stream proved no workload identity (no client certificate of the mesh CA): only proven identities are listed');
      const source = sourceIp(claim.source);
      if (source !== ip && !opts.trustClaimedIp) return refuse('not-source-address', claim, `the stream comes from ${source ?? claim.source}, not the claimed address (--directory-trust-claimed-ip lists it anyway, for runs behind NAT)`);
      const entry: DirectoryEntry = { ip, identity: claim.identity, sidecar_id: claim.sidecarId, service: claim.service };
      let h = held.get(ip);
      if (h !== undefined && h.chainKey === claim.chainKey && sameEntry(h.entry, entry)) {
        // The same sidecar reconnecting: its entry stays, nobody is told.
        clearTimeout(h.expiry);
        h.expiry = undefined;
        h.streams++;
      } else {
        // A newer incarnation (or another pod) at this address replaces what was listed there.
        if (h !== undefined) clearTimeout(h.expiry);
        held.set(ip, (h = { entry, chainKey: claim.chainKey, sinceMs: Date.now(), streams: 1, expiry: undefined }));
        // The same sidecar listed under another address it no longer streams from: it moved.
        for (const [other, o] of held) if (other !== ip && o.streams === 0 && o.entry.sidecar_id === entry.sidecar_id) remove(other);
        publish({ added: [entry], removed: [] });
      }
      const mine = h;
      let released = false;
      return {
        release() {
          if (released || held.get(ip) !== mine) return;
          released = true;
          if (--mine.streams > 0) return;
          mine.expiry = setTimeout(() => held.get(ip) === mine && mine.streams === 0 && remove(ip), opts.graceMs);
          mine.expiry.unref();
        },
      };
    },
    entries: () => Array.from(held.values(), (h) => h.entry),
    held: () => Array.from(held.values(), (h) => ({ ...h.entry, live: h.streams > 0, since_unix_ms: h.sinceMs })),
    has: (ip) => held.has(normalIp(ip) ?? ip),
    subscribe(listener) {
      listeners.add(listener);
      return () => void listeners.delete(listener);
    },
    get size() {
      return held.size;
    },
    close() {
      for (const h of held.values()) clearTimeout(h.expiry);
      listeners.clear();
    },
  };
}

function sameEntry(a: DirectoryEntry, b: DirectoryEntry): boolean {
  return a.identity === b.identity && a.sidecar_id === b.sidecar_id && a.service === b.service;
}

/** An IP as Node prints a socket's address (IPv4-mapped IPv6 as IPv4, IPv6 lowercase); null when it is none. */
export function normalIp(text: string): string | null {
  let ip = text.trim().replace(/^\[(.*)\]$/, '$1');
  if (/^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(ip)) ip = ip.slice(7);
  const family = isIP(ip);
  if (family === 0) return null;
  // URL's host parser compresses an IPv6 address the one canonical way (RFC 5952).
  return family === 4 ? ip : new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** The address of a grpc-js peer string (`1.2.3.4:5678`, `[::1]:5678`, or with an `ipv4:`/`ipv6:` scheme); null when it holds none. */
export function sourceIp(peer: string): string | null {
  const bare = peer.replace(/^ipv[46]:/, '');
  const m = /^\[([^\]]+)\]:\d+$/.exec(bare) ?? /^([^:]+):\d+$/.exec(bare);
  return normalIp(m?.[1] ?? bare);
}
