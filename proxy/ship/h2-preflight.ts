import net from 'node:net';
import tls from 'node:tls';

/**
 * Checks that the collector speaks HTTP/2 before a gRPC channel is pointed at it. A grpc-js
 * connection attempt to a peer that accepts TCP but never sends SETTINGS never settles, and
 * closing the channel does not close its socket (grpc/grpc-node#2785): each such attempt would
 * leak a file descriptor. node:http2 has the same trouble (a session destroyed before the peer's
 * SETTINGS keeps its socket), so this speaks the first bytes itself on a socket it always destroys:
 * the client preface and an empty SETTINGS frame (RFC 9113 §3.4), then the server's first frame
 * must be a SETTINGS frame (type 0x4).
 */

const PREFACE = Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), Buffer.from([0, 0, 0, 0x04, 0, 0, 0, 0, 0])]);
const FRAME_HEADER_BYTES = 9;
const SETTINGS_TYPE = 0x04;

export function h2Preflight(target: string, timeoutMs: number, caPem?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const at = target.lastIndexOf(':');
    const port = Number(target.slice(at + 1));
    const host = target.slice(0, at).replace(/^\[(.*)\]$/, '$1');
    // With the mesh CA: the same check inside TLS (h2 by ALPN), trusting only that CA.
    const socket = caPem === undefined ? net.connect(port, host) : tls.connect({ port, host, ca: caPem, ALPNProtocols: ['h2'], servername: net.isIP(host) ? undefined : host });
    let received = Buffer.alloc(0);
    const settle = (err?: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err === undefined) resolve();
      else reject(err);
    };
    const timer = setTimeout(() => settle(new Error(`no HTTP/2 SETTINGS from ${target} within ${timeoutMs} ms`)), timeoutMs);
    socket.once(caPem === undefined ? 'connect' : 'secureConnect', () => socket.write(PREFACE));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < FRAME_HEADER_BYTES) return;
      settle(received[3] === SETTINGS_TYPE ? undefined : new Error(`${target} does not speak HTTP/2 (its first frame is not SETTINGS)`));
    });
    socket.once('error', (err) => settle(new Error(`cannot reach ${target}: ${err.message}`)));
    socket.once('close', () => settle(new Error(`${target} closed the connection before HTTP/2 SETTINGS`)));
  });
}
