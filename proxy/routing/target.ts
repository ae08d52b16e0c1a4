import type { IncomingMessage } from 'node:http';
import type { Route, UpstreamTarget } from './route.js';

/** Longest claimed authority a record keeps. */
const MAX_CLAIMED_AUTHORITY_CHARS = 256;

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
 * its URL, origin-form by its Host header. Null when neither names a usable upstream. Only plain
 * http is proxied this way; https goes through CONNECT.
 *
 * `redirected` is the connection's original destination when iptables redirected it here: the
 * address the app itself resolved and dialled, so it is where the request goes, whatever the Host
 * header says (IP literals, non-default ports, names only the app's resolver knows). The Host
 * header still names the peer in the record.
 */
export function routeOutbound(req: IncomingMessage, resolve: ResolveTable = new Map(), redirected: UpstreamTarget | null = null): Route | null {
  const url = req.url ?? '/';
  if (url.startsWith('/')) return routeByAuthority(req.headers.host, url, resolve, 80, redirected);
  if (!/^http:\/\//i.test(url)) return null;
  const rest = url.slice('http://'.length);
  const slash = rest.search(/[/?]/);
  const authority = slash === -1 ? rest : rest.slice(0, slash);
  const path = slash === -1 ? '/' : rest[slash] === '?' ? '/' + rest.slice(slash) : rest.slice(slash);
  return routeByAuthority(authority, path, resolve, 80, redirected);
}

/**
 * Routes by an authority (`Host` header, HTTP/2 `:authority`, a TLS server name): where the
 * client asked to go, through the static resolve table when it has an entry. Null when malformed.
 * A redirected connection goes to its original destination whatever the authority says, and the
 * record names that destination; the authority is kept as a claim and still names the peer.
 */
export function routeByAuthority(authority: string | undefined, path: string, resolve: ResolveTable, defaultPort = 80, redirected: UpstreamTarget | null = null): Route | null {
  const asked = parseAuthority(authority, defaultPort);
  if (redirected !== null) {
    const route: Route = { target: redirected, host: redirected.host, port: redirected.port, path };
    const same = asked !== null && asked.host === redirected.host && asked.port === redirected.port;
    if (authority !== undefined && authority !== '' && !same) route.claimed = { authority: authority.slice(0, MAX_CLAIMED_AUTHORITY_CHARS), host: asked?.host ?? null };
    return route;
  }
  if (asked === null) return null;
  return { target: resolve.get(`${asked.host}:${asked.port}`) ?? asked, host: asked.host, port: asked.port, path };
}

/**
 * The host name that names the peer service: the name the client asked for (claimed, as the
 * inbound caller's service is, until identities are proven), else the server address.
 */
export function peerHost(route: Route | null): string | undefined {
  if (route === null) return undefined;
  return route.claimed === undefined ? route.host : (route.claimed.host ?? route.host);
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

/**
 * Routes an inbound request to the app: to the port the client dialled when iptables redirected
 * the connection (a pod may serve several ports), else to `--app-port`. A redirected connection
 * aimed at one of the sidecar's own ports gets no route: forwarding it would expose the outbound
 * listener to callers outside the pod.
 */
export function routeInbound(path: string, app: UpstreamTarget, ownPorts: ReadonlySet<number>, redirected: UpstreamTarget | null = null): Route | null {
  if (redirected === null) return { target: app, host: app.host, port: app.port, path };
  if (ownPorts.has(redirected.port)) return null;
  return { target: { host: app.host, port: redirected.port }, host: app.host, port: redirected.port, path };
}
