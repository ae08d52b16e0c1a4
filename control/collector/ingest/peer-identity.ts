import { X509Certificate } from 'node:crypto';
import { parseSpiffeId, type SpiffeParts } from '../../../ledger/spiffe-id.js';

/**
 * The identity a gRPC client proved with its TLS certificate: the TLS handshake only asked for
 * one (Certify must work without), so the chain to the mesh CA, the validity period and the
 * SPIFFE URI SAN are checked here. null with a reason when it proves nothing.
 */
export type PeerVerdict = { ok: true; spiffeId: string; parts: SpiffeParts; der: Buffer } | { ok: false; problem: string };

export function peerIdentity(call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } }, ca: X509Certificate, trustDomain: string, nowMs = Date.now()): PeerVerdict {
  const raw = call.getAuthContext().sslPeerCertificate?.raw;
  if (raw === undefined) return { ok: false, problem: 'no client certificate: obtain one from the mesh CA (Certify) first' };
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(raw);
  } catch {
    return { ok: false, problem: 'the client certificate cannot be parsed' };
  }
  if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return { ok: false, problem: 'the client certificate is not issued by the mesh CA' };
  if (nowMs < Date.parse(leaf.validFrom) || nowMs > Date.parse(leaf.validTo)) return { ok: false, problem: `the client certificate is not valid now (${leaf.validFrom} .. ${leaf.validTo})` };
  const uri = /(?:^|, )URI:(spiffe:\/\/[^,]+)/.exec(leaf.subjectAltName ?? '')?.[1];
  const parts = uri === undefined ? null : parseSpiffeId(uri);
  if (uri === undefined || parts === null || parts.trustDomain !== trustDomain) return { ok: false, problem: `the client certificate names no workload of trust domain ${trustDomain}` };
  return { ok: true, spiffeId: uri, parts, der: raw };
}
