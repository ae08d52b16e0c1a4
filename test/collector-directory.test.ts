import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { metric } from './helpers/collector-reads.js';
import { certifiedWorkload, claimingStream, entry, openWatch } from './helpers/directory.js';
import { createTokenIssuer, meshCredentials, ORDERS_POD, sidecarToken, startIdentityCollector } from './helpers/identity.js';
import { startTestCollector } from './helpers/collector.js';
import { normalIp, sourceIp } from '../control/collector/directory/mesh-directory.js';

// The collector's mesh directory: a sidecar's Sync stream over mTLS claims its pod IP in the
// Hello; the collector lists it with the SPIFFE ID the certificate proved, only when the claim is
// the address the stream comes from, and streams the directory to watchers that prove themselves
// the same way (Directory.Watch on the gRPC port).

const ORDERS_ID = 'shop/orders-7d9f8b6c5d-x2x7q';
const ORDERS_SPIFFE = 'spiffe://cluster.local/ns/shop/sa/orders';
const PAYMENTS_POD = { namespace: 'shop', pod: { name: 'payments-0', uid: 'p-1' }, serviceAccount: { name: 'payments', uid: 'p-2' } };

test("a sidecar's proven pod IP is in another sidecar's Watch snapshot with its SPIFFE ID; a watcher from before sees it added", async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer);
  const orders = await certifiedWorkload(t, collector, issuer, ORDERS_POD);
  const payments = await certifiedWorkload(t, collector, issuer, PAYMENTS_POD);
  const early = openWatch(t, collector.grpcAddress, payments.credentials());
  t.like(await early.next(), { snapshot: true, added: [], removed: [] });
  await claimingStream(t, collector, ORDERS_ID, '127.0.0.1', { token: await sidecarToken(issuer, ORDERS_POD), workload: orders });
  t.like(await early.nextChange(), { snapshot: false, added: [entry('127.0.0.1', ORDERS_SPIFFE, ORDERS_ID)], removed: [] });
  const late = openWatch(t, collector.grpcAddress, payments.credentials());
  const snapshot = await late.next();
  t.true(snapshot.snapshot);
  t.deepEqual(snapshot.added, [entry('127.0.0.1', ORDERS_SPIFFE, ORDERS_ID)]);
  t.true(Math.abs(snapshot.unix_ms - Date.now()) < 5_000, 'stamped with the time it was sent');
  t.is(await metric(collector, 'auditmesh_collector_directory_entries'), 1);
});

test('a claimed pod IP that is not the stream’s source address is not listed, counted once; --directory-trust-claimed-ip lists it', async (t) => {
  const issuer = await createTokenIssuer();
  const strict = await startIdentityCollector(t, issuer);
  const orders = await certifiedWorkload(t, strict, issuer, ORDERS_POD);
  await claimingStream(t, strict, ORDERS_ID, '10.1.2.3', { token: await sidecarToken(issuer, ORDERS_POD), workload: orders });
  const watch = openWatch(t, strict.grpcAddress, orders.credentials());
  t.deepEqual((await watch.next()).added, []);
  t.is(await metric(strict, 'auditmesh_collector_directory_refusals_total', { reason: 'not-source-address' }), 1);
  t.is(await metric(strict, 'auditmesh_collector_directory_entries'), 0);

  const trusting = await startIdentityCollector(t, issuer, { directoryTrustClaimedIp: true });
  const again = await certifiedWorkload(t, trusting, issuer, ORDERS_POD);
  await claimingStream(t, trusting, ORDERS_ID, '10.1.2.3', { token: await sidecarToken(issuer, ORDERS_POD), workload: again });
  const trusted = openWatch(t, trusting.grpcAddress, again.credentials());
  t.deepEqual((await trusted.next()).added, [entry('10.1.2.3', ORDERS_SPIFFE, ORDERS_ID)]);
  t.is(await metric(trusting, 'auditmesh_collector_directory_refusals_total', { reason: 'not-source-address' }), 0);
});

test('a stream that proved no identity (token only, no mesh CA) is not listed, however true its address', async (t) => {
  const collector = await startTestCollector(t, { directoryTrustClaimedIp: true });
  await claimingStream(t, collector, 'orders-0', '127.0.0.1', { token: collector.token });
  const watch = openWatch(t, collector.grpcAddress, grpc.credentials.createInsecure(), collector.token);
  t.deepEqual((await watch.next()).added, []);
  t.is(await metric(collector, 'auditmesh_collector_directory_refusals_total', { reason: 'no-identity' }), 1);
});

test('an entry stays while its sidecar reconnects within the grace and leaves once the stream has been gone past it', async (t) => {
  const graceMs = 4_000;
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer, { directoryGraceMs: graceMs });
  const orders = await certifiedWorkload(t, collector, issuer, ORDERS_POD);
  const token = await sidecarToken(issuer, ORDERS_POD);
  const first = await claimingStream(t, collector, ORDERS_ID, '127.0.0.1', { token, workload: orders });
  const watch = openWatch(t, collector.grpcAddress, orders.credentials());
  t.deepEqual((await watch.next()).added, [entry('127.0.0.1', ORDERS_SPIFFE, ORDERS_ID)]);
  // A reconnect: the old stream goes, a new one comes within the grace; watchers hear no change, past the grace either.
  first.close();
  await first.status;
  const second = await claimingStream(t, collector, ORDERS_ID, '127.0.0.1', { token, workload: orders });
  await t.throwsAsync(watch.nextChange(graceMs + 1_000), { message: /no directory update within/ }, 'no removal, no re-add: the entry stayed');
  t.is(collector.directory.size, 1);
  // Gone for good: listed until the grace is over, then removed.
  second.close();
  const goneAt = Date.now();
  await second.status;
  const removal = await watch.nextChange(graceMs + 30_000);
  t.deepEqual(removal.removed, ['127.0.0.1']);
  t.true(Date.now() - goneAt >= graceMs - 50, `removed ${Date.now() - goneAt} ms after the stream ended, not before the grace of ${graceMs} ms`);
  t.is(await metric(collector, 'auditmesh_collector_directory_entries'), 0);
});

test('another pod (a newer incarnation, a reused IP) claiming the same address replaces the entry at once, not after the old one’s grace', async (t) => {
  const issuer = await createTokenIssuer();
  const collector = await startIdentityCollector(t, issuer, { directoryGraceMs: 60_000 });
  const oldPod = await certifiedWorkload(t, collector, issuer, ORDERS_POD);
  const old = await claimingStream(t, collector, ORDERS_ID, '127.0.0.1', { token: await sidecarToken(issuer, ORDERS_POD), workload: oldPod });
  const watch = openWatch(t, collector.grpcAddress, oldPod.credentials());
  t.is((await watch.next()).added.length, 1);
  old.close();
  // Another pod (its own service account and uid) now holds the address.
  const payments = await certifiedWorkload(t, collector, issuer, PAYMENTS_POD);
  await claimingStream(t, collector, 'shop/payments-0', '127.0.0.1', { token: await sidecarToken(issuer, PAYMENTS_POD), workload: payments, service: 'payments' });
  t.deepEqual((await watch.nextChange()).added, [entry('127.0.0.1', 'spiffe://cluster.local/ns/shop/sa/payments', 'shop/payments-0', 'payments')]);
  t.deepEqual(collector.directory.entries(), [entry('127.0.0.1', 'spiffe://cluster.local/ns/shop/sa/payments', 'shop/payments-0', 'payments')]);
});

test('with the mesh CA a watcher without a workload certificate is refused; without it, a watcher without the token is', async (t) => {
  const issuer = await createTokenIssuer();
  const withCa = await startIdentityCollector(t, issuer);
  // TLS trusting the CA, but no client certificate (a token alone does not do).
  const anonymous = openWatch(t, withCa.grpcAddress, meshCredentials(withCa.ca!.certPem), await sidecarToken(issuer, ORDERS_POD));
  const refused = await anonymous.status;
  t.is(refused.code, grpc.status.UNAUTHENTICATED);
  t.regex(refused.details, /^certificate: no client certificate/);
  t.is(await metric(withCa, 'auditmesh_collector_directory_watch_refusals_total', { reason: 'certificate' }), 1);

  const plain = await startTestCollector(t);
  const noToken = await openWatch(t, plain.grpcAddress, grpc.credentials.createInsecure()).status;
  t.is(noToken.code, grpc.status.UNAUTHENTICATED);
  const wrongToken = await openWatch(t, plain.grpcAddress, grpc.credentials.createInsecure(), 'not-the-token').status;
  t.is(wrongToken.code, grpc.status.UNAUTHENTICATED);
  t.is(await metric(plain, 'auditmesh_collector_directory_watch_refusals_total', { reason: 'credential' }), 2);
  const allowed = openWatch(t, plain.grpcAddress, grpc.credentials.createInsecure(), plain.token);
  t.like(await allowed.next(), { snapshot: true, added: [] });
});

test('a watcher hears a keepalive every interval while nothing changes', async (t) => {
  const collector = await startTestCollector(t, { directoryKeepaliveMs: 200 });
  const watch = openWatch(t, collector.grpcAddress, grpc.credentials.createInsecure(), collector.token);
  const snapshot = await watch.next();
  const keepalive = await watch.next(10_000);
  t.like(keepalive, { snapshot: false, added: [], removed: [] });
  t.true(keepalive.unix_ms >= snapshot.unix_ms + 150, 'a fresh timestamp');
});

test('a claim is compared with the source address as grpc-js names it: IPv4-mapped IPv6 as IPv4, IPv6 in one canonical form', (t) => {
  t.is(sourceIp('10.1.2.3:50000'), '10.1.2.3');
  t.is(sourceIp('[::ffff:10.1.2.3]:50000'), '10.1.2.3', 'a dual-stack listener sees an IPv4 pod so');
  t.is(sourceIp('[2001:DB8:0:0::1]:443'), '2001:db8::1');
  t.is(normalIp('2001:db8::0:1'), '2001:db8::1');
  t.is(normalIp('[fd00::7]'), 'fd00::7');
  t.is(normalIp('10.1.2'), null);
  t.is(normalIp('pod.example'), null);
  t.is(sourceIp('unix:/tmp/sock'), null);
});
