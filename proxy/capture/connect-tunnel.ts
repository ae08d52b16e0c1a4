import net from 'node:net';
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { AuditRecord } from '../audit/record.js';
import type { ErrorKind } from '../audit/record.js';
import { classify, rescue } from '../errors.js';
import { parseAuthority } from '../http1/target.js';
import { serviceOfHost } from '../audit/peer-label.js';
import { correlate } from '../correlation/correlate.js';

export interface TunnelDeps {
  service: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  /** Called once when the tunnel closes, with its record. */
  onRecord: (record: AuditRecord) => void;
}

/**
 * Relays a `CONNECT host:port` tunnel byte for byte and records it as an opaque connection:
 * the tunnel's authority, bytes each way, duration, how it ended. Its contents (usually TLS)
 * are not inspected.
 */
export function relayConnect(deps: TunnelDeps, req: IncomingMessage, client: net.Socket, head: Buffer): void {
  const t0 = performance.now();
  const target = parseAuthority(req.url, 443);
  const correlation = correlate(req.headers);
  const record: AuditRecord = {
    'audit.kind': 'tunnel',
    'audit.phase': 'final',
    'audit.direction': 'outbound',
    'audit.service': deps.service,
    'peer.service': target === null ? 'unknown' : (serviceOfHost(target.host) ?? 'unknown'),
    'audit.start_unix_ms': Date.now(),
    'network.protocol.name': 'http',
    'http.request.method': 'CONNECT',
    'client.address': client.remoteAddress ?? '',
    'client.port': client.remotePort ?? 0,
    'trace.id': correlation.traceId,
    'audit.request_id': correlation.requestId,
  };
  let bytesIn = head.length;
  let bytesOut = 0;
  let ended = false;
  const end = (kind?: ErrorKind, message?: string): void => {
    if (ended) return;
    ended = true;
    record['audit.duration_ms'] = Math.round((performance.now() - t0) * 1000) / 1000;
    record['audit.bytes_in'] = bytesIn;
    record['audit.bytes_out'] = bytesOut;
    if (kind !== undefined) {
      record['error.type'] = kind;
      if (message !== undefined) record['audit.error_message'] = message;
    }
    deps.onRecord(record);
  };
  client.on('error', () => {});
  if (target === null) {
    record['http.response.status_code'] = 400;
    client.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
    end('rejected', 'CONNECT target is not host:port');
    return;
  }
  record['server.address'] = target.host;
  record['server.port'] = target.port;
  const upstream = net.connect({ host: target.host, port: target.port });
  const connectTimer = setTimeout(() => upstream.destroy(Object.assign(new Error('connect timeout'), { code: 'ETIMEDOUT' })), deps.connectTimeoutMs);
  upstream.setTimeout(deps.idleTimeoutMs, () => upstream.destroy());
  client.setTimeout(deps.idleTimeoutMs, () => client.destroy());
  upstream.once('connect', () => {
    clearTimeout(connectTimer);
    record['http.response.status_code'] = 200;
    record['audit.ttfb_ms'] = Math.round((performance.now() - t0) * 1000) / 1000;
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    if (head.length > 0) upstream.write(head);
    client.on('data', (c: Buffer) => (bytesIn += c.length));
    upstream.on('data', (c: Buffer) => (bytesOut += c.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  upstream.on('error', (err) => {
    clearTimeout(connectTimer);
    if (record['http.response.status_code'] === undefined) {
      const r = rescue(classify(err));
      record['http.response.status_code'] = r.status;
      client.end(`HTTP/1.1 ${r.status} ${STATUS_CODES[r.status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      end(r.kind, r.message);
    } else {
      client.destroy();
      end('reset', 'upstream reset the tunnel');
    }
  });
  upstream.on('close', () => {
    clearTimeout(connectTimer);
    client.end();
    end();
  });
  client.on('close', () => {
    upstream.destroy();
    end();
  });
}
