import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ExecutionContext } from 'ava';
import { IdentityClient, type CertifyResponse } from '../../control/proto/sync-wire.js';
import { createTokenIssuer, type TokenIssuer, type TokenSubject } from '../cluster/token-issuer.js';
import { startTestCollector, type TestCollector, type TestCollectorOptions } from './collector.js';
import { tempDir } from './sidecar.js';

/** A pod of namespace shop running as service account orders, as a projected token names it. */
export const ORDERS_POD: TokenSubject = { namespace: 'shop', pod: { name: 'orders-7d9f8b6c5d-x2x7q', uid: 'a1b2' }, serviceAccount: { name: 'orders', uid: 'c3d4' } };

/** A collector with a mesh CA (created in a temp --ca-dir) that trusts `issuer`'s ServiceAccount tokens. */
export async function startIdentityCollector(t: ExecutionContext, issuer: TokenIssuer, opts: TestCollectorOptions = {}): Promise<TestCollector & { caDir: string }> {
  const dir = await tempDir(t, 'auditmesh-identity-');
  const jwks = join(dir, 'jwks.json');
  await writeFile(jwks, JSON.stringify(issuer.jwks()));
  const caDir = join(dir, 'ca');
  const collector = await startTestCollector(t, { token: 'shared-local-token', serviceAccounts: { jwks, issuer: issuer.issuer }, identity: { caDir, createCa: true }, ...opts });
  return Object.assign(collector, { caDir });
}

export { createTokenIssuer };

/** Calls Certify with `token` as the bearer credential; rejects with the gRPC error on a refusal. */
export function callCertify(t: ExecutionContext, address: string, token: string | null, csrPem: string, credentials = grpc.credentials.createInsecure()): Promise<CertifyResponse> {
  const client = new IdentityClient(address, credentials);
  t.teardown(() => client.close());
  const metadata = new grpc.Metadata();
  if (token !== null) metadata.set('authorization', `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    (client as unknown as { Certify(r: object, m: grpc.Metadata, cb: (err: grpc.ServiceError | null, res: CertifyResponse) => void): void }).Certify({ csr_pem: csrPem }, metadata, (err, res) => (err ? reject(err) : resolve(res)));
  });
}
