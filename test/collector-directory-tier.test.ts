import test from 'ava';
import { certifiedWorkload, claimingStream, entry, openWatch } from './helpers/directory.js';
import { createTokenIssuer, ORDERS_POD, sidecarToken, startIdentityCollector } from './helpers/identity.js';
import { startNatsCluster } from './helpers/nats-cluster.js';
import { eventually } from './helpers/shipping.js';

// In the JetStream tier each replica lists the sidecars streaming to it; the replicas share their
// books over NATS, so a watcher of any replica sees the whole fleet's directory.

const ORDERS_ID = 'shop/orders-7d9f8b6c5d-x2x7q';
const ORDERS_SPIFFE = 'spiffe://cluster.local/ns/shop/sa/orders';

test('a sidecar listed by one replica is in the Watch of another, and leaves it after its grace, or once its replica is unheard', async (t) => {
  const nats = await startNatsCluster(t, 1);
  const jetstream = { urls: nats.urls.split(','), leaseMs: 3_000 };
  const issuer = await createTokenIssuer();
  const a = await startIdentityCollector(t, issuer, { jetstream, directoryGraceMs: 500 });
  const b = await startIdentityCollector(t, issuer, { jetstream, identity: { caDir: a.caDir, createCa: false } });
  const orders = await certifiedWorkload(t, a, issuer, ORDERS_POD);
  const stream = await claimingStream(t, a, ORDERS_ID, '127.0.0.1', { token: await sidecarToken(issuer, ORDERS_POD), workload: orders });
  t.is(b.directory.size, 0, 'replica b holds no stream of its own');
  await eventually('replica b serves the entry replica a listed', () => b.fleetDirectory.has('127.0.0.1'), 10_000);
  const watch = openWatch(t, b.grpcAddress, orders.credentials());
  t.deepEqual((await watch.next()).added, [entry('127.0.0.1', ORDERS_SPIFFE, ORDERS_ID)]);

  // The stream ends: replica a removes the entry after its grace, and replica b's watchers hear it.
  stream.close();
  t.deepEqual((await watch.nextChange(10_000)).removed, ['127.0.0.1']);

  // Listed by a replica that then goes away without removing it (its grace is long): b drops its book after 3 refreshes unheard.
  const c = await startIdentityCollector(t, issuer, { jetstream, identity: { caDir: a.caDir, createCa: false }, directoryGraceMs: 60_000 });
  await claimingStream(t, c, ORDERS_ID, '127.0.0.1', { token: await sidecarToken(issuer, ORDERS_POD), workload: orders });
  t.deepEqual((await watch.nextChange(10_000)).added, [entry('127.0.0.1', ORDERS_SPIFFE, ORDERS_ID)]);
  const goneAt = Date.now();
  await c.close();
  t.deepEqual((await watch.nextChange(15_000)).removed, ['127.0.0.1']);
  t.true(Date.now() - goneAt >= 4_000, 'dropped for being unheard, not removed by its replica');
});
