import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { openSync, signedHello } from './helpers/collector.js';
import { startTokenCollector } from './helpers/identity.js';
import { metricValue } from './helpers/sidecar.js';
import { createTokenIssuer, type TokenIssuer, type TokenOptions } from './cluster/token-issuer.js';

// Real projected-token-shaped JWTs, signed as the API server signs them, against a real collector
// over gRPC: what it accepts, and why it refuses the rest.

const POD = { namespace: 'shop', pod: { name: 'orders-7d9f8b6c5d-x2x7q', uid: 'a1b2' }, serviceAccount: { name: 'default', uid: 'c3d4' } };
const SIDECAR_ID = 'shop/orders-7d9f8b6c5d-x2x7q';

const collectorTrusting = (t: ExecutionContext, issuer: TokenIssuer) => startTokenCollector(t, issuer);

const now = (): number => Math.floor(Date.now() / 1000);
const valid: TokenOptions = { audience: 'auditmesh', expirationSeconds: 3600 };

for (const alg of ['RS256', 'ES256'] as const) {
  test(`a projected ServiceAccount token (${alg}) opens a stream for its own pod's sidecar id`, async (t) => {
    const issuer = await createTokenIssuer({ alg });
    const collector = await collectorTrusting(t, issuer);
    const peer = openSync(t, collector.grpcAddress, await issuer.sign(POD, valid));
    peer.send({ hello: signedHello(ephemeralSigningKey(), SIDECAR_ID) });
    t.like(await peer.next(), { body: 'welcome' });
    t.deepEqual(collector.sidecars().map((s) => s.id), [SIDECAR_ID]);
  });
}

const refusals: Array<{ reason: string; token: (issuer: TokenIssuer) => Promise<string> }> = [
  { reason: 'wrong-audience', token: (i) => i.sign(POD, { ...valid, audience: i.apiAudience }) },
  { reason: 'expired', token: (i) => i.sign(POD, { ...valid, now: now() - 7200 }) },
  { reason: 'not-yet-valid', token: (i) => i.sign(POD, { ...valid, override: { nbf: now() + 3600 } }) },
  { reason: 'other-issuer', token: (i) => i.sign(POD, { ...valid, override: { iss: 'https://other.cluster.example' } }) },
  { reason: 'unknown-key', token: async () => (await createTokenIssuer()).sign(POD, valid) },
  { reason: 'not-pod-bound', token: (i) => i.sign(POD, { ...valid, override: { 'kubernetes.io': { namespace: 'shop' } } }) },
];

for (const r of refusals) {
  test(`a token refused as ${r.reason} ends the stream unauthenticated, says why, and is counted by reason`, async (t) => {
    const issuer = await createTokenIssuer();
    const collector = await collectorTrusting(t, issuer);
    const peer = openSync(t, collector.grpcAddress, await r.token(issuer));
    const refusal = await peer.next();
    t.like(refusal, { body: 'refusal', refusal: { code: 'unauthenticated' } });
    t.regex('refusal' in refusal ? refusal.refusal.reason : '', new RegExp(`^${r.reason}: `));
    t.is((await peer.status).code, grpc.status.UNAUTHENTICATED);
    const metrics = await (await fetch(`${collector.httpUrl}/metrics`)).text();
    t.is(metricValue(metrics, 'auditmesh_collector_token_refusals_total', { reason: r.reason }), 1);
    t.deepEqual(collector.sidecars(), [], 'nothing opened in its name');
  });
}

test("a valid token cannot write under another pod's sidecar id; the shared local token still can", async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await collectorTrusting(t, issuer);
  const peer = openSync(t, collector.grpcAddress, await issuer.sign(POD, valid));
  peer.send({ hello: signedHello(ephemeralSigningKey(), 'shop/inventory-5f7c9d-abcde') });
  const refusal = await peer.next();
  t.like(refusal, { body: 'refusal', refusal: { code: 'unauthenticated' } });
  t.regex('refusal' in refusal ? refusal.refusal.reason : '', /wrong-sidecar-id: the token of pod shop\/orders-7d9f8b6c5d-x2x7q cannot write as sidecar "shop\/inventory-5f7c9d-abcde"/);
  const metrics = await (await fetch(`${collector.httpUrl}/metrics`)).text();
  t.is(metricValue(metrics, 'auditmesh_collector_token_refusals_total', { reason: 'wrong-sidecar-id' }), 1);

  const local = openSync(t, collector.grpcAddress, 'shared-local-token');
  local.send({ hello: signedHello(ephemeralSigningKey(), 'any-local-name') });
  t.like(await local.next(), { body: 'welcome' });
});
