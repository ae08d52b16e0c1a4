import { generateKeyPairSync, webcrypto, X509Certificate, type KeyObject } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { ED25519 } from '../../../ledger/x509.js';
import type { Logger } from '../../../command/log.js';
import type { MeshCa } from './mesh-ca.js';
import type { ServingTls } from '../../../command/plain-http.js';

/**
 * The collector's own identity: an Ed25519 key made at start (never written anywhere) and a
 * serving certificate for it from the mesh CA, naming localhost, 127.0.0.1, the bind address and
 * the collector's Service names. gRPC serves TLS 1.3 with it and asks every client for a
 * certificate without requiring one: a sidecar that has none yet must reach Certify. Every other
 * RPC checks the client certificate itself (peer-identity.ts). The same key signs the Welcomes and
 * Acks (sync-server.ts) and serves the HTTP API's TLS.
 */
export interface ServingIdentity {
  readonly privateKey: KeyObject;
  /** The current chain (renewed at half-life, like a workload's). */
  readonly chainPem: string;
  readonly credentials: grpc.ServerCredentials;
  /** The key and the current chain for an HTTPS server. */
  tls(): ServingTls;
  /** Calls `listener` after each renewal (an HTTPS server takes the new chain); returns the unsubscribe function. */
  onRenewed(listener: () => void): () => void;
  close(): void;
}

/** The Service the install renders, in namespace `namespace`: the names sidecars reach it by. */
export function serviceNames(namespace: string | undefined, service = 'auditmesh-collector'): string[] {
  if (namespace === undefined) return [];
  return [service, `${service}.${namespace}`, `${service}.${namespace}.svc`, `${service}.${namespace}.svc.cluster.local`];
}

/** A failed renewal is tried again after this (the current certificate still serves meanwhile). */
const RENEW_RETRY_MS = 1_000;

export async function createServingIdentity(ca: MeshCa, names: { bind: string; dns: readonly string[] }, ttlMs: number, log: Logger = () => {}): Promise<ServingIdentity> {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const key = await webcrypto.subtle.importKey('spki', publicKey.export({ format: 'der', type: 'spki' }), ED25519, true, ['verify']);
  const ips = ['127.0.0.1', ...(isIp(names.bind) && !['0.0.0.0', '::', '127.0.0.1'].includes(names.bind) ? [names.bind] : [])];
  const dns = ['localhost', ...names.dns, ...(isIp(names.bind) ? [] : [names.bind])];
  const keyPem = Buffer.from(privateKey.export({ format: 'pem', type: 'pkcs8' }));
  const issue = () => ca.issue(key, { dns: [...new Set(dns)], ips }, ttlMs);
  let issued = await issue();
  const credentials = grpc.ServerCredentials.createSsl(Buffer.from(ca.certPem), [{ private_key: keyPem, cert_chain: Buffer.from(issued.chainPem) }], false);
  // createSsl either requires a client certificate or never asks for one; Certify needs "ask, do not require".
  Object.assign((credentials as unknown as { _getConstructorOptions(): object })._getConstructorOptions(), { requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.3' });
  let timer: NodeJS.Timeout | undefined;
  const renewed = new Set<() => void>();
  let closed = false;
  const schedule = (delayMs = Math.max(1000, (issued.notAfterUnixMs - Date.now()) / 2)): void => {
    if (closed) return;
    timer = setTimeout(() => void renew(), delayMs);
    timer.unref();
  };
  const renew = async (): Promise<void> => {
    try {
      issued = await issue();
      // New handshakes take the new certificate; open connections keep theirs.
      (credentials as unknown as { updateSecureContextOptions(o: object): void }).updateSecureContextOptions({ ca: Buffer.from(ca.certPem), cert: Buffer.from(issued.chainPem), key: keyPem });
    } catch (err) {
      log('error', 'collector serving certificate not renewed; retrying', { err: (err as Error).message, retry_ms: RENEW_RETRY_MS });
      return schedule(RENEW_RETRY_MS);
    }
    log('info', 'collector serving certificate renewed', { not_after_unix_ms: issued.notAfterUnixMs });
    // The next renewal is scheduled whatever a listener does: one that throws must not leave the certificate to expire.
    schedule();
    for (const listener of renewed) {
      try {
        listener();
      } catch (err) {
        log('error', 'collector serving certificate renewed, but a server could not take it', { err: (err as Error).message });
      }
    }
  };
  schedule();
  return {
    privateKey,
    get chainPem() {
      return issued.chainPem;
    },
    credentials,
    tls: () => ({ key: keyPem, cert: issued.chainPem }),
    onRenewed(listener) {
      renewed.add(listener);
      return () => void renewed.delete(listener);
    },
    close() {
      closed = true;
      clearTimeout(timer);
    },
  };
}

function isIp(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(':');
}

/** The first certificate of a PEM chain. */
export function leafOf(chainPem: string): X509Certificate {
  return new X509Certificate(chainPem);
}
