import test, { type ExecutionContext } from 'ava';
import { createPublicKey, verify } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { caBundleFrom, servingKeyOf } from '../ledger/certified-key.js';
import { createWorkloadCsr } from '../proxy/identity/workload-csr.js';
import { ephemeralSigningKey, type SigningKey } from '../ledger/keys.js';
import { openSync, signedHello, type TestCollector } from './helpers/collector.js';
import { callCertify, createTokenIssuer, meshCredentials, ORDERS_POD, startIdentityCollector } from './helpers/identity.js';
import type { TokenIssuer, TokenSubject } from './cluster/token-issuer.js';

// The collector with a mesh CA serves gRPC over TLS 1.3 with its own CA-issued certificate:
// Certify answers a client without a certificate; Sync needs one from the CA, naming the
// namespace and service account of the token on the stream. Its Welcome carries that certificate
// and is signed with its key.

const SIDECAR_ID = 'shop/orders-7d9f8b6c5d-x2x7q';
const valid = { audience: 'auditmesh', expirationSeconds: 3600 };

async function certified(t: ExecutionContext, collector: TestCollector, issuer: TokenIssuer, subject: TokenSubject = ORDERS_POD): Promise<{ key: SigningKey; chainPem: string }> {
  const key = ephemeralSigningKey();
  const answer = await callCertify(t, collector, await issuer.sign(subject, valid), await createWorkloadCsr(key.privateKey));
  return { key, chainPem: answer.cert_chain_pem };
}

test('a sidecar with a certificate of its journal key from the mesh CA and its own token opens a Sync stream over TLS', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const { key, chainPem } = await certified(t, collector, issuer);
  const peer = openSync(t, collector.grpcAddress, await issuer.sign(ORDERS_POD, valid), meshCredentials(collector.ca!.certPem, { privateKey: key.privateKey, chainPem }));
  peer.send({ hello: signedHello(key, SIDECAR_ID) });
  t.like(await peer.next(), { body: 'welcome' });
});

test('a Sync stream without a client certificate is refused unauthenticated, saying to obtain one', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const peer = openSync(t, collector.grpcAddress, await issuer.sign(ORDERS_POD, valid), meshCredentials(collector.ca!.certPem));
  peer.send({ hello: signedHello(ephemeralSigningKey(), SIDECAR_ID) });
  const refusal = await peer.next();
  t.like(refusal, { body: 'refusal', refusal: { code: 'unauthenticated' } });
  t.regex('refusal' in refusal ? refusal.refusal.reason : '', /^certificate: no client certificate/);
  t.is((await peer.status).code, grpc.status.UNAUTHENTICATED);
});

test("a certificate of another service account does not open a stream with this pod's token", async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const other = { ...ORDERS_POD, pod: { name: 'payments-1', uid: 'p1' }, serviceAccount: { name: 'payments', uid: 'p2' } };
  const { key, chainPem } = await certified(t, collector, issuer, other);
  const peer = openSync(t, collector.grpcAddress, await issuer.sign(ORDERS_POD, valid), meshCredentials(collector.ca!.certPem, { privateKey: key.privateKey, chainPem }));
  peer.send({ hello: signedHello(key, SIDECAR_ID) });
  const refusal = await peer.next();
  t.regex('refusal' in refusal ? refusal.refusal.reason : '', /^certificate: the client certificate names spiffe:\/\/cluster\.local\/ns\/shop\/sa\/payments, the token shop\/orders/);
  t.deepEqual(collector.sidecars(), []);
});

test('a client that does not trust the mesh CA cannot complete the TLS handshake, and plaintext is not answered', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const stranger = await startIdentityCollector(t, await createTokenIssuer());
  const wrongCa = await t.throwsAsync<grpc.ServiceError>(callCertify(t, collector, await issuer.sign(ORDERS_POD, valid), await createWorkloadCsr(ephemeralSigningKey().privateKey), meshCredentials(stranger.ca!.certPem)));
  t.is(wrongCa?.code, grpc.status.UNAVAILABLE);
  const plain = await t.throwsAsync<grpc.ServiceError>(callCertify(t, collector, await issuer.sign(ORDERS_POD, valid), await createWorkloadCsr(ephemeralSigningKey().privateKey), grpc.credentials.createInsecure()));
  t.is(plain?.code, grpc.status.UNAVAILABLE);
});

/** The signing input of a collector acknowledgement, built from its documentation (ledger/chain.ts), not from the code under test. */
function documentedAckInput(kind: 0 | 1, batch: number, head: string, keyId: string, sidecarId: string): Buffer {
  const batchBytes = Buffer.alloc(8);
  batchBytes.writeBigUInt64BE(BigInt(batch));
  return Buffer.concat([Buffer.from([0x09, kind]), batchBytes, Buffer.from(head, 'hex'), Buffer.from(keyId, 'ascii'), Buffer.from(sidecarId, 'utf8')]);
}

test("the Welcome carries the collector's serving certificate chain from the mesh CA and is signed with its key for this sidecar's key", async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const { key, chainPem } = await certified(t, collector, issuer);
  const peer = openSync(t, collector.grpcAddress, await issuer.sign(ORDERS_POD, valid), meshCredentials(collector.ca!.certPem, { privateKey: key.privateKey, chainPem }));
  peer.send({ hello: signedHello(key, SIDECAR_ID) });
  const answer = await peer.next();
  if (!('welcome' in answer)) return t.fail(`expected a Welcome, got ${answer.body}`);
  const { welcome } = answer;
  const certifiedKey = servingKeyOf(welcome.cert_chain_pem!, caBundleFrom(collector.ca!.certPem));
  if (!('key' in certifiedKey)) return t.fail(certifiedKey.problem);
  t.true(certifiedKey.key.equals(createPublicKey(collector.serving!.privateKey)), 'the leaf certifies the serving key');
  t.is(certifiedKey.leaf.checkIP('127.0.0.1'), '127.0.0.1', 'the serving certificate: it names the address sidecars reach it by');
  t.true(verify(null, documentedAckInput(0, welcome.acked_batch, welcome.acked_head, key.keyId, SIDECAR_ID), certifiedKey.key, Buffer.from(welcome.sig!, 'hex')), 'signed over the documented input');
  t.false(verify(null, documentedAckInput(1, welcome.acked_batch, welcome.acked_head, key.keyId, SIDECAR_ID), certifiedKey.key, Buffer.from(welcome.sig!, 'hex')), 'not valid as an Ack');
  t.false(verify(null, documentedAckInput(0, welcome.acked_batch, welcome.acked_head, ephemeralSigningKey().keyId, SIDECAR_ID), certifiedKey.key, Buffer.from(welcome.sig!, 'hex')), 'not valid for another sidecar key');
});
