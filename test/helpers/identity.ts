import type { KeyObject } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { IdentityClient, type CertifyResponse } from '../../wire/sync-wire.js';
import { createTokenIssuer, type TokenIssuer, type TokenSubject } from '../cluster/token-issuer.js';
import { startTestCollector, type TestCollector, type TestCollectorOptions } from './collector.js';
import { tempDir } from './sidecar.js';
import { startShippingSidecar, type ShippingSidecar } from './shipping.js';
import type { SidecarConfig } from '../../proxy/config.js';

/** A pod of namespace shop running as service account orders, as a projected token names it. */
export const ORDERS_POD: TokenSubject = { namespace: 'shop', pod: { name: 'orders-7d9f8b6c5d-x2x7q', uid: 'a1b2' }, serviceAccount: { name: 'orders', uid: 'c3d4' } };

/** A collector with a mesh CA (created in a temp --ca-dir) that trusts `issuer`'s ServiceAccount tokens. */
export async function startIdentityCollector(t: ExecutionContext, issuer: TokenIssuer, opts: TestCollectorOptions = {}): Promise<TestCollector & { caDir: string }> {
  const dir = await tempDir(t, 'auditmesh-identity-');
  const caDir = join(dir, 'ca');
  const collector = await startTokenCollector(t, issuer, { identity: { caDir, createCa: true }, ...opts });
  return Object.assign(collector, { caDir });
}

/** A collector that trusts `issuer`'s ServiceAccount tokens and the shared token `shared-local-token`; plaintext gRPC unless `opts.identity` gives it a mesh CA. */
export async function startTokenCollector(t: ExecutionContext, issuer: TokenIssuer, opts: TestCollectorOptions = {}): Promise<TestCollector> {
  const dir = await tempDir(t, 'auditmesh-identity-');
  const jwks = join(dir, 'jwks.json');
  await writeFile(jwks, JSON.stringify(issuer.jwks()));
  return startTestCollector(t, { token: 'shared-local-token', serviceAccounts: { jwks, issuer: issuer.issuer }, ...opts });
}

/** A projected token of `subject` for the collector (audience auditmesh, an hour). */
export function sidecarToken(issuer: TokenIssuer, subject: TokenSubject): Promise<string> {
  return issuer.sign(subject, { audience: 'auditmesh', expirationSeconds: 3600 });
}

export { createTokenIssuer };

/** TLS to a collector of the mesh CA `caPem`, presenting `client` (a key and its certificate chain) if given. */
export function meshCredentials(caPem: string, client?: { privateKey: KeyObject; chainPem: string }): grpc.ChannelCredentials {
  if (client === undefined) return grpc.credentials.createSsl(Buffer.from(caPem));
  return grpc.credentials.createSsl(Buffer.from(caPem), Buffer.from(client.privateKey.export({ format: 'pem', type: 'pkcs8' })), Buffer.from(client.chainPem));
}

/** Calls Certify over TLS (trusting the collector's CA, no client certificate) with `token` as the bearer credential; rejects with the gRPC error on a refusal. */
export function callCertify(t: ExecutionContext, collector: TestCollector, token: string | null, csrPem: string, credentials = meshCredentials(collector.ca!.certPem)): Promise<CertifyResponse> {
  const client = new IdentityClient(collector.grpcAddress, credentials);
  t.teardown(() => client.close());
  const metadata = new grpc.Metadata();
  if (token !== null) metadata.set('authorization', `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    (client as unknown as { Certify(r: object, m: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: CertifyResponse) => void): void }).Certify({ csr_pem: csrPem }, metadata, (err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** The pod of the sidecars these tests run: namespace shop, service account ledger. */
export const LEDGER_POD: TokenSubject = { namespace: 'shop', pod: { name: 'ledger-0', uid: 'u-1' }, serviceAccount: { name: 'ledger', uid: 's-1' } };

/** A folder with a projected token of LEDGER_POD (audience auditmesh) and the collector's CA bundle, as the injector mounts them. */
export async function identityFiles(t: ExecutionContext, collector: TestCollector, issuer: TokenIssuer): Promise<{ dir: string; identityTokenFile: string; caFile: string }> {
  const dir = await tempDir(t);
  const identityTokenFile = join(dir, 'identity-token');
  await writeFile(identityTokenFile, await issuer.sign(LEDGER_POD, { audience: 'auditmesh', expirationSeconds: 3600 }));
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, collector.ca!.certPem);
  return { dir, identityTokenFile, caFile };
}

/** A shipping sidecar of LEDGER_POD with --identity-token-file and --ca-file: certified by `collector`'s mesh CA, shipping over mTLS as shop/ledger-0. */
export async function startIdentitySidecar(t: ExecutionContext, collector: TestCollector, issuer: TokenIssuer, overrides: Partial<SidecarConfig> = {}): Promise<ShippingSidecar> {
  const files = await identityFiles(t, collector, issuer);
  return startShippingSidecar(t, collector.grpcAddress, { collectorTokenFile: undefined, identityTokenFile: files.identityTokenFile, caFile: files.caFile, sidecarId: 'shop/ledger-0', ...overrides }, files.dir);
}
