import test from 'ava';
import { generateKeyPairSync, webcrypto, X509Certificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { openMeshCa } from '../control/collector/ingest/mesh-ca.js';
import { createWorkloadCsr } from '../proxy/identity/workload-csr.js';
import { ephemeralSigningKey } from '../ledger/keys.js';
import { callCertify, createTokenIssuer, ORDERS_POD, startIdentityCollector } from './helpers/identity.js';
import { metricValue, tempDir } from './helpers/sidecar.js';
import type { TokenIssuer, TokenOptions } from './cluster/token-issuer.js';

// The mesh CA behind Certify, with real projected-token-shaped JWTs from a test issuer and real
// CSRs: what it certifies, and why it refuses the rest.

const valid: TokenOptions = { audience: 'auditmesh', expirationSeconds: 3600 };
const now = (): number => Math.floor(Date.now() / 1000);

test("a valid token and a CSR of the journal key get a 24h certificate of that key naming the token's SPIFFE ID", async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const key = ephemeralSigningKey();
  const answer = await callCertify(t, collector, await issuer.sign(ORDERS_POD, valid), await createWorkloadCsr(key.privateKey));
  t.is(answer.spiffe_id, 'spiffe://cluster.local/ns/shop/sa/orders');
  const [leaf, caInChain] = answer.cert_chain_pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!.map((p) => new X509Certificate(p));
  const ca = new X509Certificate(answer.ca_bundle_pem);
  t.is(caInChain.fingerprint256, ca.fingerprint256);
  t.is(ca.fingerprint256, new X509Certificate(await readFile(join(collector.caDir, 'ca.crt'))).fingerprint256);
  t.true(leaf.checkIssued(ca) && leaf.verify(ca.publicKey), 'signed by the mesh CA');
  t.is(leaf.subjectAltName, 'URI:spiffe://cluster.local/ns/shop/sa/orders');
  t.deepEqual(leaf.publicKey.export({ format: 'der', type: 'spki' }), key.publicKeySpki, 'the journal key itself is certified');
  t.false(leaf.ca);
  const lifetimeMs = Date.parse(leaf.validTo) - Date.now();
  t.true(lifetimeMs > 23.9 * 3_600_000 && lifetimeMs <= 24 * 3_600_000, `valid about 24h (${lifetimeMs} ms)`);
  t.is(answer.not_after_unix_ms, Date.parse(leaf.validTo));
  t.deepEqual(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'], 'serverAuth and clientAuth');
  const metrics = await (await collector.get('/metrics')).text();
  t.is(metricValue(metrics, 'auditmesh_collector_certificates_issued_total'), 1);
  t.is((await stat(join(collector.caDir, 'ca.key'))).mode & 0o777, 0o600);
});

test('--trust-domain and --cert-ttl shape the certificate', async (t) => {
  const issuer = await createTokenIssuer();
  const dir = await tempDir(t);
  const collector = await startIdentityCollector(t, issuer, { identity: { caDir: join(dir, 'ca'), createCa: true, trustDomain: 'prod.example', certTtlMs: 3_600_000 } });
  const answer = await callCertify(t, collector, await issuer.sign(ORDERS_POD, valid), await createWorkloadCsr(ephemeralSigningKey().privateKey));
  const leaf = new X509Certificate(answer.cert_chain_pem);
  t.is(leaf.subjectAltName, 'URI:spiffe://prod.example/ns/shop/sa/orders');
  t.true(Date.parse(leaf.validTo) - Date.now() <= 3_600_000);
});

const refusals: Array<{ reason: string; token: (issuer: TokenIssuer) => Promise<string> }> = [
  { reason: 'wrong-audience', token: (i) => i.sign(ORDERS_POD, { ...valid, audience: i.apiAudience }) },
  { reason: 'expired', token: (i) => i.sign(ORDERS_POD, { ...valid, now: now() - 7200 }) },
  { reason: 'not-yet-valid', token: (i) => i.sign(ORDERS_POD, { ...valid, override: { nbf: now() + 3600 } }) },
  { reason: 'other-issuer', token: (i) => i.sign(ORDERS_POD, { ...valid, override: { iss: 'https://other.cluster.example' } }) },
  { reason: 'unknown-key', token: async () => (await createTokenIssuer()).sign(ORDERS_POD, valid) },
  { reason: 'malformed', token: async () => 'shared-local-token' },
];

for (const r of refusals) {
  test(`a token refused as ${r.reason} gets no certificate, says why, and is counted by reason`, async (t) => {
    const issuer = await createTokenIssuer();
    const collector = await startIdentityCollector(t, issuer);
    const err = await t.throwsAsync<grpc.ServiceError>(callCertify(t, collector, await r.token(issuer), await createWorkloadCsr(ephemeralSigningKey().privateKey)));
    t.is(err?.code, grpc.status.UNAUTHENTICATED);
    t.regex(err?.details ?? '', new RegExp(`^${r.reason}: `));
    const metrics = await (await collector.get('/metrics')).text();
    t.is(metricValue(metrics, 'auditmesh_collector_identity_refusals_total', { reason: r.reason }), 1);
    t.is(metricValue(metrics, 'auditmesh_collector_certificates_issued_total'), 0);
  });
}

test('a CSR whose signature does not verify, or no CSR at all, is refused as bad-csr', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const token = await issuer.sign(ORDERS_POD, valid);
  const csr = await createWorkloadCsr(ephemeralSigningKey().privateKey);
  // Flip one bit of the signature (the DER's last bytes).
  const der = Buffer.from(csr.replace(/-----[A-Z ]+-----|\s/g, ''), 'base64');
  der[der.length - 1] ^= 1;
  const tampered = `-----BEGIN CERTIFICATE REQUEST-----\n${der.toString('base64')}\n-----END CERTIFICATE REQUEST-----\n`;
  const forged = await t.throwsAsync<grpc.ServiceError>(callCertify(t, collector, token, tampered));
  t.is(forged?.code, grpc.status.INVALID_ARGUMENT);
  t.regex(forged?.details ?? '', /^bad-csr: the CSR's signature does not verify/);
  const garbage = await t.throwsAsync<grpc.ServiceError>(callCertify(t, collector, token, 'not a csr'));
  t.regex(garbage?.details ?? '', /^bad-csr: not a PEM PKCS#10/);
  const metrics = await (await collector.get('/metrics')).text();
  t.is(metricValue(metrics, 'auditmesh_collector_identity_refusals_total', { reason: 'bad-csr' }), 2);
});

test('the CA is created once for a local run, kept across restarts, and never created when told not to', async (t) => {
  const dir = await tempDir(t);
  const first = await openMeshCa(join(dir, 'ca'), { create: true });
  const again = await openMeshCa(join(dir, 'ca'), { create: true });
  t.is(again.certPem, first.certPem);
  const spki = generateKeyPairSync('ed25519').publicKey.export({ format: 'der', type: 'spki' });
  const issued = await again.issue(await webcrypto.subtle.importKey('spki', spki, { name: 'Ed25519' }, true, ['verify']), { dns: ['localhost'] }, 60_000);
  const leaf = new X509Certificate(issued.chainPem);
  t.true(leaf.verify(new X509Certificate(first.certPem).publicKey), 'a CA loaded from its files signs');
  t.is(leaf.subjectAltName, 'DNS:localhost');
  await t.throwsAsync(openMeshCa(join(dir, 'elsewhere'), { create: false }), { message: /no mesh CA in .*elsewhere \(ca\.crt and ca\.key\): mount the CA Secret/ });
});
