import { generateKeyPairSync, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ED25519 } from '../../proxy/identity/x509.js';
import type { MeshCa } from './mesh-ca.js';

/**
 * The collector's own identity: an Ed25519 key made at start (never written anywhere) and a
 * serving certificate for it from the mesh CA, naming localhost, 127.0.0.1, the bind address and
 * the collector's Service names. gRPC serves TLS 1.3 with it and asks every client for a
 * certificate without requiring one: a sidecar that has none yet must reach Certify. Every other
 * RPC checks the client certificate itself (peer-identity.ts).
 */
export interface ServingIdentity {
  readonly privateKey: KeyObject;
  readonly chainPem: string;
  readonly credentials: grpc.ServerCredentials;
}

/** The Service the install renders, in namespace `namespace`: the names sidecars reach it by. */
export function serviceNames(namespace: string | undefined, service = 'auditmesh-collector'): string[] {
  if (namespace === undefined) return [];
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}

export async function createServingIdentity(ca: MeshCa, names: { bind: string; dns: readonly string[] }, ttlMs: number): Promise<ServingIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const key = await webcrypto.subtle.importKey('spki', publicKey.export({ format: 'der', type: 'spki' }), ED25519, true, ['verify']);
  const ips = ['127.0.0.1', ...(isIp(names.bind) && !['0.0.0.0', '::', '127.0.0.1'].includes(names.bind) ? [names.bind] : [])];
  const dns = ['localhost', ...names.dns, ...(isIp(names.bind) ? [] : [names.bind])];
  const issued = await ca.issue(key, { dns: [...new Set(dns)], ips }, ttlMs);
  const credentials = grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ private_key: Buffer.from(privateKey.export({ format: 'pem', type: 'pkcs8' })), cert_chain: Buffer.from(issued.chainPem) }], false);
  // createSsl either requires a client certificate or never asks for one; Certify needs "ask, do not require".
  Object.assign((credentials as unknown as { _getConstructorOptions(): object })._getConstructorOptions(), { requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  return { privateKey, chainPem: issued.chainPem, credentials };
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/** The first certificate of a PEM chain. */
export function leafOf(chainPem: string): X509Certificate {
  return new X509Certificate(chainPem);
}
