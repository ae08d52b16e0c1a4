import http2, { type ClientHttp2Session } from 'node:http2';
import { PassThrough } from 'node:stream';
import type { UpstreamTarget } from '../routing/route.js';
import { H2_SESSION_LIMITS } from './h2-limits.js';
import { ProxyError } from '../errors.js';
import type { MeshConnector } from '../mesh/mesh-connect.js';

export interface SessionPoolOptions {
  connectTimeoutMs: number;
  /** A session with no activity for this long is closed. */
  idleTimeoutMs: number;
  /** Connects to upstreams the mesh directory lists (mesh mTLS); without it they fail, never plaintext. */
  mesh?: MeshConnector;
}

/**
 * One HTTP/2 (h2c) session per upstream, reused by every stream to it. An upstream the mesh
 * directory lists gets a session of its own over mesh mTLS (HTTP/2 inside `auditmesh/1`).
 */
export interface SessionPool {
  get(target: UpstreamTarget): ClientHttp2Session;
  close(): void;
}

/**
 * A session that received GOAWAY or failed leaves the pool at once, so new streams open a new
 * session while the streams it still carries finish on the old one. Every session has an
 * 'error' listener (an unhandled one crashes the process, nodejs/node#19978).
 */
export function createSessionPool(opts: SessionPoolOptions): SessionPool {
  const sessions = new Map<string, ClientHttp2Session>();
  const forget = (key: string, session: ClientHttp2Session): void => {
    if (sessions.get(key) === session) sessions.delete(key);
  };
  return {
    get(target) {
      const key = target.mesh === undefined ? `${target.host}:${target.port}` : `mesh ${target.mesh.identity} ${target.host}:${target.port}`;
      const existing = sessions.get(key);
      if (existing !== undefined && !existing.closed && !existing.destroyed) return existing;
      const host = target.host.includes(':') ? `[${target.host}]` : target.host;
      const { mesh } = opts;
      const createConnection = target.mesh === undefined ? undefined : mesh !== undefined ? () => mesh(target) : () => unmeshed();
      const session = http2.connect(`http://${host}:${target.port}`, { ...H2_SESSION_LIMITS, ...(createConnection === undefined ? {} : { createConnection }) });
      sessions.set(key, session);
      const connectTimer = setTimeout(() => {
        session.destroy(Object.assign(new Error('upstream HTTP/2 connect timed out'), { code: 'ETIMEDOUT' }));
      }, opts.connectTimeoutMs);
      session.once('connect', () => clearTimeout(connectTimer));
      session.on('error', () => forget(key, session));
      session.once('goaway', () => forget(key, session));
      session.once('close', () => {
        clearTimeout(connectTimer);
        forget(key, session);
      });
      session.setTimeout(opts.idleTimeoutMs, () => session.close());
      return session;
    },
    close() {
      for (const session of sessions.values()) session.close();
      sessions.clear();
    },
  };
}

/** A meshed upstream without a workload certificate: a connection that fails, never plaintext. */
function unmeshed(): PassThrough {
  const socket = new PassThrough();
  process.nextTick(() => socket.destroy(new ProxyError('AUDITMESH_PEER_HANDSHAKE', 'this sidecar has no workload certificate for a meshed upstream')));
  return socket;
}
