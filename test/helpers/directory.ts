import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { createWorkloadCsr } from '../../proxy/identity/workload-csr.js';
import { ephemeralSigningKey, type SigningKey } from '../../ledger/keys.js';
import { DirectoryClient, type DirectoryEntry, type DirectoryUpdate } from '../../wire/sync-wire.js';
import type { TokenIssuer, TokenSubject } from '../cluster/token-issuer.js';
import { openSync, signedHello, type SyncPeer, type TestCollector } from './collector.js';
import { callCertify, meshCredentials } from './identity.js';

/** A workload key certified by `collector`'s mesh CA for `subject`, and TLS credentials presenting it. */
export interface CertifiedWorkload {
  key: SigningKey;
  chainPem: string;
  spiffeId: string;
  credentials(): grpc.ChannelCredentials;
}

export async function certifiedWorkload(t: ExecutionContext, collector: TestCollector, issuer: TokenIssuer, subject: TokenSubject): Promise<CertifiedWorkload> {
  const key = ephemeralSigningKey();
  const answer = await callCertify(t, collector, await issuer.sign(subject, { audience: 'auditmesh', expirationSeconds: 3600 }), await createWorkloadCsr(key.privateKey));
  return { key, chainPem: answer.cert_chain_pem, spiffeId: answer.spiffe_id, credentials: () => meshCredentials(collector.ca!.certPem, { privateKey: key.privateKey, chainPem: answer.cert_chain_pem }) };
}

/**
 * A sidecar's Sync stream as the shipper opens it: over mTLS with `workload`'s certificate (else
 * plaintext with `token`), a signed Hello claiming `podIp`; resolves once welcomed.
 */
export async function claimingStream(t: ExecutionContext, collector: TestCollector, sidecarId: string, podIp: string, opts: { token: string | null; workload?: CertifiedWorkload; service?: string }): Promise<SyncPeer> {
  const key = opts.workload?.key ?? ephemeralSigningKey();
  const peer = openSync(t, collector.grpcAddress, opts.token, opts.workload?.credentials() ?? grpc.credentials.createInsecure());
  peer.send({ hello: { ...signedHello(key, sidecarId, opts.service ?? 'orders'), pod_ip: podIp } });
  const welcome = await peer.next();
  if (welcome.body !== 'welcome') throw new Error(`expected a Welcome, got ${JSON.stringify(welcome)}`);
  return peer;
}

/** One Directory.Watch stream: its updates as they come, and its final status. */
export interface WatchPeer {
  /** The next update; rejects when the stream ends first (with its status) or after `timeoutMs`. */
  next(timeoutMs?: number): Promise<DirectoryUpdate>;
  /** The next update that adds or removes something (keepalives skipped). */
  nextChange(timeoutMs?: number): Promise<DirectoryUpdate>;
  status: Promise<grpc.StatusObject>;
  close(): void;
}

export function openWatch(t: ExecutionContext, address: string, credentials: grpc.ChannelCredentials, token: string | null = null): WatchPeer {
  const client = new DirectoryClient(address, credentials);
  const metadata = new grpc.Metadata();
  if (token !== null) metadata.set('authorization', `Bearer ${token}`);
  const call = (client as unknown as { Watch(r: object, m: grpc.Metadata): grpc.ClientReadableStream<DirectoryUpdate> }).Watch({}, metadata);
  const received: DirectoryUpdate[] = [];
  const waiters: Array<() => void> = [];
  let ended: grpc.StatusObject | undefined;
  const wake = (): void => void waiters.splice(0).forEach((w) => w());
  call.on('data', (u: DirectoryUpdate) => (received.push(u), wake()));
  call.on('error', () => {});
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', (s: grpc.StatusObject) => ((ended = s), wake(), resolve(s))));
  const close = (): void => {
    call.cancel();
    client.close();
  };
  t.teardown(close);
  const next = (timeoutMs = 30_000): Promise<DirectoryUpdate> =>
    new Promise((resolve, reject) => {
      // A next() that timed out must not take the update that comes after: its waiter goes with it.
      const timer = setTimeout(() => {
        const at = waiters.indexOf(check);
        if (at >= 0) waiters.splice(at, 1);
        reject(new Error(`no directory update within ${timeoutMs} ms`));
      }, timeoutMs);
      const check = (): void => {
        if (received.length > 0) return clearTimeout(timer), resolve(received.shift()!);
        if (ended !== undefined) return clearTimeout(timer), reject(Object.assign(new Error(`watch ended: ${ended.code} ${ended.details}`), { status: ended }));
        waiters.push(check);
      };
      check();
    });
  return {
    next,
    async nextChange(timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const u = await next(Math.max(1, until - Date.now()));
        if (u.added.length > 0 || u.removed.length > 0) return u;
      }
    },
    status,
    close,
  };
}

/** An entry as the wire carries it. */
export function entry(ip: string, identity: string, sidecarId: string, service = 'orders'): DirectoryEntry {
  return { ip, identity, sidecar_id: sidecarId, service };
}
