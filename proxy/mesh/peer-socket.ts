import type net from 'node:net';

/**
 * What a decrypted mesh connection carries for the layers above it: the proven SPIFFE ID of the
 * peer sidecar, and the TCP socket underneath (its original destination, its address). Kept on
 * the socket itself under symbols, so HTTP/2's proxy of a session's socket reaches them too.
 */
const VERIFIED_PEER = Symbol('auditmesh.verifiedPeer');
/** The TCP socket a TLS socket was made from: original-dst.ts reads the redirect from it. */
export const UNDERLYING_SOCKET = Symbol('auditmesh.underlyingSocket');

type Carrier = { [VERIFIED_PEER]?: string; [UNDERLYING_SOCKET]?: net.Socket };

export function markVerifiedPeer(socket: net.Socket, spiffeId: string): void {
  (socket as Carrier)[VERIFIED_PEER] = spiffeId;
}

/** The SPIFFE ID a connection's peer proved over mesh mTLS; undefined for a plaintext connection. */
export function verifiedPeerOf(socket: net.Socket | undefined | null): string | undefined {
  return socket == null ? undefined : (socket as Carrier)[VERIFIED_PEER];
}

/** The TCP socket under a TLS socket, or the socket itself. */
export function underlyingSocket(socket: net.Socket): net.Socket {
  return (socket as Carrier)[UNDERLYING_SOCKET] ?? socket;
}

export function linkUnderlying(tlsSocket: net.Socket, raw: net.Socket): void {
  (tlsSocket as Carrier)[UNDERLYING_SOCKET] = raw;
}
