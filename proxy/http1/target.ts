import type { IncomingMessage } from 'node:http';
import type { UpstreamTarget } from './forwarder.js';

/** Where an outbound request goes, and the origin-form path to send it with. */
export interface Route {
  /** Where the request is sent. */
  target: UpstreamTarget;
  /** The host and port the client asked for (they differ from target when a static resolve entry applies). */
  host: string;
  port: number;
  path: string;
}

/** Static name → address entries (`--resolve inventory:80=127.0.0.1:8081`), for local runs without DNS. */
export type ResolveTable = ReadonlyMap<string, UpstreamTarget>;

const MAX_PORT = 65535;

/** Splits `host[:port]` (IPv6 in brackets) into its parts; null when malformed. */
export function parseAuthority(authority: string | undefined, defaultPort: number): UpstreamTarget | null {
  if (authority === undefined || authority === '' || authority.length > 300) return null;
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/\s@]+)(?::(\d{1,5}))?$/.exec(authority);
  if (m === null) return null;
  const port = m[2] === undefined ? defaultPort : Number(m[2]);
  if (port < 1 || port > MAX_PORT) return null;
  const host = m[1]!.startsWith('[') ? m[1]!.slice(1, -1) : m[1]!;
  return { host, port };
}

/**
 * Routes an outbound request: absolute-form (`GET http://host/path`, the app used HTTP_PROXY) by
 * its URL, origin-form (iptables redirected it here) by its Host header. Null when neither names
 * a usable upstream. Only plain http is proxied this way; https goes through CONNECT.
 */
export function routeOutbound(req: IncomingMessage, resolve: ResolveTable = new Map()): Route | null {
  const url = req.url ?? '/';
  if (url.startsWith('/')) return routeByAuthority(req.headers.host, url, resolve);
  if (!/^http:\/\//i.test(url)) return null;
  const rest = url.slice('http://'.length);
  const slash = rest.search(/[/?]/);
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '/' : rest[slash] === '?' ? '/' + rest.slice(slash) : rest.slice(slash);
  return routeByAuthority(authority, path, resolve);
}

/**
 * Routes by an authority (`Host` header, HTTP/2 `:authority`, a TLS server name): where the
 * client asked to go, through the static resolve table when it has an entry. Null when malformed.
 */
export function routeByAuthority(authority: string | undefined, path: string, resolve: ResolveTable, defaultPort = 80): Route | null {
  const asked = parseAuthority(authority, defaultPort);
  if (asked === null) return null;
  return { target: resolve.get(`${asked.host}:${asked.port}`) ?? asked, host: asked.host, port: asked.port, path };
}

/** Parses `--resolve` entries `name:port=host:port`; throws naming the bad entry. */
export function parseResolveTable(entries: readonly string[]): ResolveTable {
  const table = new Map<string, UpstreamTarget>();
  for (const entry of entries) {
    const [from, to] = entry.split('=');
    const a = parseAuthority(from, 80);
    const b = parseAuthority(to, 80);
    if (a === null || b === null) throw new Error(`--resolve: expected NAME:PORT=HOST:PORT, got ${JSON.stringify(entry)}`);
    table.set(`${a.host}:${a.port}`, b);
  }
  return table;
}
