import tls from 'node:tls';
import type { Socket } from 'node:net';
import { ProxyError } from '../errors.js';
import type { UpstreamTarget } from '../routing/route.js';
import type { MeshDirectory } from './directory.js';
import { MESH_ALPN, spiffeIdOfSan, type MeshCredentials } from './mesh-credentials.js';

/**
 * The caller's side of sidecar-to-sidecar mTLS: a TLS 1.3 connection to the peer sidecar's
 * inbound listener, presenting this sidecar's workload certificate, offering only the ALPN
 * `auditmesh/1`, trusting only the mesh CA, and accepting the server only if its SPIFFE URI SAN is
 * the identity the mesh directory lists for the address. A failure is the connection's error
 * (classified by the rescue table): a listed destination is never called in plaintext.
 *
 * The socket is returned at once (HTTP/2's createConnection needs it so); 'secureConnect' says it
 * is ready. Every forwarding path (undici, http-proxy, HTTP/2, the TCP relay) dials through here.
 */
export type MeshConnector = (target: UpstreamTarget) => tls.TLSSocket;

export function createMeshConnector(credentials: MeshCredentials, directory: MeshDirectory, connectTimeoutMs: number): MeshConnector {
  // One context per certificate, as the acceptor keeps: building one parses the key, the chain and
  // the CA bundle, which was a tenth of the caller's CPU when connections churn (bench/mesh-tls.md).
  let context: { chainPem: string; secureContext: tls.SecureContext } | undefined;
  const secureContext = (chainPem: string): tls.SecureContext => {
    if (context?.chainPem !== chainPem) context = { chainPem, secureContext: tls.createSecureContext({ key: credentials.keyPem, cert: chainPem, ca: credentials.caPem, minVersion: 'TLSv1.3' }) };
    return context.secureContext;
  };
  return (target) => {
    // The identity the call was routed with, else (pooled HTTP/1.1 connections) the directory's now:
    // an address it stopped listing is not called at all.
    const expected = target.mesh?.identity ?? directory.lookup(target.host)?.identity;
    const { chainPem } = credentials.current();
    const socket: tls.TLSSocket = tls.connect({
      host: target.host,
      port: target.port,
      secureContext: secureContext(chainPem),
      minVersion: 'TLSv1.3',
      ALPNProtocols: [MESH_ALPN],
      rejectUnauthorized: true,
      // Called only once the chain verified; its Error destroys the socket before 'secureConnect'.
      checkServerIdentity: (_host, cert) => checkPeer(socket.alpnProtocol, spiffeIdOfSan(cert.subjectaltname), expected),
    });
    // As undici and node:http set it on the connections they dial: without it, a request written in
    // two parts (headers, then a body chunk) waits for the callee's delayed ACK (Nagle).
    socket.setNoDelay(true);
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error('mTLS connect timed out'), { code: 'ETIMEDOUT' })), connectTimeoutMs);
    socket.once('secureConnect', () => clearTimeout(timer));
    socket.once('close', () => clearTimeout(timer));
    return socket;
  };
}

function checkPeer(alpn: string | false | null | undefined, presented: string | undefined, expected: string | undefined): Error | undefined {
  if (alpn !== MESH_ALPN) return new ProxyError('AUDITMESH_PEER_HANDSHAKE', `peer did not negotiate ALPN ${MESH_ALPN}: not an auditmesh sidecar`);
  if (expected === undefined) return new ProxyError('AUDITMESH_PEER_IDENTITY', 'the mesh directory no longer lists this address');
  if (presented !== expected) return new ProxyError('AUDITMESH_PEER_IDENTITY', `peer presented ${presented ?? 'no SPIFFE ID'}, the mesh directory lists ${expected}`);
  return undefined;
}

/** undici's `connect` option: the mesh connection for an origin, handed over once it is secure. */
export function undiciMeshConnect(connector: MeshConnector) {
  return (opts: { hostname: string; port: string }, callback: (err: Error | null, socket: Socket | null) => void): void => {
    const host = opts.hostname.startsWith('[') ? opts.hostname.slice(1, -1) : opts.hostname;
    const socket = connector({ host, port: Number(opts.port) || 80 });
    let settled = false;
    const onError = (err: Error): void => {
      if (settled) return;
      settled = true;
      callback(err, null);
    };
    socket.once('error', onError);
    socket.once('secureConnect', () => {
      if (settled) return;
      settled = true;
      socket.off('error', onError);
      callback(null, socket);
    });
  };
}
