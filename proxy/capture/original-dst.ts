import type { Socket } from 'node:net';
import type { UpstreamTarget } from '../routing/route.js';
import { loadNativeAddon } from '../native-addon.js';
import { underlyingSocket } from '../mesh/peer-socket.js';

/** The addon node-gyp builds from proxy/capture/original-dst.c during `npm ci` (binding.gyp at the root). */
interface OriginalDstAddon {
  originalDst(fd: number): [family: 4 | 6, address: string, port: number];
}

/** Per connection, computed on its first request: one getsockname + getsockopt. */
const destinations = new WeakMap<Socket, UpstreamTarget | null>();

const loadAddon = (): OriginalDstAddon => loadNativeAddon<OriginalDstAddon>('original_dst');

/** Throws a clear error at boot when the addon is missing, instead of on the first redirected connection. */
export function assertOriginalDstAvailable(): void {
  loadAddon();
}

/**
 * Where the client addressed this connection before an iptables REDIRECT sent it to us, or null
 * when it was not redirected (no NAT record, or the original destination is the listener itself,
 * as for an app using the sidecar as HTTP_PROXY). Never throws for a socket: a closed or non-TCP
 * socket is simply not redirected.
 */
export function redirectedDestination(socket: Socket): UpstreamTarget | null {
  // A decrypted mesh connection was redirected (or not) as the TCP connection under it.
  socket = underlyingSocket(socket);
  let known = destinations.get(socket);
  if (known === undefined) destinations.set(socket, (known = lookUp(socket)));
  return known;
}

function lookUp(socket: Socket): UpstreamTarget | null {
  const { originalDst } = loadAddon();
  // libuv exposes a TCP handle's file descriptor only through this undocumented field (Linux, Unix).
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) return null;
  let address: string, port: number;
  try {
    [, address, port] = originalDst(fd);
  } catch {
    return null;
  }
  const local = socket.localAddress?.replace(/^::ffff:/, '');
  if (address === local && port === socket.localPort) return null;
  return { host: address, port };
}
