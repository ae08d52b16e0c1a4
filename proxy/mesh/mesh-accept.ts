import tls from 'node:tls';
import { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import { ProxyError } from '../errors.js';
import { MESH_ALPN, spiffeIdOfSan, type MeshCredentials } from './mesh-credentials.js';
import { linkUnderlying, markVerifiedPeer } from './peer-socket.js';

export interface MeshAcceptorOptions {
  credentials: MeshCredentials;
  /** A peer that has not finished its handshake in this long is closed. */
  handshakeTimeoutMs: number;
  /** A peer that did not prove itself; the connection is closed already. */
  failed(socket: net.Socket, error: ProxyError): void;
}

/**
 * The callee's side of sidecar-to-sidecar mTLS, for a connection whose ClientHello offered ALPN
 * `auditmesh/1` (the capture listener decides from the bytes it sniffed and put back): TLS 1.3 at
 * least, this sidecar's current workload certificate as server certificate, a client certificate
 * required. The client's chain is checked here against the mesh CA bundle (issuer, signature,
 * validity), so a refusal is recorded with its reason rather than lost inside OpenSSL; OpenSSL
 * has already checked the client holds the certificate's key.
 */
export function createMeshAcceptor(opts: MeshAcceptorOptions): (socket: net.Socket, accepted: (decrypted: tls.TLSSocket) => void) => void {
  const roots = splitPem(opts.credentials.caPem).map((pem) => new X509Certificate(pem));
  let context: { chainPem: string; secureContext: tls.SecureContext } | undefined;
  /** A context per certificate: a renewed one serves from the next connection on. */
  const secureContext = (): tls.SecureContext => {
    const { chainPem } = opts.credentials.current();
    if (context?.chainPem !== chainPem) context = { chainPem, secureContext: tls.createSecureContext({ key: opts.credentials.keyPem, cert: chainPem, ca: opts.credentials.caPem, minVersion: 'TLSv1.3' }) };
    return context.secureContext;
  };
  return (raw, accepted) => {
    let done = false;
    const fail = (error: ProxyError): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      raw.destroy();
      opts.failed(raw, error);
    };
    const socket = new tls.TLSSocket(raw, { isServer: true, secureContext: secureContext(), requestCert: true, rejectUnauthorized: false, ALPNProtocols: [MESH_ALPN] });
    linkUnderlying(socket, raw);
    const timer = setTimeout(() => fail(new ProxyError('AUDITMESH_PEER_HANDSHAKE', 'mTLS handshake not finished in time')), opts.handshakeTimeoutMs);
    socket.on('error', (err: NodeJS.ErrnoException) => fail(new ProxyError('AUDITMESH_PEER_HANDSHAKE', `mTLS handshake failed: ${err.code ?? err.message}`, { cause: err })));
    socket.once('secure', () => {
      if (done) return;
      const verdict = verifyClient(socket, roots);
      if (verdict instanceof ProxyError) return fail(verdict);
      done = true;
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', () => {});
      markVerifiedPeer(socket, verdict);
      // What tls.Server does for its sockets once secure (onServerSocketSecure): node:http2 waits for
      // 'secureConnect', a client's event, on a TLS socket still marked secureConnecting.
      (socket as unknown as { secureConnecting: boolean }).secureConnecting = false;
      // The decrypted connection of a verified peer sidecar: detected and proxied as any other.
      accepted(socket);
    });
  };
}

/** The client's SPIFFE ID when its certificate chains to the mesh CA and is valid now; else why not. */
function verifyClient(socket: tls.TLSSocket, roots: readonly X509Certificate[], nowMs = Date.now()): string | ProxyError {
  if (socket.alpnProtocol !== MESH_ALPN) return new ProxyError('AUDITMESH_PEER_HANDSHAKE', `peer did not negotiate ALPN ${MESH_ALPN}`);
  const raw = socket.getPeerCertificate()?.raw;
  if (raw === undefined) return new ProxyError('AUDITMESH_PEER_UNTRUSTED', 'peer sidecar presented no client certificate');
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(raw);
  } catch {
    return new ProxyError('AUDITMESH_PEER_UNTRUSTED', 'peer sidecar certificate cannot be parsed');
  }
  if (!roots.some((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))) return new ProxyError('AUDITMESH_PEER_UNTRUSTED', `peer sidecar certificate (issuer ${leaf.issuer.replace(/\n/g, ', ')}) is not from the mesh CA`);
  if (nowMs < Date.parse(leaf.validFrom) || nowMs > Date.parse(leaf.validTo)) return new ProxyError('AUDITMESH_PEER_EXPIRED', `peer sidecar certificate is not valid now (${leaf.validFrom} .. ${leaf.validTo})`);
  const id = spiffeIdOfSan(leaf.subjectAltName);
  if (id === undefined) return new ProxyError('AUDITMESH_PEER_UNTRUSTED', 'peer sidecar certificate names no SPIFFE ID');
  return id;
}

function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
}
