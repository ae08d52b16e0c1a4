import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Socket } from 'node:net';
import type { UpstreamTarget } from '../routing/route.js';

/** The addon node-gyp builds from proxy/capture/original-dst.c during `npm ci` (binding.gyp at the root). */
interface OriginalDstAddon {
  originalDst(fd: number): [family: 4 | 6, address: string, port: number];
}

// From source (proxy/capture/) the addon is at ../../build/Release; from the compiled
// build/proxy/capture/ it is at ../../Release.
const ADDON_CANDIDATES = ['../../build/Release/original_dst.node', '../../Release/original_dst.node'];

let addon: OriginalDstAddon | Error | undefined;
/** Per connection, computed on its first request: one getsockname + getsockopt. */
const destinations = new WeakMap<Socket, UpstreamTarget | null>();

function loadAddon(): OriginalDstAddon {
  if (addon === undefined) {
    const found = ADDON_CANDIDATES.map((p) => fileURLToPath(new URL(p, import.meta.url))).find((p) => existsSync(p));
    try {
      if (found === undefined) throw new Error(`not found (looked for ${ADDON_CANDIDATES.join(', ')} next to ${fileURLToPath(import.meta.url)})`);
      addon = createRequire(import.meta.url)(found) as OriginalDstAddon;
    } catch (err) {
      addon = new Error(`auditmesh: the original-destination addon (build/Release/original_dst.node) could not be loaded; it is built by \`npm ci\` with node-gyp (needs python3, make, a C compiler): ${(err as Error).message}`, { cause: err });
    }
  }
  if (addon instanceof Error) throw addon;
  return addon;
}

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
