import type net from 'node:net';
import type { Direction } from '../../ledger/record.js';
import type { SessionKind } from './label-values.js';
import type { SidecarMetrics } from './metrics.js';

/** A long-lived relayed session (WebSocket, CONNECT tunnel, opaque TCP) opens... */
export function sessionOpened(metrics: SidecarMetrics, direction: Direction, kind: SessionKind): void {
  metrics.connectionsOpened.inc({ direction, kind });
  metrics.connections.inc({ direction, kind });
}

/** ...and closes: counted apart from its exchange record, so opened - closed = active holds. */
export function sessionClosed(metrics: SidecarMetrics, direction: Direction, kind: SessionKind): void {
  metrics.connectionsClosed.inc({ direction, kind });
  metrics.connections.dec({ direction, kind });
}

/** Every client connection a capture listener accepts, whatever protocol it turns out to speak. */
export function countTcpConnections(metrics: SidecarMetrics, server: net.Server, direction: Direction): void {
  server.on('connection', (socket: net.Socket) => {
    metrics.tcpOpened.inc({ direction });
    metrics.tcpActive.inc({ direction });
    socket.once('close', () => {
      metrics.tcpClosed.inc({ direction });
      metrics.tcpActive.dec({ direction });
    });
  });
}
