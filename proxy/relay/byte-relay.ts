import net from 'node:net';
import type tls from 'node:tls';
import type { ErrorKind } from '../../ledger/record.js';
import { classify, rescue, type Rescue } from '../errors.js';
import type { UpstreamTarget } from '../routing/route.js';

/** How a byte relay ended. */
export interface RelayOutcome {
  /** The upstream accepted the connection. */
  connected: boolean;
  bytesIn: number;
  bytesOut: number;
  /** Milliseconds from the start to the upstream's connect. */
  connectMs?: number;
  errorKind?: ErrorKind;
  errorMessage?: string;
  /** Before connect: what the client should be told (the rescue table's answer). */
  rescue?: Rescue;
}

export interface RelayOptions {
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Bytes the client already sent that are not in its socket's buffer (CONNECT's head). */
  head?: Buffer;
  /** Called once the upstream is connected, before any byte is relayed. */
  onConnect?: () => void;
  /** Dials the upstream instead of plain TCP: mesh mTLS, ready at 'secureConnect' (proxy/mesh/). */
  connect?: (target: UpstreamTarget) => tls.TLSSocket;
}

/**
 * Relays a client socket to an upstream byte for byte, with backpressure both ways, counting
 * bytes and reporting once how it ended. Used by CONNECT tunnels and opaque TCP alike.
 *
 * Each direction ends on its own: a peer that ends its sending side (FIN) passes the FIN on and
 * still gets what the other side sends back. The connection is over once both directions have
 * ended, on an error, or when either socket sits idle past the idle timeout.
 */
export function relayBytes(client: net.Socket, target: UpstreamTarget, opts: RelayOptions, done: (outcome: RelayOutcome) => void): void {
  const t0 = performance.now();
  const outcome: RelayOutcome = { connected: false, bytesIn: opts.head?.length ?? 0, bytesOut: 0 };
  let ended = false;
  const end = (): void => {
    if (ended) return;
    ended = true;
    clearTimeout(connectTimer);
    done(outcome);
  };
  // Read when the client's FIN is emitted: the listener's sockets would otherwise end both ways.
  client.allowHalfOpen = true;
  const upstream: net.Socket = opts.connect?.(target) ?? net.connect({ host: target.host, port: target.port, allowHalfOpen: true });
  upstream.allowHalfOpen = true;
  const connectTimer = setTimeout(() => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), opts.connectTimeoutMs);
  client.on('error', () => {});
  client.setTimeout(opts.idleTimeoutMs, () => client.destroy());
  upstream.setTimeout(opts.idleTimeoutMs, () => upstream.destroy());
  upstream.once(opts.connect === undefined ? 'connect' : 'secureConnect', () => {
    clearTimeout(connectTimer);
    outcome.connected = true;
    outcome.connectMs = performance.now() - t0;
    opts.onConnect?.();
    if (opts.head !== undefined && opts.head.length > 0) upstream.write(opts.head);
    client.on('data', (c: Buffer) => (outcome.bytesIn += c.length));
    upstream.on('data', (c: Buffer) => (outcome.bytesOut += c.length));
    // pipe() ends the destination when its source ends: each FIN is passed on, one way at a time.
    client.pipe(upstream);
    upstream.pipe(client);
    client.resume();
  });
  upstream.on('error', (err) => {
    const r = rescue(classify(err));
    if (!outcome.connected) {
      outcome.rescue = r;
      outcome.errorKind = r.kind;
      outcome.errorMessage = r.message;
    } else {
      outcome.errorKind = 'reset';
      outcome.errorMessage = 'upstream reset the connection';
      client.destroy();
    }
    end();
  });
  // A side that closes before both of its directions ended was destroyed (error, idle timeout):
  // the other side goes with it. A side that closes whole has passed its FIN on already.
  upstream.on('close', () => {
    if (!closedWhole(upstream)) client.destroy();
    else client.end();
    end();
  });
  client.on('close', () => {
    if (!closedWhole(client)) upstream.destroy();
  });
}

/** True when a socket closed after both of its directions ended, not by being destroyed midway. */
function closedWhole(socket: net.Socket): boolean {
  return socket.readableEnded && socket.writableFinished;
}
