import net from 'node:net';

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

export function h2Preflight(target: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const at = target.lastIndexOf(':');
    const socket = net.connect(Number(target.slice(at + 1)), target.slice(0, at).replace(/^\[(.*)\]$/, '$1'));
    let received = Buffer.alloc(0);
    const settle = (err?: Error): void => {
      clearTimeout(timer);
      socket.destroy();
      if (err === undefined) resolve();
      else reject(err);
    };
    const timer = setTimeout(() => settle(new Error(`no HTTP/2 SETTINGS from ${target} within ${timeoutMs} ms`)), timeoutMs);
    socket.once('connect', () => socket.write(PREFACE));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < FRAME_HEADER_BYTES) return;
      settle(received[3] === SETTINGS_TYPE ? undefined : new Error(`${target} does not speak HTTP/2 (its first frame is not SETTINGS)`));
    });
    socket.once('error', (err) => settle(new Error(`cannot reach ${target}: ${err.message}`)));
    socket.once('close', () => settle(new Error(`${target} closed the connection before HTTP/2 SETTINGS`)));
  });
}
